"""Export a training checkpoint as a model package (see ``genai_ray.package.format``).

The generator is rebuilt in float32 without replica synchronisation and loaded from the checkpoint, so the
package is the same plain Keras model whatever the training hardware, precision or worker count was.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from genai_ray.config import Config
from genai_ray.data.manifest import now_iso
from genai_ray.data.reader import Dataset
from genai_ray.gan import family
from genai_ray.images import grid_png
from genai_ray.package.format import add_version, write_package
from genai_ray.train.loop import STATE_DIR, STATE_PREFIX, grid_inputs


def load_sampler(folder: str, cfg: Config, image_shape: tuple[int, int, int], num_classes: int):
    """The EMA generator (or G when EMA is off) from a checkpoint folder, as a float32 Keras model."""
    model = family(cfg.model.family).build_generator(cfg.model, image_shape, num_classes)
    key = "ema" if cfg.train.ema_decay else "g"
    status = tf.train.Checkpoint(**{key: model}).read(os.path.join(folder, STATE_DIR, STATE_PREFIX))
    status.assert_existing_objects_matched().expect_partial()  # D and optimisers are not needed here
    return model


def class_probs(dataset: Dataset) -> list[float] | None:
    m = dataset.manifest
    if not m.labelled:
        return None
    counts = np.asarray([m.label_counts.get(str(i), 0) for i in range(m.num_classes)], np.float64)
    return (counts / counts.sum()).tolist()


def export_checkpoint(checkpoint, cfg: Config, dataset: Dataset, name: str, store: str,
                      training: dict) -> str:
    """Write ``<store>/models/<name>/<version>`` from a Ray checkpoint; returns the package URI."""
    m = dataset.manifest
    image_shape = tuple(m.shape)
    num_classes = max(m.num_classes, 1)
    with checkpoint.as_directory() as folder:
        model = load_sampler(folder, cfg, image_shape, num_classes)
    z, labels = grid_inputs(cfg.model.latent_dim, num_classes)
    x = model([z, labels.astype(np.int32)] if cfg.model.conditional else z, training=False)
    samples = np.clip((np.asarray(x, np.float32) + 1.0) * 0.5, 0.0, 1.0)

    def write(uri: str, version: str) -> None:
        fields = {
            "name": name, "version": version, "image_shape": image_shape, "latent_dim": cfg.model.latent_dim,
            "conditional": cfg.model.conditional, "class_names": m.class_names if cfg.model.conditional else None,
            "class_probs": class_probs(dataset) if cfg.model.conditional else None,
            "dataset_uri": dataset.uri, "dataset_sha256": m.sha256(), "config": cfg.model_dump(mode="json"),
            "training": training, "created_at": now_iso(),
        }
        write_package(uri, model, fields, grid_png(samples, {"model": f"{name}/{version}"}))

    return add_version(store, name, write)  # under the model's lock: concurrent exports get distinct versions
