"""Model packages: what export writes and what generate, evaluate, tune and serve read.

Layout (``<store>/models/<name>/<version>/``): ``generator.keras`` (loaded with ``safe_mode=True``, so
no arbitrary code runs), ``samples.png``, and ``model.json``, written last, which records the sha256 of
``generator.keras``. A package whose bytes don't match is refused.

Sampling contract: image i of a request with seed s uses its own seed s + i, so its latent (and label,
when sampled) never depends on what else is in the batch. The generator always runs on fixed-size padded
chunks, so batched and unbatched requests take the same kernels and give identical pixels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from genai_ray import __version__, storage
from genai_ray.errors import IntegrityError, UserError
from genai_ray.keras_bytes import keras_from_bytes, keras_to_bytes
from genai_ray.names import check_name
from genai_ray.store_lock import model_lock

# TensorFlow is imported inside the functions that run the generator: the CLI loads this module at start-up, and
# `genai-ray --help` and config errors stay fast.

FORMAT_VERSION = 1
GENERATOR_FILE = "generator.keras"
META_FILE = "model.json"
SAMPLES_FILE = "samples.png"
CHAMPION_FILE = "champion.json"
CHUNK = 64  # the generator always sees batches of exactly this many rows
VERSION_RE = re.compile(r"^v(\d{4,})$")


class ModelMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    name: str
    version: str
    image_shape: tuple[int, int, int]  # (H, W, C)
    latent_dim: int
    conditional: bool
    class_names: list[str] | None
    class_probs: list[float] | None  # training-set class proportions, for unlabelled requests
    dataset_uri: str
    dataset_sha256: str
    config: dict[str, Any]  # the resolved genai_ray.config.Config
    metrics: dict[str, float] = {}
    training: dict[str, Any] = {}  # epochs, images/s, run name...
    created_at: str
    genai_ray_version: str = __version__
    generator_sha256: str


def per_image_seeds(seed: int, n: int) -> list[int]:
    return [seed + i for i in range(n)]


def check_truncation(psi: float) -> float:
    """``truncation_psi`` must lie in [0, 1]: 1 samples the prior as trained, 0 gives each label's mean sample."""
    if not 0.0 <= psi <= 1.0:
        raise UserError(f"truncation_psi {psi:g} is outside [0, 1]; use 1 for no truncation, lower values (0.7) "
                        "for fidelity over diversity")
    return psi


def latents(seeds: list[int], latent_dim: int, truncation_psi: float = 1.0) -> np.ndarray:
    """(N, latent_dim) float32; row i depends only on seeds[i].

    ``truncation_psi`` pulls each latent toward the prior's mean (zero): 1 leaves it as drawn, 0 gives the mean
    latent. Lower values trade diversity for fidelity (the truncation trick of BigGAN and StyleGAN).
    """
    if not 0.0 <= truncation_psi <= 1.0:
        raise UserError(f"truncation_psi={truncation_psi}: must be within [0, 1] (1 = no truncation)")
    z = np.stack([np.random.default_rng(s).standard_normal(latent_dim, dtype=np.float32) for s in seeds])
    return z if truncation_psi == 1.0 else (z * np.float32(truncation_psi)).astype(np.float32)


def version_number(version: str) -> int:
    """The number of a ``vNNNN`` version name, for numeric ordering (``v10000`` after ``v9999``)."""
    match = VERSION_RE.match(version)
    assert match, f"{version!r} is not a version name"
    return int(match.group(1))


def sorted_versions(names: list[str]) -> list[str]:
    """The ``vNNNN`` names among ``names``, oldest first, ordered by number rather than as text."""
    return sorted((n for n in names if VERSION_RE.match(n)), key=version_number)


def sample_labels(seeds: list[int], class_probs: list[float]) -> np.ndarray:
    """Labels drawn in the training proportions; label i depends only on seeds[i]."""
    probs = np.asarray(class_probs, np.float64)
    probs = probs / probs.sum()
    # A separate stream from the latent's, so labels and latents are independent.
    return np.asarray([np.random.default_rng([s, 1]).choice(len(probs), p=probs) for s in seeds], np.int64)


