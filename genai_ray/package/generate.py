"""``generate``: images from a model package to a PNG grid, a .npy array, or a synthetic dataset."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from genai_ray import storage
from genai_ray.data.prepare import prepare
from genai_ray.data.sources import array_source
from genai_ray.errors import UserError
from genai_ray.images import grid_png
from genai_ray.names import safe_name
from genai_ray.package.format import GeneratorPackage, check_truncation, load_package, resolve_model_uri


def write_npy(images: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, images.astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def to_dataset(pkg: GeneratorPackage, images: np.ndarray, labels: np.ndarray | None, out_uri: str, seed: int):
    """A synthetic dataset marked with the model's provenance (for data augmentation)."""
    x = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    name = safe_name(Path(out_uri.rstrip("/")).name, f"{pkg.meta.name}-synthetic")
    desc = {"kind": "generated", "model": f"{pkg.meta.name}/{pkg.meta.version}", "seed": seed}
    source = array_source("generated", desc, x, labels, None, pkg.meta.class_names if labels is not None else None)
    provenance = {"model_uri": pkg.uri, "model": pkg.meta.name, "version": pkg.meta.version,
                  "generator_sha256": pkg.meta.generator_sha256, "dataset_sha256": pkg.meta.dataset_sha256,
                  "seed": seed, "n": len(x)}
    return prepare(source, out_uri, name=name, holdout=0.0, seed=seed, progress=False, provenance=provenance)


def generate(model: str, n: int, out: str, seed: int = 0, label: str | int | None = None,
             store: str | None = None, truncation_psi: float = 1.0) -> str:
    """Write ``n`` images from ``model`` (URI, NAME, NAME/vNNNN or champion) to ``out``; returns a summary line.

    ``out`` ending in .png gets a grid, .npy gets float32 [0, 1] (N, H, W, C), anything else is a dataset URI.
    ``truncation_psi`` < 1 pulls the latents toward their mean: cleaner, less varied images.
    """
    if not 1 <= n <= 100_000:
        raise UserError(f"--n {n}: must be between 1 and 100000")
    check_truncation(truncation_psi)
    pkg = load_package(resolve_model_uri(model, store))
    images, seeds, labels = pkg.sample(n, seed=seed, label=label, truncation_psi=truncation_psi)
    where = f"{pkg.meta.name}/{pkg.meta.version}"
    if out.endswith(".png"):
        text = {"model": where, "seed": str(seed), "n": str(n), "truncation_psi": f"{truncation_psi:g}"}
        storage.write_bytes(out, grid_png(images, text))
        return f"wrote a grid of {n} images from {where} to {out}"
    if out.endswith(".npy"):
        storage.write_bytes(out, write_npy(images))
        return f"wrote {images.shape} float32 images from {where} to {out}"
    if Path(out).suffix and "://" not in out:
        raise UserError(f"--out {out}: use a .png or .npy file, or a dataset folder/URI without a suffix")
    manifest = to_dataset(pkg, images, labels, out, seed)
    return f"wrote a synthetic dataset of {manifest.count} images from {where} to {out}"
