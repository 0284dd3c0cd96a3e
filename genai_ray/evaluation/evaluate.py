"""Evaluate any sampler against a dataset's held-out split, with every registered metric.

A sampler is a ``generate(seeds, labels) -> float32 [0, 1] NHWC`` function (a model package's, a baseline's,
or the training loop's), plus the class proportions to draw labels from when it is conditional. Sample i
uses seed ``seed + i``, so a fixed seed gives identical metrics. ``cheap_metrics`` is the few-hundred-sample
version the training loop calls on rank 0 every ``train.eval_every`` epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genai_ray.config import EvalConfig
from genai_ray.data.manifest import Split
from genai_ray.data.reader import Dataset, open_dataset
from genai_ray.errors import UserError
from genai_ray.evaluation.metrics import METRICS, EvalInputs, compute
from genai_ray.evaluation.metrics.features import FeatureModel, feature_model
from genai_ray.evaluation.metrics.pixels import PixelResidual, fit_pixel_residual
from genai_ray.evaluation.metrics.prdc import MAX_MANIFOLD, kth_radius_sq
from genai_ray.package.format import (
    GeneratorPackage,
    ModelMeta,
    check_truncation,
    latents,
    load_package,
    per_image_seeds,
    read_meta,
    sample_labels,
    write_meta,
)

Generate = Callable[[list[int], np.ndarray | None], np.ndarray]
CHEAP_METRICS = ["fd", "precision_recall"]


@dataclass
class Sampler:
    """What the evaluator draws from. ``class_probs`` set means conditional: labels drawn in them."""

    generate: Generate
    class_probs: list[float] | None = None

    def draw(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        seeds = per_image_seeds(seed, n)
        labels = sample_labels(seeds, self.class_probs) if self.class_probs is not None else None
        return np.asarray(self.generate(seeds, labels), np.float32), labels


@dataclass
class Reference:
    """The real side of every comparison, computed once per dataset, split and feature model."""

    dataset: Dataset
    features: FeatureModel
    real: np.ndarray
    real_radii_sq: np.ndarray
    manifold: np.ndarray
    manifold_radii_sq: np.ndarray
    train_pixels: np.ndarray
    holdout_pixels: np.ndarray
    train_class_probs: np.ndarray | None
    residual: PixelResidual | None = None  # FD's pixel-detail map (None: eval.fd_pixel_weight = 0)
    real_residual: np.ndarray | None = None


_REFERENCES: dict[tuple, Reference] = {}


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 or float images -> float32 in [0, 1]. NaN pixels (a diverged generator) become 0, so such a model
    scores badly instead of producing NaN metrics that Tune cannot compare."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return np.nan_to_num(np.clip(np.asarray(images, np.float32), 0.0, 1.0), nan=0.0)


def as_dataset(dataset: str | Dataset) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else open_dataset(dataset)


def reference(dataset: str | Dataset, split: Split = "holdout", cfg: EvalConfig | None = None) -> Reference:
    """Features of the reference split and the pixels memorisation needs; cached in-process."""
    ds = as_dataset(dataset)
    cfg = cfg or EvalConfig()
    key = (ds.uri, ds.manifest.sha256(), split, cfg.model_dump_json())
    if key in _REFERENCES:
        return _REFERENCES[key]
    if min(ds.manifest.holdout_count, ds.manifest.train_count) < cfg.knn_k + 2:
        raise UserError(f"{ds.uri} holds {ds.manifest.train_count} training and {ds.manifest.holdout_count} held-out "
                        f"images; evaluation needs at least {cfg.knn_k + 2} of each: re-run 'genai-ray data "
                        "prepare' with more images or a larger --holdout")
    fm = feature_model(ds, cfg)
    x_train, y_train = ds.read_numpy("train")
    x_hold, _ = ds.read_numpy("holdout")
    train_feats = fm(x_train)[0]
    real = fm(x_hold)[0] if split == "holdout" else train_feats
    subset = np.random.default_rng(cfg.seed).permutation(len(train_feats))[:MAX_MANIFOLD]
    manifold = train_feats[np.sort(subset)]
    class_probs = None
    if ds.manifest.labelled:
        class_probs = np.bincount(y_train, minlength=ds.manifest.num_classes) / max(len(y_train), 1)
    train_pixels = x_train.reshape(len(x_train), -1)
    real_pixels = x_hold.reshape(len(x_hold), -1) if split == "holdout" else train_pixels
    residual = fit_pixel_residual(train_pixels, train_feats, cfg.fd_pixel_weight, cfg.seed)
    ref = Reference(ds, fm, real, kth_radius_sq(real, cfg.knn_k), manifold,
                    kth_radius_sq(manifold, cfg.knn_k), train_pixels,
                    x_hold.reshape(len(x_hold), -1), class_probs, residual,
                    residual(real_pixels) if residual is not None else None)
    _REFERENCES[key] = ref
    return ref


def score(images: np.ndarray, ref: Reference, cfg: EvalConfig, cond_labels: np.ndarray | None = None,
          metrics: list[str] | None = None, prefix: str = "eval/") -> dict[str, float]:
    """Metrics of a set of sample images against a reference."""
    images = to_float(images)
    shape = tuple(ref.dataset.manifest.shape)
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise UserError(f"samples have shape {tuple(images.shape[1:])}, dataset {ref.dataset.uri} has {shape}; "
                        "evaluate a model against the dataset it was trained for")
    if len(images) <= cfg.knn_k + 1:
        raise UserError(f"evaluation needs more than {cfg.knn_k + 1} samples, got {len(images)}; raise --n")
    fake, fake_probs = ref.features(images)
    pixels = images.reshape(len(images), -1)
    inputs = EvalInputs(
        fake=fake, real=ref.real, real_radii_sq=ref.real_radii_sq, manifold=ref.manifold,
        manifold_radii_sq=ref.manifold_radii_sq, fake_probs=fake_probs, cond_labels=cond_labels,
        fake_pixels=pixels, train_pixels=ref.train_pixels,
        holdout_pixels=ref.holdout_pixels, class_names=ref.dataset.manifest.class_names,
        train_class_probs=ref.train_class_probs, cfg=cfg,
        fake_residual=ref.residual(pixels) if ref.residual is not None else None, real_residual=ref.real_residual,
    )
    return compute(metrics or list(METRICS), inputs, prefix)


def evaluate(sampler: Sampler | np.ndarray, dataset: str | Dataset, *, split: Split = "holdout",
             n: int | None = None, seed: int = 0, cfg: EvalConfig | None = None,
             metrics: list[str] | None = None, prefix: str = "eval/") -> dict[str, float]:
    """Every metric (or the named ones) of a sampler, or of a fixed image array, against ``split``.

    Also records the feature model's held-out quality, so a table says how far its features can be trusted.
    """
    cfg = cfg or EvalConfig()
    ref = reference(dataset, split, cfg)
    n = n or cfg.n_samples
    if isinstance(sampler, Sampler):
        images, cond = sampler.draw(n, seed)
    else:
        images, cond = sampler, None
    out = score(images, ref, cfg, cond, metrics, prefix)
    info = ref.features.info
    for key in ("holdout_accuracy", "holdout_mse"):
        if info.get(key) is not None:
            out[f"{prefix}features_{key}"] = float(info[key])
    out[f"{prefix}n_samples"] = float(len(images))
    out[f"{prefix}seed"] = float(seed)
    return out


def split_prefix(split: Split) -> str:
    """Metric key prefix: held-out results are the headline ``eval/``; train-split ones stay apart."""
    return "eval/" if split == "holdout" else "eval_train/"


def package_sampler(pkg: GeneratorPackage, truncation_psi: float = 1.0) -> Sampler:
    """A package as a sampler: conditional ones draw labels in their training class proportions; latents are
    pulled toward the mean by ``truncation_psi`` (1 = none)."""
    meta = pkg.meta
    probs = (meta.class_probs or [1.0] * len(meta.class_names or [])) if meta.conditional else None
    psi = check_truncation(truncation_psi)
    return Sampler(lambda seeds, labels: pkg.generate(seeds, labels, truncation_psi=psi), probs)


def check_package_fits(meta: ModelMeta, ds: Dataset) -> None:
    """Refuse a model whose images or classes don't match the dataset (UserError names both)."""
    who = f"model {meta.name}/{meta.version}"
    if tuple(ds.manifest.shape) != tuple(meta.image_shape):
        raise UserError(f"{who} makes {tuple(meta.image_shape)} images but {ds.uri} holds "
                        f"{tuple(ds.manifest.shape)}; pass the --data it was trained on")
    if meta.conditional and len(meta.class_names or []) != ds.manifest.num_classes:
        raise UserError(f"{who} knows {len(meta.class_names or [])} classes but {ds.uri} has "
                        f"{ds.manifest.num_classes}; pass the --data it was trained on")


