"""Metrics by name. Each metric is a pure function of ``EvalInputs`` returning ``{name: value}``.

The suite prefixes the names (``eval/fd``), so the same keys appear in ``ray.train.report``, Tune's
``metric=``, ``model.json`` and the CLI table. A metric that does not apply (class coverage on an
unlabelled dataset) returns ``{}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genai_ray.config import EvalConfig


@dataclass
class EvalInputs:
    """Everything a metric may look at. Features are the dataset's own feature model's (see features.py)."""

    fake: np.ndarray  # (N, D) sample features
    real: np.ndarray  # (M, D) evaluation-split features
    real_radii_sq: np.ndarray  # (M,) squared k-NN radii within ``real``
    manifold: np.ndarray  # (T, D) training-split features: the real manifold that judges realism
    manifold_radii_sq: np.ndarray  # (T,) squared k-NN radii within ``manifold``
    fake_probs: np.ndarray | None  # (N, K) classifier softmax of the samples; None when unlabelled
    cond_labels: np.ndarray | None  # (N,) labels the samples were conditioned on; None when unconditional
    fake_pixels: np.ndarray  # (N, H*W*C) float32 in [0, 1]
    train_pixels: np.ndarray  # (T, H*W*C) uint8: the training split, what a model could have memorised
    holdout_pixels: np.ndarray  # (H, H*W*C) uint8: unseen real images, calibrate memorisation
    class_names: list[str] | None
    train_class_probs: np.ndarray | None  # (K,) class proportions of the training split
    cfg: EvalConfig
    fake_residual: np.ndarray | None = None  # (N, R) samples' scaled pixel residual (metrics/pixels.py); None: off
    real_residual: np.ndarray | None = None  # (M, R) the evaluation split's


Metric = Callable[[EvalInputs], dict[str, float]]
METRICS: dict[str, Metric] = {}


def register_metric(name: str) -> Callable[[Metric], Metric]:
    """``@register_metric("fd")`` adds a metric to the suite under ``name``."""

    def wrap(fn: Metric) -> Metric:
        assert name not in METRICS, f"metric {name!r} registered twice"
        METRICS[name] = fn
        return fn

    return wrap


def compute(names: list[str], inputs: EvalInputs, prefix: str = "eval/") -> dict[str, float]:
    """Run the named metrics and prefix their keys."""
    out: dict[str, float] = {}
    for name in names:
        for key, value in METRICS[name](inputs).items():
            out[prefix + key] = float(value)
    return out
