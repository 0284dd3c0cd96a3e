"""Evaluation: the evaluator (``evaluate.py``), its baselines (``baselines.py``) and the metrics it runs
(``metrics/``), all measured in the feature space of a network trained on the dataset itself."""
