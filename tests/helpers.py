"""Helpers the tests share: the CLI runner, digits preparation, a toy model package, a tuning space and config,
and closed-loop HTTP load clients. Serving-only helpers (Serve, HTTP, Chromium) are in ``serve_helpers.py``."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from genai_ray import storage
from genai_ray.config import EvalConfig, TuneConfig, build_config
from genai_ray.package.format import write_package

# ---- the CLI ----------------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``genai-ray ARGS`` in this process: (exit code, stdout, stderr)."""
    from genai_ray.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_merged(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``genai-ray ARGS`` in this process: (exit code, stdout then stderr as one text)."""
    code, out, err = run(capsys, *args)
    return code, out + err


# ---- data -------------------------------------------------------------------------------------------------------


def prepare_digits(uri: str, name: str = "digits", **options: Any) -> str:
    """The bundled digits prepared at ``uri`` (10% held out, seed 0, unless ``options`` say otherwise, with
    ``genai_ray.data.prepare.prepare``'s keywords); returns ``uri``."""
    from genai_ray.data.prepare import prepare
    from genai_ray.data.sources import open_source

    prepare(open_source("digits"), uri, name=name, progress=False, **options)
    return uri


# Fewer classifier epochs than the default keep the evaluation tests quick; the features are still ~97% accurate.
EVAL_CFG = EvalConfig(classifier_epochs=12, n_samples=400)

# ---- a toy model package ----------------------------------------------------------------------------------------

LATENT = 8
DIGIT_NAMES = [str(i) for i in range(10)]


def toy_generator(conditional: bool, num_classes: int = 10, shape: tuple[int, int, int] = (8, 8, 1),
                  seed: int = 0) -> Any:
    """An untrained generator from plain Keras layers: z (+ int labels) -> tanh images; ``seed`` sets its weights."""
    import keras

    keras.utils.set_random_seed(seed)
    z = keras.Input((LATENT,), name="z")
    h = z
    if conditional:
        labels = keras.Input((), dtype="int32", name="labels")
        h = keras.layers.Concatenate()([z, keras.layers.Embedding(num_classes, 4)(labels)])
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dense(int(np.prod(shape)), activation="tanh")(h)
    out = keras.layers.Reshape(shape)(h)
    return keras.Model([z, labels] if conditional else z, out)


def toy_package(store: str, name: str = "toy", version: str = "v0001", *, conditional: bool = True,
                class_names: list[str] = DIGIT_NAMES, class_probs: list[float] | None = None, seed: int = 0,
                shape: tuple[int, int, int] = (8, 8, 1), dataset: Any = None,
                metrics: dict[str, float] | None = None) -> str:
    """Write a real package (``generator.keras`` + ``model.json``) of ``toy_generator`` at
    ``<store>/models/<name>/<version>`` and return its URI. Conditional packages draw labels in ``class_probs``
    (uniform when None); ``dataset`` (an opened ``Dataset``) is the one the package says it was trained on."""
    uri = storage.join(store, "models", name, version)
    k = len(class_names)
    meta = {
        "name": name, "version": version, "image_shape": shape, "latent_dim": LATENT,
        "conditional": conditional, "class_names": class_names if conditional else None,
        "class_probs": (class_probs or [1 / k] * k) if conditional else None,
        "dataset_uri": dataset.uri if dataset else "memory://test",
        "dataset_sha256": dataset.manifest.sha256() if dataset else "0" * 64, "config": {}, "metrics": metrics or {},
        "created_at": datetime.now(UTC).isoformat(),
    }
    write_package(uri, toy_generator(conditional, k, shape, seed), meta, None)
    return uri


# ---- tuning -----------------------------------------------------------------------------------------------------

TINY_SPACE = """
preset: tiny
base:
  model: {conditional: false}
  train: {epochs: EPOCHS, eval_every: 1, eval_samples: 100, global_batch: BATCH, steps_per_call: 8EXTRA}
  eval: {n_samples: 200, classifier_epochs: 3}
params:
  train.g_lr: {loguniform: [1.0e-4, 2.0e-3]}
  train.d_lr: {loguniform: [1.0e-4, 2.0e-3]}
  model.latent_dim: {choice: [8, 16]}
"""


def space_file(tmp_path: Path, epochs: int, batch: int = 32, **train: Any) -> Path:
    """``tmp_path/space.yaml``: the tiny preset's unconditional MLP searching both learning rates and the latent
    size, evaluated every epoch; ``train`` adds keys to the base's ``train``."""
    extra = "".join(f", {key}: {value}" for key, value in train.items())
    path = tmp_path / "space.yaml"
    path.write_text(TINY_SPACE.replace("EPOCHS", str(epochs)).replace("BATCH", str(batch)).replace("EXTRA", extra))
    return path


def tune_cfg(**kw: Any) -> TuneConfig:
    """The tiny preset's tune section with ``kw`` set."""
    return build_config("tiny", {"tune": kw}).tune


# ---- HTTP load --------------------------------------------------------------------------------------------------


class Load:
    """Closed-loop clients in threads against ``url/v1/generate``, each sending ``body`` with its own seeds and
    recording (start time, status, X-Model) in ``seen``; resizable while running."""

    def __init__(self, url: str, body: dict) -> None:
        self.url, self.body = url, body
        self.seen: list[tuple[float, int, str | None]] = []
        self.stops: list[threading.Event] = []
        self.threads: list[threading.Thread] = []

    def _client(self, stop: threading.Event, worker: int) -> None:
        with httpx.Client(timeout=120) as client:
            for i in itertools.count():
                if stop.is_set():
                    return
                started = time.monotonic()
                try:
                    r = client.post(f"{self.url}/v1/generate", json={**self.body, "seed": worker * 100_000 + i})
                    self.seen.append((started, r.status_code, r.headers.get("x-model")))
                except httpx.HTTPError:
                    self.seen.append((started, -1, None))  # a dropped connection or a hang is a failure too

    def resize(self, clients: int) -> None:
        while len(self.stops) < clients:
            stop = threading.Event()
            thread = threading.Thread(target=self._client, args=(stop, len(self.stops)), daemon=True)
            self.stops.append(stop)
            self.threads.append(thread)
            thread.start()
        while len(self.stops) > clients:
            self.stops.pop().set()
            self.threads.pop().join()

    def wait_for(self, more: int) -> None:
        """Until ``more`` further requests have been answered (or have failed)."""
        target = len(self.seen) + more
        while len(self.seen) < target:
            threading.Event().wait(0.05)

    def failures(self) -> list[tuple[float, int, str | None]]:
        return [s for s in self.seen if s[1] != 200]

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.resize(0)
