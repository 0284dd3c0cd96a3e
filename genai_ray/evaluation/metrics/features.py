"""The feature space every metric measures in: a small network trained on the dataset itself.

Inception features need downloaded weights and suit 8x8 grayscale digits badly, so, as TF-GAN's MNIST
tools and small-data GAN papers do, we train a classifier on the TRAINING split (labelled datasets) or an
autoencoder (unlabelled ones) and use its penultimate layer ("features"). It is trained once per dataset
and cached beside the manifest (``<dataset>/features/<settings hash>/``): ``feature-model.keras`` (loaded
with ``safe_mode=True``) and ``feature-model.json``, written last, recording what it was trained for (the
manifest's sha256 and the settings) and how good it is on the held-out split. A cache that does not match
is retrained, so changed data never reuses stale features; different ``eval`` settings (a tiny preset, a
default one) each keep their own folder instead of retraining over each other.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from genai_ray import storage
from genai_ray.config import EvalConfig
from genai_ray.data.manifest import FEATURES_DIR
from genai_ray.data.reader import Dataset
from genai_ray.keras_bytes import keras_from_bytes, keras_to_bytes

# Keras is imported inside the functions that build or load the feature model: the CLI loads this module at start-up
# (through evaluation/evaluate.py), and `genai-ray --help` and config errors stay fast.

MODEL_FILE = "feature-model.keras"
INFO_FILE = "feature-model.json"
ARCH_VERSION = 1  # bump when the architecture or training recipe changes: old caches retrain
FEATURE_LAYER = "features"
BATCH = 512

_LOADED: dict[tuple, FeatureModel] = {}  # in-process cache: training calls the cheap metrics every K epochs


@dataclass
class FeatureModel:
    """A trained feature network. ``info`` holds its provenance and held-out quality."""

    kind: str  # "classifier" or "autoencoder"
    extractor: Any  # keras.Model: images -> features (and softmax for a classifier)
    info: dict[str, Any]

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 or float [0, 1] NHWC -> (features (N, D), class probabilities (N, K) or None), converted a
        batch at a time so a large uint8 split is never held as floats."""
        feats, probs = [], []
        for start in range(0, len(images), BATCH):
            batch = images[start : start + BATCH]
            batch = batch.astype(np.float32) / 255.0 if batch.dtype == np.uint8 else np.asarray(batch, np.float32)
            out = self.extractor(batch, training=False)
            out = out if isinstance(out, list | tuple) else [out]
            feats.append(np.asarray(out[0]))
            if self.kind == "classifier":
                probs.append(np.asarray(out[1]))
        return np.concatenate(feats), (np.concatenate(probs) if probs else None)


def _trunk(inp: Any, shape: tuple[int, int, int], feature_dim: int, activation: str | None) -> Any:
    """Conv layers halving the resolution down to 4x4 or less, then the feature layer."""
    from keras import layers

    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    size = max(shape[0], shape[1])
    while size > 4:
        x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
        size = math.ceil(size / 2)
    x = layers.Flatten()(x)
    return layers.Dense(feature_dim, activation=activation, name=FEATURE_LAYER)(x)


def build_classifier(shape: tuple[int, int, int], num_classes: int, feature_dim: int) -> Any:
    import keras
    from keras import layers

    inp = keras.Input(shape)
    feats = _trunk(inp, shape, feature_dim, "relu")
    out = layers.Dense(num_classes, activation="softmax", name="probs")(layers.Dropout(0.3)(feats))
    return keras.Model(inp, out)


def build_autoencoder(shape: tuple[int, int, int], feature_dim: int) -> Any:
    import keras
    from keras import layers

    inp = keras.Input(shape)
    code = _trunk(inp, shape, feature_dim, None)  # linear bottleneck
    x = layers.Dense(256, activation="relu")(code)
    x = layers.Dense(int(np.prod(shape)), activation="sigmoid")(x)
    return keras.Model(inp, layers.Reshape(shape)(x))


