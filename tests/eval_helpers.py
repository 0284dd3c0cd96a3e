"""Helpers for the evaluation tests: a prepared digits dataset, the eval config, a tiny real package."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from genai_ray import storage
from genai_ray.config import EvalConfig
from genai_ray.data.prepare import prepare
from genai_ray.data.sources import open_source
from genai_ray.package.format import write_package

# Fewer classifier epochs than the default keep the tests quick; the features are still ~97% accurate.
CFG = EvalConfig(classifier_epochs=12, n_samples=400)
LATENT = 8


def prepare_digits(uri: str) -> str:
    prepare(open_source("digits"), uri, name="digits", holdout=0.1, seed=0, progress=False)
    return uri


def toy_generator(conditional: bool, num_classes: int = 10, shape: tuple[int, int, int] = (8, 8, 1)) -> Any:
    """An untrained generator from plain Keras layers: z (+ int labels) -> tanh images."""
    import keras

    keras.utils.set_random_seed(0)
    z = keras.Input((LATENT,), name="z")
    h = z
    if conditional:
        labels = keras.Input((), dtype="int32", name="labels")
        h = keras.layers.Concatenate()([z, keras.layers.Embedding(num_classes, 4)(labels)])
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dense(int(np.prod(shape)), activation="tanh")(h)
    out = keras.layers.Reshape(shape)(h)
    return keras.Model([z, labels] if conditional else z, out)


def write_toy_package(store: str, dataset_uri: str, dataset_sha: str, conditional: bool = True,
                      name: str = "toy", shape: tuple[int, int, int] = (8, 8, 1)) -> str:
    uri = storage.join(store, "models", name, "v0001")
    names = [str(i) for i in range(10)]
    meta = {
        "name": name, "version": "v0001", "image_shape": shape, "latent_dim": LATENT,
        "conditional": conditional, "class_names": names if conditional else None,
        "class_probs": [0.1] * 10 if conditional else None, "dataset_uri": dataset_uri,
        "dataset_sha256": dataset_sha, "config": {}, "metrics": {"loss/g": 1.5},
        "created_at": datetime.now(UTC).isoformat(),
    }
    write_package(uri, toy_generator(conditional, shape=shape), meta, None)
    return uri
