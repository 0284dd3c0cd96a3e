"""Generator metrics, measured in the feature space of a network trained on the dataset itself.

Importing the package registers every metric (see registry.py); ``genai_ray.evaluate`` runs them.
"""

from genai_ray.metrics import classifier_score, coverage, frechet, memorisation, prdc  # noqa: F401 - registers
from genai_ray.metrics.registry import METRICS, EvalInputs, compute, register_metric

__all__ = ["METRICS", "EvalInputs", "compute", "register_metric"]
