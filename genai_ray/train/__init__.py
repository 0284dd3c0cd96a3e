"""The Ray layer over the GAN library: Ray Train workers, the driver-side ``fit``, export and generate.

Import from the modules (``genai_ray.train.run.fit``). This package imports nothing itself: Ray Train's
controller unpickles ``genai_ray.train.worker`` and ``genai_ray.train.backend``, and an eager import here
would load TensorFlow into that process for nothing.
"""
