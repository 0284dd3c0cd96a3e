"""Classifier score: the Inception Score (Salimans et al., 2016) with the dataset's own classifier.

exp(E_x KL(p(y|x) || p(y))). High when each sample is confidently one class and the classes are varied;
its maximum is the number of classes. Real images score close to it when the classifier is accurate.
"""

from __future__ import annotations

import numpy as np

from genai_ray.evaluation.metrics.registry import EvalInputs, register_metric

EPS = 1e-12


def classifier_score(probs: np.ndarray) -> float:
    p = np.asarray(probs, np.float64)
    marginal = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + EPS) - np.log(marginal + EPS))).sum(axis=1)
    return float(np.exp(kl.mean()))


@register_metric("classifier_score")
def classifier_score_metric(inputs: EvalInputs) -> dict[str, float]:
    if inputs.fake_probs is None:
        return {}
    return {"classifier_score": classifier_score(inputs.fake_probs)}
