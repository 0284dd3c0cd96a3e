"""Generator metrics, measured in the feature space of a network trained on the dataset itself.

Importing the package registers every metric (see registry.py); ``genai_ray.evaluation.evaluate`` runs them.
"""

# Imported to register their metrics.
from genai_ray.evaluation.metrics import classifier_score, coverage, frechet, memorisation, prdc  # noqa: F401
from genai_ray.evaluation.metrics.registry import METRICS, EvalInputs, compute, register_metric

__all__ = ["METRICS", "EvalInputs", "compute", "register_metric"]
