"""The Ray layer over the GAN library: Ray Train workers, the driver-side ``fit``, export and generate."""

from __future__ import annotations

from genai_ray.train.run import TrainResult, build_trainer, fit

__all__ = ["TrainResult", "build_trainer", "fit"]