def evaluate_package(package_uri: str, dataset: str | Dataset | None = None, cfg: EvalConfig | None = None, *,
                     split: Split = "holdout", n: int | None = None, seed: int = 0,
                     write: bool = True, truncation_psi: float = 1.0) -> dict[str, float]:
    """Evaluate a model package (on the dataset it was trained on unless ``dataset`` is given) and merge the
    metrics into its model.json (``eval/...``, or ``eval_train/...`` for ``split="train"``), with the
    ``truncation_psi`` they were measured at."""
    check_truncation(truncation_psi)
    pkg = load_package(package_uri)
    ds = as_dataset(dataset if dataset is not None else pkg.meta.dataset_uri)
    check_package_fits(pkg.meta, ds)
    prefix = split_prefix(split)
    result = evaluate(package_sampler(pkg, truncation_psi), ds, split=split, n=n, seed=seed, cfg=cfg, prefix=prefix)
    result[f"{prefix}truncation_psi"] = float(truncation_psi)
    if write:
        fresh = read_meta(package_uri)  # re-read: keep anything written since we loaded it
        fresh.metrics = {**fresh.metrics, **result}
        write_meta(package_uri, fresh)
    return result


def keras_generate(model: Any, latent_dim: int, conditional: bool) -> Generate:
    """An in-memory Keras generator (z [+ int labels] -> tanh) as a ``Generate``, seeded like a package:
    what the training loop passes to ``cheap_metrics`` before there is a package to load."""

    def generate(seeds: list[int], labels: np.ndarray | None) -> np.ndarray:
        z = latents(seeds, latent_dim)
        if conditional:
            assert labels is not None, "a conditional generator needs labels"
            x = model([z, np.asarray(labels, np.int32)], training=False)
        else:
            x = model(z, training=False)
        return np.clip((np.asarray(x, np.float32) + 1.0) * 0.5, 0.0, 1.0)  # tanh -> [0, 1]

    return generate


def prepare_features(dataset: str | Dataset, cfg: EvalConfig | None = None) -> dict[str, Any]:
    """Train (or load) the dataset's feature model now, for example on the driver before training starts, so
    that in-training evaluations on rank 0 only load it. Returns its info (held-out accuracy, settings)."""
    return feature_model(as_dataset(dataset), cfg or EvalConfig()).info


def cheap_metrics(generate: Generate, dataset_uri: str | Dataset, *, n: int = 500, seed: int = 0,
                  class_probs: list[float] | None = None, cfg: EvalConfig | None = None) -> dict[str, float]:
    """FD, precision and recall of ``n`` samples against the held-out split: ``{"eval/fd", "eval/precision",
    "eval/recall"}``. For the training loop (rank 0, every ``train.eval_every`` epochs); the feature model and
    the real features load once per process. ``class_probs`` makes it conditional (labels drawn in them).
    """
    cfg = cfg or EvalConfig()
    ref = reference(dataset_uri, "holdout", cfg)
    images, cond = Sampler(generate, class_probs).draw(n, seed)
    out = score(images, ref, cfg, cond, CHEAP_METRICS)
    return {k: out[k] for k in ("eval/fd", "eval/precision", "eval/recall")}  # FD's parts stay out of reports
