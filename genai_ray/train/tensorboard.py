"""Rank 0's TensorBoard event files, under ``<run>/tensorboard`` so ``tensorboard --logdir <run>`` works.

TensorFlow's summary writer needs a local folder, so on S3 we write locally and upload the (small) event
files after each epoch; on a local store we write in place.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tensorflow as tf

from genai_ray import storage


class TensorBoard:
    def __init__(self, run_uri: str):
        self.remote = storage.join(run_uri, "tensorboard")
        if storage.is_s3(run_uri):
            self._tmp = tempfile.TemporaryDirectory(prefix="genai-ray-tb-")
            self.local = self._tmp.name
        else:
            self._tmp = None
            self.local = storage.resolve(self.remote)[1]
        self.writer = tf.summary.create_file_writer(self.local)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self.writer.as_default(step=step):
            for key, value in values.items():
                tf.summary.scalar(key, value)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """One HWC uint8 image (a sample grid)."""
        with self.writer.as_default(step=step):
            tf.summary.image(name, image[None], max_outputs=1)

    def flush(self) -> None:
        self.writer.flush()
        if self._tmp is None:
            return
        for name in os.listdir(self.local):
            with open(os.path.join(self.local, name), "rb") as f:
                storage.write_bytes(storage.join(self.remote, name), f.read())
