"""genai-ray: distributed GAN training, evaluation, search and serving on Ray."""

__version__ = "0.1.0"
