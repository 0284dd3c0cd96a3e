"""Memorisation: how many samples are near-copies of a training image.

Distances are Euclidean in pixel space (a copy is a copy of pixels, not of a class). A sample counts as
memorised when its nearest training image is closer than ``factor`` times the ``quantile``-th percentile of
the same distance for real held-out images, which the model never saw. Calibrated that way, held-out
images score about 0 and exact copies score 1, on any dataset, without a hand-set pixel threshold. The
ratio of medians tells the same story continuously: 1 is as novel as unseen real data, near 0 is copying.
"""

from __future__ import annotations

import numpy as np

from genai_ray.metrics.prdc import BLOCK, pairwise_sq
from genai_ray.metrics.registry import EvalInputs, register_metric


def nn_distance(queries: np.ndarray, support: np.ndarray) -> np.ndarray:
    """(N,) Euclidean distance from each query to its nearest support row."""
    out = np.empty(len(queries))
    for start in range(0, len(queries), BLOCK):
        out[start : start + BLOCK] = pairwise_sq(queries[start : start + BLOCK], support).min(axis=1)
    return np.sqrt(out)


def memorisation(fake: np.ndarray, train: np.ndarray, holdout: np.ndarray, quantile: float,
                 factor: float) -> dict[str, float]:
    d_fake = nn_distance(fake, train)
    d_real = nn_distance(holdout, train)
    threshold = factor * np.quantile(d_real, quantile)
    return {
        "memorisation": float((d_fake < threshold).mean()),
        "nn_train_ratio": float(np.median(d_fake) / max(np.median(d_real), 1e-12)),
    }


@register_metric("memorisation")
def memorisation_metric(inputs: EvalInputs) -> dict[str, float]:
    cfg = inputs.cfg
    return memorisation(inputs.fake_pixels, inputs.train_pixels, inputs.holdout_pixels,
                        cfg.memorisation_quantile, cfg.memorisation_factor)