@dataclass
class GeneratorPackage:
    """A loaded, verified model package."""

    uri: str
    meta: ModelMeta
    model: Any  # keras.Model
    _graph: Any = field(default=None, init=False, repr=False, compare=False)

    def _forward(self, inputs: Any) -> Any:
        """The generator as one traced graph. Every call has the same CHUNK-row shapes, so it traces once,
        and a graph call skips Keras' eager dispatch, which costs more than a small generator's own math."""
        if self._graph is None:
            import tensorflow as tf

            self._graph = tf.function(lambda x: self.model(x, training=False), autograph=False)
        return self._graph(inputs)

    def resolve_label(self, label: int | str | None) -> int | None:
        """Validate a user's label: an index or a class name. Raises ``UserError``."""
        if label is None:
            return None
        if not self.meta.conditional:
            raise UserError(f"model {self.meta.name}/{self.meta.version} is unconditional; omit the label")
        names = self.meta.class_names or []
        # ASCII digits only: str.isdigit() accepts "²" and other Unicode digits that int() then refuses.
        if isinstance(label, str) and not re.fullmatch(r"-?[0-9]{1,9}", label):
            if label not in names:
                shown = label if len(label) <= 40 else label[:40] + "..."
                raise UserError(f"unknown label {shown!r}; this model knows {', '.join(names)}")
            return names.index(label)
        index = int(label)
        if not 0 <= index < len(names):
            raise UserError(f"label {index} is out of range; use 0..{len(names) - 1} or a class name")
        return index

    def labels_for(self, seeds: list[int], label: int | None) -> np.ndarray | None:
        if not self.meta.conditional:
            return None
        if label is not None:
            return np.full(len(seeds), label, np.int64)
        return sample_labels(seeds, self.meta.class_probs or [1.0] * len(self.meta.class_names or [1]))

    def generate(self, seeds: list[int], labels: np.ndarray | None = None, truncation_psi: float = 1.0) -> np.ndarray:
        """float32 images in [0, 1], shape (N, H, W, C), one per seed. Pure: no I/O, no HTTP."""
        z = latents(seeds, self.meta.latent_dim, truncation_psi)
        out = []
        for start in range(0, len(seeds), CHUNK):
            zc = z[start : start + CHUNK]
            real = len(zc)
            pad = CHUNK - real
            zc = np.concatenate([zc, np.zeros((pad, zc.shape[1]), np.float32)]) if pad else zc
            if self.meta.conditional:
                assert labels is not None, "a conditional model needs labels (use labels_for)"
                lc = labels[start : start + CHUNK].astype(np.int32)
                lc = np.concatenate([lc, np.zeros(pad, np.int32)]) if pad else lc
                x = self._forward([zc, lc])
            else:
                x = self._forward(zc)
            out.append(np.asarray(x, np.float32)[:real])
        images = np.concatenate(out) if out else np.zeros((0, *self.meta.image_shape), np.float32)
        return np.clip((images + 1.0) * 0.5, 0.0, 1.0).astype(np.float32)  # tanh -> [0, 1]

    def sample(
        self, n: int, seed: int = 0, label: int | str | None = None, truncation_psi: float = 1.0
    ) -> tuple[np.ndarray, list[int], np.ndarray | None]:
        """n images from seed; returns (images, per-image seeds, labels or None)."""
        seeds = per_image_seeds(seed, n)
        labels = self.labels_for(seeds, self.resolve_label(label))
        return self.generate(seeds, labels, truncation_psi), seeds, labels


def next_version(models_uri: str, name: str) -> str:
    taken = sorted_versions(storage.list_dir(storage.join(models_uri, name)))
    return f"v{version_number(taken[-1]) + 1 if taken else 1:04d}"


def add_version(store: str, name: str, write: Callable[[str, str], Any]) -> str:
    """Write the next ``vNNNN`` of model ``name`` with ``write(package_uri, version)``; returns the package URI.

    Picking the version and writing it happen under the model's lock (the one promotions hold), so concurrent
    exports of one model get distinct versions: the next one lists this version's files once the lock is free.
    """
    check_name(name, "model name")
    models = storage.join(store, "models")
    with model_lock(store, name):
        version = next_version(models, name)
        uri = storage.join(models, name, version)
        write(uri, version)
    return uri


