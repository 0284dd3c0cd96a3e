"""k-NN precision and recall (Kynkaanniemi et al., 2019, "Improved precision and recall metric for
assessing generative models").

Each set's manifold is the union of balls around its points, each ball reaching the point's k-th nearest
neighbour in the same set. Precision: the share of samples inside the real manifold (are samples
realistic?). Recall: the share of real images inside the sample manifold (is the data's variety covered?).
Each set keeps its full size (the reference split's and ``n`` samples), so the values depend on ``n``: compare
models only at the same ``n``. With many samples, the sample balls shrink, and noisy samples that stray off
the data manifold stop covering it: recall then rewards variety on the manifold, not noise.

Density and coverage (Naeem et al., 2020, "Reliable fidelity and diversity metrics for generative models")
use only the real balls, so an outlier among a few hundred held-out images cannot inflate them. Density: the
mean number of real balls a sample falls in, over k (about 1 for samples distributed like the data, above 1
when they crowd the dense regions). Coverage: the share of real balls that hold at least one sample.
"""

from __future__ import annotations

import numpy as np

from genai_ray.metrics.registry import EvalInputs, register_metric

BLOCK = 1024  # rows per distance block, bounds memory to BLOCK x M floats


def pairwise_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) squared Euclidean distances."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def kth_radius_sq(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point in the same set."""
    assert len(x) > k, f"need more than k={k} points, got {len(x)}"
    d = pairwise_sq(x, x)
    return np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself (distance 0)


def coverage_share(queries: np.ndarray, support: np.ndarray, radii_sq: np.ndarray) -> float:
    """Share of queries inside at least one ball (support[j], radius_j)."""
    inside = np.zeros(len(queries), bool)
    for start in range(0, len(queries), BLOCK):
        d = pairwise_sq(queries[start : start + BLOCK], support)
        inside[start : start + BLOCK] = (d <= radii_sq[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(fake: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of sample features against real features; see the module docstring."""
    assert min(len(fake), len(real)) > k, f"precision/recall with k={k} needs more than {k} samples per set"
    precision = coverage_share(fake, real, kth_radius_sq(real, k))
    recall = coverage_share(real, fake, kth_radius_sq(fake, k))
    return precision, recall


@register_metric("precision_recall")
def precision_recall_metric(inputs: EvalInputs) -> dict[str, float]:
    p, r = precision_recall(inputs.fake, inputs.real, inputs.cfg.knn_k)
    return {"precision": p, "recall": r}


def density_coverage(fake: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(density, coverage) of sample features against real features; see the module docstring."""
    assert len(real) > k, f"density/coverage with k={k} needs more than {k} real images"
    radii = kth_radius_sq(real, k)
    hits = np.zeros(len(real), np.int64)  # samples inside each real ball
    for start in range(0, len(fake), BLOCK):
        hits += (pairwise_sq(fake[start : start + BLOCK], real) <= radii[None, :]).sum(axis=0)
    return float(hits.sum() / (k * len(fake))), float((hits > 0).mean())


@register_metric("density_coverage")
def density_coverage_metric(inputs: EvalInputs) -> dict[str, float]:
    d, c = density_coverage(inputs.fake, inputs.real, inputs.cfg.knn_k)
    return {"density": d, "coverage": c}
