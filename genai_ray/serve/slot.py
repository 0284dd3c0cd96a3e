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
from genai_ray.package.format import GeneratorPackage, ModelMeta, load_package, resolve_model_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One request's share of a batch: its per-image seeds and the label the user asked for."""

    seeds: list[int]
    label: int | str | None
    truncation_psi: float = 1.0


@dataclass(frozen=True)
class Result:
    images: np.ndarray  # (n, H, W, C) float32 in [0, 1]
    seeds: list[int]
    labels: list[int] | None  # one per image for conditional models
    meta: ModelMeta
    uri: str
    batch_size: int  # requests that shared the generator call


def run_batch(package: GeneratorPackage, jobs: list[Job]) -> list[Result | UserError]:
    """One generator call per distinct ``truncation_psi`` over every valid job's images, split back per job.

    Pure: no I/O. A job whose inputs cannot be prepared (any error, not only a ``UserError``: a label that
    ``int()`` refuses, say) gets its own ``UserError`` back; its batch-mates are unaffected. Pixels equal an
    unbatched call because ``GeneratorPackage.generate`` runs fixed-size padded chunks and each image's latent
    depends only on its own seed.
    """
    resolved: list[np.ndarray | None | UserError] = []
    for job in jobs:
        try:
            resolved.append(package.labels_for(job.seeds, package.resolve_label(job.label)))
        except UserError as err:
            resolved.append(err)
        except Exception as err:  # noqa: BLE001 - one request's bad input must never fail its batch-mates
            first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            resolved.append(UserError(f"label {str(job.label)[:40]!r} cannot be used: {first}"))
    good = [i for i, r in enumerate(resolved) if not isinstance(r, UserError)]
    images: dict[int, np.ndarray] = {}
    for psi in sorted({jobs[i].truncation_psi for i in good}):
        group = [i for i in good if jobs[i].truncation_psi == psi]
        seeds = [s for i in group for s in jobs[i].seeds]
        labels = np.concatenate([resolved[i] for i in group]) if package.meta.conditional else None
        out_images = package.generate(seeds, labels, psi)
        start = 0
        for i in group:
            images[i] = out_images[start : start + len(jobs[i].seeds)]
            start += len(jobs[i].seeds)
    out: list[Result | UserError] = []
    for i, (job, lab) in enumerate(zip(jobs, resolved, strict=True)):
        if isinstance(lab, UserError):
            out.append(lab)
            continue
        out.append(Result(images[i], job.seeds, None if lab is None else lab.tolist(), package.meta, package.uri,
                          len(good)))
    return out


class ModelSlot:
    """The replica's current package plus the outcome of the latest load, for health checks."""

    def __init__(self) -> None:
        self.package: GeneratorPackage | None = None
        self.requested: str | None = None  # the latest model reference asked for
        # why the latest load failed, naming the URI; None while the first load has not been asked for
        self.error: str | None = None

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