def write_package(package_uri: str, model: Any, meta_fields: dict[str, Any], samples_png: bytes | None) -> ModelMeta:
    """Save the generator, samples, and finally model.json (the commit point)."""
    blob = keras_to_bytes(model)
    meta = ModelMeta(**meta_fields, generator_sha256=storage.sha256_bytes(blob))
    storage.write_bytes(storage.join(package_uri, GENERATOR_FILE), blob)
    if samples_png is not None:
        storage.write_bytes(storage.join(package_uri, SAMPLES_FILE), samples_png)
    write_meta(package_uri, meta)
    return meta


def write_meta(package_uri: str, meta: ModelMeta) -> None:
    storage.write_bytes(storage.join(package_uri, META_FILE), meta.model_dump_json(indent=2).encode())


def read_meta(package_uri: str) -> ModelMeta:
    uri = storage.join(package_uri, META_FILE)
    if not storage.exists(uri):
        raise UserError(f"no model package at {package_uri}: {META_FILE} is missing; export or train one first")
    try:
        return ModelMeta.model_validate(json.loads(storage.read_bytes(uri)))
    except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as err:
        raise IntegrityError(f"{uri}: not a valid model.json ({str(err).splitlines()[0][:120]})") from None


def load_package(package_uri: str) -> GeneratorPackage:
    """Load and verify a package: sha256 first, then Keras with safe_mode=True."""
    meta = read_meta(package_uri)
    gen_uri = storage.join(package_uri, GENERATOR_FILE)
    blob = storage.read_bytes(gen_uri)
    digest = storage.sha256_bytes(blob)
    if digest != meta.generator_sha256:
        raise IntegrityError(
            f"{gen_uri}: sha256 {digest[:12]}... does not match model.json ({meta.generator_sha256[:12]}...); "
            "the package is corrupt or was modified, re-export it"
        )
    return GeneratorPackage(package_uri, meta, keras_from_bytes(blob, gen_uri, "the generator"))


def champion_uri(store: str, name: str) -> str:
    return storage.join(store, "models", name, CHAMPION_FILE)


def read_champion(store: str, name: str) -> dict[str, Any] | None:
    uri = champion_uri(store, name)
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_bytes(uri))


def is_reference(ref: str) -> bool:
    """True for names resolved against a store (``champion``, ``NAME``, ``NAME/vNNNN``), not package URIs."""
    return not ("://" in ref or ref.startswith(("/", ".", "~")))


def resolve_model_uri(ref: str, store: str | None = None) -> str:
    """A package URI from: a URI, ``NAME`` (latest version), ``NAME/vNNNN``, ``champion`` or ``champion:NAME``."""
    store = store or storage.default_store()
    models = storage.join(store, "models")
    if ref == "champion" or ref.startswith("champion:"):
        names = [check_name(ref.split(":", 1)[1], "model name")] if ":" in ref else [
            n for n in storage.list_dir(models) if storage.exists(champion_uri(store, n))
        ]
        if len(names) != 1:
            found = ", ".join(names) or "none"
            raise UserError(f"'champion' is ambiguous or missing under {models} (champions: {found}); "
                            "use champion:NAME or promote a model with 'genai-ray tune' or 'genai-ray promote'")
        pointer = read_champion(store, names[0])
        if pointer is None:
            raise UserError(f"no champion for model {names[0]!r} under {models}; promote one first")
        if not storage.exists(storage.join(pointer["uri"], META_FILE)):
            raise UserError(f"{champion_uri(store, names[0])} points to {pointer['uri']}, which is not a model "
                            "package (no model.json); promote an existing package with 'genai-ray promote'")
        return pointer["uri"]
    if not is_reference(ref):
        return ref
    parts = ref.split("/")
    if len(parts) > 2:
        raise UserError(f"model reference {ref!r}: use NAME, NAME/vNNNN, champion, champion:NAME or a package URI")
    check_name(parts[0], "model name")
    if len(parts) == 2:
        if not VERSION_RE.match(parts[1]):
            raise UserError(f"model reference {ref!r}: {parts[1]!r} is not a version; use NAME/vNNNN")
        return storage.join(models, *parts)
    versions = sorted_versions(storage.list_dir(storage.join(models, ref)))
    complete = [v for v in versions if storage.exists(storage.join(models, ref, v, META_FILE))]
    if not complete:
        raise UserError(f"no exported model named {ref!r} under {models}; train one or pass a package URI")
    return storage.join(models, ref, complete[-1])
