"""Pixel detail the feature classifier ignores, for the Frechet distance.

A classifier's features are trained to be invariant to what does not change the class: salt-noise speckles in a
digit's background barely move them. A person sees those speckles at once. So FD also measures the pixels'
residual off the training set's principal subspace (the components holding ``VARIANCE`` of its variance): real
images leave a small, structured residual there; speckles, and samples smoother than real data, do not match it.
The residual is taken in up to ``MAX_DIMS`` trailing principal directions (all of them for small images) and
scaled so that its total variance over the training split is ``fd_pixel_weight``^2 times the features', which
fixes its share of FD whatever the feature model's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Share of the training pixel variance the principal subspace keeps. Part of FD's definition: changing it makes
# scores incomparable.
VARIANCE = 0.95
MAX_DIMS = 64  # residual directions kept: bounds FD's covariance size (and its finite-sample bias) on large images
MAX_FIT_ROWS = 10_000  # training rows (a seeded subset) the PCA is fitted on


@dataclass
class PixelResidual:
    mean: np.ndarray  # (P,) training pixel mean, [0, 1] units
    basis: np.ndarray  # (R, P) orthonormal residual directions
    scale: float  # multiplies the residual coordinates

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(N, P) uint8 or float [0, 1] pixels -> (N, R) scaled residual coordinates."""
        x = pixels / 255.0 if pixels.dtype == np.uint8 else np.asarray(pixels, np.float64)
        return (x - self.mean) @ self.basis.T * self.scale


def fit_pixel_residual(train_pixels: np.ndarray, train_features: np.ndarray, weight: float,
                       seed: int = 0) -> PixelResidual | None:
    """The residual map fitted on the training split; None when the weight is 0 or nothing is left over."""
    if weight <= 0:
        return None
    rows = np.random.default_rng(seed).permutation(len(train_pixels))[:MAX_FIT_ROWS]
    x = train_pixels[np.sort(rows)]
    x = x / 255.0 if x.dtype == np.uint8 else np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    share = np.cumsum(s**2) / max(float((s**2).sum()), 1e-12)
    kept = int(np.searchsorted(share, VARIANCE)) + 1
    basis = vt[kept : kept + MAX_DIMS]
    if not len(basis):
        return None
    resid_var = float((((x - mean) @ basis.T) ** 2).mean(axis=0).sum())
    feat_var = float(np.asarray(train_features, np.float64).var(axis=0).sum())
    return PixelResidual(mean, basis, weight * np.sqrt(feat_var / max(resid_var, 1e-12)))
