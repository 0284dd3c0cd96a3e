"""The GAN library: networks, losses and the training step. Pure TensorFlow/Keras; knows nothing of Ray.

Network families sit in a registry by name, so adding one is one module plus one line here.
"""

from __future__ import annotations

from types import ModuleType

from genai_ray.gan import dcgan, mlp, resnet

FAMILIES: dict[str, ModuleType] = {"mlp": mlp, "dcgan": dcgan, "resnet": resnet}


def family(name: str) -> ModuleType:
    assert name in FAMILIES, f"unknown model family {name!r}; the config validator should have refused it"
    return FAMILIES[name]
