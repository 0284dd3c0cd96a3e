"""Class coverage and balance of the samples as the dataset's classifier labels them, and, for
conditional models, whether each sample shows the class it was asked for.

A model that collapses onto a few classes keeps a fine per-image quality but loses coverage; one that
ignores its label input has a low conditional accuracy.
"""

from __future__ import annotations

import numpy as np

from genai_ray.evaluation.metrics.registry import EvalInputs, register_metric

# A class is covered when it gets at least this share of its training share of the samples. Part of the metric's
# definition: changing it makes coverage scores incomparable.
COVERAGE_MIN_SHARE = 0.5


def class_shares(probs: np.ndarray, k: int) -> np.ndarray:
    """(K,) share of samples the classifier assigns to each class."""
    return np.bincount(np.argmax(probs, axis=1), minlength=k) / max(len(probs), 1)


@register_metric("class_coverage")
def class_coverage_metric(inputs: EvalInputs) -> dict[str, float]:
    """coverage: share of classes that get at least half their training share of the samples.
    balance: 1 - total variation distance between sample and training class proportions (1 = same)."""
    if inputs.fake_probs is None or inputs.train_class_probs is None:
        return {}
    expected = inputs.train_class_probs
    shares = class_shares(inputs.fake_probs, len(expected))
    out = {
        "class_coverage": float((shares >= COVERAGE_MIN_SHARE * expected).mean()),
        "class_balance": float(1.0 - 0.5 * np.abs(shares - expected).sum()),
    }
    for name, share in zip(inputs.class_names or [], shares, strict=True):
        out[f"class_share/{name}"] = float(share)
    return out


@register_metric("conditional_accuracy")
def conditional_accuracy_metric(inputs: EvalInputs) -> dict[str, float]:
    """Share of conditional samples the classifier assigns to the class they were conditioned on."""
    if inputs.fake_probs is None or inputs.cond_labels is None:
        return {}
    pred = np.argmax(inputs.fake_probs, axis=1)
    hit = pred == inputs.cond_labels
    out = {"cond_acc": float(hit.mean())}
    for c, name in enumerate(inputs.class_names or []):
        mask = inputs.cond_labels == c
        if mask.any():
            out[f"cond_acc/{name}"] = float(hit[mask].mean())
    return out