def _settings(ds: Dataset, cfg: EvalConfig) -> dict[str, Any]:
    return {
        "kind": "classifier" if ds.manifest.labelled else "autoencoder",
        "arch_version": ARCH_VERSION,
        "manifest_sha256": ds.manifest.sha256(),
        "epochs": cfg.classifier_epochs,
        "feature_dim": cfg.feature_dim,
        "seed": cfg.seed,
    }


def cache_folder(ds: Dataset, cfg: EvalConfig) -> str:
    """Where the feature model for these settings lives."""
    digest = storage.sha256_bytes(json.dumps(_settings(ds, cfg), sort_keys=True).encode())[:12]
    return storage.join(ds.uri, FEATURES_DIR, digest)


def _extractor(model: Any, kind: str) -> Any:
    import keras

    feats = model.get_layer(FEATURE_LAYER).output
    outputs = [feats, model.output] if kind == "classifier" else [feats]
    return keras.Model(model.inputs[0], outputs)


def train_feature_model(ds: Dataset, cfg: EvalConfig) -> tuple[Any, dict[str, Any]]:
    """Train on the training split; measure on the held-out split. Deterministic for a fixed seed."""
    import keras

    settings = _settings(ds, cfg)
    x, y = ds.read_numpy("train")
    xh, yh = ds.read_numpy("holdout")
    x, xh = x.astype(np.float32) / 255.0, xh.astype(np.float32) / 255.0
    keras.utils.set_random_seed(cfg.seed)
    if settings["kind"] == "classifier":
        model = build_classifier(ds.manifest.shape, ds.manifest.num_classes, cfg.feature_dim)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=64, epochs=cfg.classifier_epochs, shuffle=True, verbose=0)
        quality = {"holdout_accuracy": float((model.predict(xh, verbose=0).argmax(1) == yh).mean()) if len(xh)
                   else None}
    else:
        model = build_autoencoder(ds.manifest.shape, cfg.feature_dim)
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        model.fit(x, x, batch_size=64, epochs=cfg.classifier_epochs, shuffle=True, verbose=0)
        quality = {"holdout_mse": float(model.evaluate(xh, xh, verbose=0)) if len(xh) else None}
    info = {**settings, **quality, "train_count": len(x), "holdout_count": len(xh),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    return model, info


def _save(folder: str, model: Any, info: dict[str, Any]) -> dict[str, Any]:
    blob = keras_to_bytes(model)
    info = {**info, "model_sha256": storage.sha256_bytes(blob)}
    storage.write_bytes(storage.join(folder, MODEL_FILE), blob)
    storage.write_bytes(storage.join(folder, INFO_FILE), json.dumps(info, indent=2).encode())  # commit point
    return info


def _load_cached(folder: str, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    info_uri = storage.join(folder, INFO_FILE)
    if not storage.exists(info_uri):
        return None
    try:
        info = json.loads(storage.read_bytes(info_uri))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a damaged cache is retrained, never trusted
    if any(info.get(k) != v for k, v in settings.items()):
        return None
    model_uri = storage.join(folder, MODEL_FILE)
    if not storage.exists(model_uri):
        return None
    blob = storage.read_bytes(model_uri)
    if storage.sha256_bytes(blob) != info.get("model_sha256"):
        return None
    model = keras_from_bytes(blob, model_uri, "the cached feature model", f"; delete {folder} to retrain it")
    return model, info


def feature_model(ds: Dataset, cfg: EvalConfig | None = None) -> FeatureModel:
    """The dataset's feature model: from this process, from the cache beside the manifest, or trained now."""
    cfg = cfg or EvalConfig()
    settings = _settings(ds, cfg)
    key = (ds.uri, *sorted(settings.items()))
    if key in _LOADED:
        return _LOADED[key]
    folder = cache_folder(ds, cfg)
    cached = _load_cached(folder, settings)
    if cached is None:
        model, info = train_feature_model(ds, cfg)
        info = _save(folder, model, info)
    else:
        model, info = cached
    fm = FeatureModel(settings["kind"], _extractor(model, settings["kind"]), info)
    _LOADED[key] = fm
    return fm
