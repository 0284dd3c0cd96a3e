"""Memorisation: how many samples are near-copies of a training image.

Distances are Euclidean in pixel space (a copy is a copy of pixels, not of a class). A sample counts as
memorised when its nearest training image is closer than ``factor`` times the ``quantile``-th percentile of
the same distance for real held-out images, which the model never saw. Calibrated that way, held-out
images score about 0 and exact copies score 1, on any dataset, without a hand-set pixel threshold. The
ratio of medians tells the same story continuously: 1 is as novel as unseen real data, near 0 is copying.
"""

from __future__ import annotations

import numpy as np

from genai_ray.evaluation.metrics.prdc import BLOCK, pairwise_sq
from genai_ray.evaluation.metrics.registry import EvalInputs, register_metric

# The calibration (part of the metric's definition: changing it makes scores incomparable): memorised means
# nearer a training image than FACTOR x the QUANTILE-th quantile of held-out images' nearest-training distances.
QUANTILE, FACTOR = 0.05, 0.5
SUPPORT_BLOCK = 4096  # training rows per block: uint8 stays uint8 until its block is compared


def unit_pixels(rows: np.ndarray) -> np.ndarray:
    """uint8 or float rows -> float64 in [0, 1]."""
    return rows / 255.0 if rows.dtype == np.uint8 else np.asarray(rows, np.float64)


def nn_distance(queries: np.ndarray, support: np.ndarray) -> np.ndarray:
    """(N,) Euclidean distance from each query to its nearest support row, in [0, 1] pixel units.

    Blocked over both sets, so a large uint8 training split is never copied to floats whole."""
    best = np.full(len(queries), np.inf)
    for q in range(0, len(queries), BLOCK):
        block = unit_pixels(queries[q : q + BLOCK])
        for s in range(0, len(support), SUPPORT_BLOCK):
            d = pairwise_sq(block, unit_pixels(support[s : s + SUPPORT_BLOCK])).min(axis=1)
            best[q : q + BLOCK] = np.minimum(best[q : q + BLOCK], d)
    return np.sqrt(best)


def memorisation(fake: np.ndarray, train: np.ndarray, holdout: np.ndarray, quantile: float = QUANTILE,
                 factor: float = FACTOR) -> dict[str, float]:
    d_fake = nn_distance(fake, train)
    d_real = nn_distance(holdout, train)
    threshold = factor * np.quantile(d_real, quantile)
    return {
        "memorisation": float((d_fake < threshold).mean()),
        "nn_train_ratio": float(np.median(d_fake) / max(np.median(d_real), 1e-12)),
    }


@register_metric("memorisation")
def memorisation_metric(inputs: EvalInputs) -> dict[str, float]:
    return memorisation(inputs.fake_pixels, inputs.train_pixels, inputs.holdout_pixels)
