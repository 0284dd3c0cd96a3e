"""Frechet distance between Gaussians fitted to two feature sets (Heusel et al., 2017, "GANs trained by
a two time-scale update rule converge to a local Nash equilibrium"), in the dataset's own feature space.

FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). We use tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)),
whose argument is symmetric positive semi-definite, so ``eigh`` gives it without the complex round-off
that a general ``sqrtm`` of a singular product produces (ReLU features often have dead units).
"""

from __future__ import annotations

import numpy as np

from genai_ray.evaluation.metrics.registry import EvalInputs, register_metric


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """FD between feature sets x (N, D) and y (M, D). 0 for identical distributions, >= 0 always."""
    assert len(x) > 1 and len(y) > 1, "the Frechet distance needs at least two samples per set"
    mu1, s1 = gaussian_stats(x)
    mu2, s2 = gaussian_stats(y)
    r1 = _psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0.0, None)).sum()
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * cross)
    return max(fd, 0.0)


@register_metric("fd")
def fd_metric(inputs: EvalInputs) -> dict[str, float]:
    """FD over the features joined with the pixel residual (metrics/pixels.py), and each part alone."""
    features = frechet_distance(inputs.fake, inputs.real)
    if inputs.fake_residual is None or inputs.real_residual is None:
        return {"fd": features}
    joined = frechet_distance(np.concatenate([inputs.fake, inputs.fake_residual], axis=1),
                              np.concatenate([inputs.real, inputs.real_residual], axis=1))
    return {"fd": joined, "fd_features": features,
            "fd_pixels": frechet_distance(inputs.fake_residual, inputs.real_residual)}
