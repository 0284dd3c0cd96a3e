"""Small layer helpers shared by the network families. Standard Keras layers only, so a saved generator
loads with ``safe_mode=True`` and no custom objects."""

from __future__ import annotations

import keras
from keras import layers


def norm(kind: str, synchronized: bool = False) -> layers.Layer | None:
    """A normalisation layer after a dense/conv layer; spectral norm wraps the layer instead (see ``wrap``).

    ``synchronized`` makes batch statistics span all replicas, so N workers normalise exactly like one worker
    holding the whole global batch (the 1-vs-N update equivalence depends on it).
    """
    if kind == "batch":
        return layers.BatchNormalization(momentum=0.9, synchronized=synchronized)
    if kind == "layer":
        return layers.LayerNormalization()
    return None


def wrap(layer: layers.Layer, kind: str) -> layers.Layer:
    """Spectral normalisation (Miyato et al. 2018, arXiv:1802.05957) wraps the weight layer itself."""
    return layers.SpectralNormalization(layer) if kind == "spectral" else layer


def act(x: keras.KerasTensor) -> keras.KerasTensor:
    return layers.LeakyReLU(0.2)(x)


def label_input() -> keras.KerasTensor:
    """Class labels, int32 (B,), the second input of conditional networks."""
    return keras.Input(shape=(), dtype="int32", name="label")


def generator_input(latent_dim: int, conditional: bool, num_classes: int,
                    label_embed_dim: int) -> tuple[keras.KerasTensor | list[keras.KerasTensor], keras.KerasTensor]:
    """(the generator's inputs: z, or [z, labels]; its first features: z, or z joined with the label's embedding),
    shared by every family so their packages take the same inputs."""
    z = keras.Input(shape=(latent_dim,), name="z")
    if not conditional:
        return z, z
    y = label_input()
    return [z, y], layers.Concatenate()([z, layers.Embedding(num_classes, label_embed_dim)(y)])


def projection_logits(features: keras.KerasTensor, labels: keras.KerasTensor, num_classes: int,
                      d_norm: str) -> keras.KerasTensor:
    """Projection discriminator (Miyato & Koyama 2018, arXiv:1802.05637): logit = psi(f) + <embed(y), f>."""
    logits = wrap(layers.Dense(1, dtype="float32", name="logit"), d_norm)(features)
    embed = layers.Embedding(num_classes, features.shape[-1], name="class_projection")(labels)  # (B, F)
    proj = layers.Dot(axes=1, dtype="float32")([embed, features])  # (B, 1)
    return layers.Add(dtype="float32", name="logits")([logits, proj])
