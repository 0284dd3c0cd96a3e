"""The model a replica serves, swapped whole, and the pure batched generate over it.

A reload loads and warms the new package completely before one attribute assignment swaps it in, so a
request sees either the old model or the new one, never a half-loaded one. A batch takes one snapshot of
the package, so every image in it comes from the same model, and each result names that model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from genai_ray.errors import UserError
from genai_ray.package import GeneratorPackage, ModelMeta, load_package, resolve_model_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One request's share of a batch: its per-image seeds and the label the user asked for."""

    seeds: list[int]
    label: int | str | None


@dataclass(frozen=True)
class Result:
    images: np.ndarray  # (n, H, W, C) float32 in [0, 1]
    seeds: list[int]
    labels: list[int] | None  # one per image for conditional models
    meta: ModelMeta
    uri: str
    batch_size: int  # requests that shared the generator call


def run_batch(package: GeneratorPackage, jobs: list[Job]) -> list[Result | UserError]:
    """One generator call over every valid job's images, split back per job. Pure: no I/O.

    A job with a bad label gets its ``UserError`` back without failing the others. Pixels equal an
    unbatched call because ``GeneratorPackage.generate`` runs fixed-size padded chunks and each image's
    latent depends only on its own seed.
    """
    resolved: list[np.ndarray | None | UserError] = []
    for job in jobs:
        try:
            resolved.append(package.labels_for(job.seeds, package.resolve_label(job.label)))
        except UserError as err:
            resolved.append(err)
    good = [i for i, r in enumerate(resolved) if not isinstance(r, UserError)]
    seeds = [s for i in good for s in jobs[i].seeds]
    labels = np.concatenate([resolved[i] for i in good]) if package.meta.conditional and good else None
    images = package.generate(seeds, labels) if seeds else None
    out: list[Result | UserError] = []
    start = 0
    for job, lab in zip(jobs, resolved, strict=True):
        if isinstance(lab, UserError):
            out.append(lab)
            continue
        n = len(job.seeds)
        assert images is not None, "a valid job always has seeds"
        out.append(Result(images[start : start + n], job.seeds, None if lab is None else lab.tolist(),
                          package.meta, package.uri, len(good)))
        start += n
    return out


class ModelSlot:
    """The replica's current package plus the outcome of the latest load, for health checks."""

    def __init__(self) -> None:
        self.package: GeneratorPackage | None = None
        self.requested: str | None = None  # the latest model reference asked for
        self.error: str | None = None  # why the latest load failed, naming the URI

    def load(self, ref: str) -> None:
        """Resolve, verify, load and warm ``ref``, then swap it in. A failure keeps the old model."""
        self.requested = ref
        try:
            uri = resolve_model_uri(ref)
            package = load_package(uri)
            run_batch(package, [Job([0], None)])  # warm up before taking traffic
        except Exception as err:  # noqa: BLE001 - any failure must surface in health checks, not kill serving
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            self.error = f"model {ref} failed to load: {first}"
            log.error(self.error)
            return
        self.package = package  # the swap: one reference assignment
        self.error = None
        log.info("serving %s/%s from %s", package.meta.name, package.meta.version, uri)

    def check_health(self) -> None:
        """Raise when no model can serve, saying which URI failed and why."""
        if self.package is None:
            raise RuntimeError(self.error or f"model {self.requested} is not loaded yet")
