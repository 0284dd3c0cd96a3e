"""Non-GAN baselines, evaluated on the same protocol as any model.

- ``kde``: scikit-learn's KernelDensity on 15 PCA components with a cross-validated bandwidth, fitted to
  the training split, as in scikit-learn's digits example. A GAN worth serving should beat it.
- ``real``: the training images themselves against the held-out split: the floor no model can go under
  (its memorisation is 1 by construction: they are the training images).
"""

from __future__ import annotations

import numpy as np

from genai_ray.data.reader import Dataset
from genai_ray.evaluation.evaluate import Sampler, to_float

# scikit-learn is imported inside kde_sampler(): the CLI loads this module at start-up, and `genai-ray --help` and
# config errors stay fast.

KDE_COMPONENTS = 15
KDE_BANDWIDTHS = np.logspace(-2, 0, 20)  # pixels in [0, 1]; the example's 0.1..10 grid was for 0..16 pixels


def kde_sampler(ds: Dataset, seed: int = 0) -> Sampler:
    """PCA + Gaussian KDE on the training split; sample i is drawn with its own seed."""
    from sklearn.decomposition import PCA
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity

    x, _ = ds.read_numpy("train")
    shape = x.shape[1:]
    flat = to_float(x).reshape(len(x), -1)
    pca = PCA(n_components=min(KDE_COMPONENTS, *flat.shape), whiten=False, random_state=seed)
    codes = pca.fit_transform(flat)
    search = GridSearchCV(KernelDensity(), {"bandwidth": KDE_BANDWIDTHS}, cv=5)
    search.fit(codes)
    kde = search.best_estimator_

    def generate(seeds: list[int], labels: np.ndarray | None) -> np.ndarray:
        del labels  # unconditional
        z = np.concatenate([kde.sample(1, random_state=s) for s in seeds]) if seeds else codes[:0]
        return np.clip(pca.inverse_transform(z), 0.0, 1.0).reshape(len(seeds), *shape).astype(np.float32)

    return Sampler(generate)


def real_floor(ds: Dataset, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training images (all of them when there are fewer), in a seeded order, as float [0, 1]."""
    x, _ = ds.read_numpy("train")
    order = np.random.default_rng(seed).permutation(len(x))[:n]
    return to_float(x[order])
