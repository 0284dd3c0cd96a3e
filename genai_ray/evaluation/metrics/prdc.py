"""k-NN precision and recall (Kynkaanniemi et al., 2019, "Improved precision and recall metric for
assessing generative models"), and density and coverage (Naeem et al., 2020, "Reliable fidelity and
diversity metrics for generative models").

A set's manifold is the union of balls around its points, each ball reaching the point's k-th nearest
neighbour in the same set.
- Precision: the share of samples inside the REAL manifold (are samples realistic?).
- Recall: the share of held-out images inside the SAMPLE manifold (is the data's variety covered?).
- Density: the mean number of real balls a sample falls in, over k (about 1 for data-like samples, above 1
  when they crowd dense regions); coverage: the share of held-out balls holding at least one sample. Both
  use real balls only, so noisy samples with huge balls cannot inflate them.
Precision and density judge realism against the TRAINING images: a few hundred held-out images in a 64-d
feature space make balls so wide that untrained generators scored 0.65 precision on digits; the 1,618
training images bring that to 0.07, while unseen real digits keep 0.90. Recall and coverage ask about unseen
data, so they use the evaluation split. The values depend on the sample count: compare at the same ``n``.
"""

from __future__ import annotations

import numpy as np

from genai_ray.evaluation.metrics.registry import EvalInputs, register_metric

# Training images (a seeded subset) whose k-NN balls judge realism: bounds the cost on large datasets. Part of
# precision's and density's definition: changing it makes scores incomparable.
MAX_MANIFOLD = 10_000
BLOCK = 512  # rows per distance block, bounds memory to BLOCK x M floats


def pairwise_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) squared Euclidean distances."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def kth_radius_sq(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point in the same set."""
    assert len(x) > k, f"need more than k={k} points, got {len(x)}"
    out = np.empty(len(x))
    for start in range(0, len(x), BLOCK):
        d = pairwise_sq(x[start : start + BLOCK], x)
        out[start : start + BLOCK] = np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself
    return out


def ball_hits(queries: np.ndarray, centres: np.ndarray, radii_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per query: inside any ball?, per centre: how many queries fall in its ball)."""
    inside = np.zeros(len(queries), bool)
    counts = np.zeros(len(centres), np.int64)
    for start in range(0, len(queries), BLOCK):
        hit = pairwise_sq(queries[start : start + BLOCK], centres) <= radii_sq[None, :]
        inside[start : start + BLOCK] = hit.any(axis=1)
        counts += hit.sum(axis=0)
    return inside, counts


def precision(fake: np.ndarray, real: np.ndarray, real_radii_sq: np.ndarray) -> float:
    return float(ball_hits(fake, real, real_radii_sq)[0].mean())


def recall(fake: np.ndarray, real: np.ndarray, k: int) -> float:
    return float(ball_hits(real, fake, kth_radius_sq(fake, k))[0].mean())


def density(fake: np.ndarray, real: np.ndarray, real_radii_sq: np.ndarray, k: int) -> float:
    return float(ball_hits(fake, real, real_radii_sq)[1].sum() / (k * len(fake)))


def coverage(fake: np.ndarray, real: np.ndarray, real_radii_sq: np.ndarray) -> float:
    return float((ball_hits(fake, real, real_radii_sq)[1] > 0).mean())


@register_metric("precision_recall")
def precision_recall_metric(inputs: EvalInputs) -> dict[str, float]:
    k = inputs.cfg.knn_k
    return {"precision": precision(inputs.fake, inputs.manifold, inputs.manifold_radii_sq),
            "recall": recall(inputs.fake, inputs.real, k)}


@register_metric("density_coverage")
def density_coverage_metric(inputs: EvalInputs) -> dict[str, float]:
    return {"density": density(inputs.fake, inputs.manifold, inputs.manifold_radii_sq, inputs.cfg.knn_k),
            "coverage": coverage(inputs.fake, inputs.real, inputs.real_radii_sq)}
