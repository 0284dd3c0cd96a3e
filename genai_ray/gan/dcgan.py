"""DCGAN (Radford et al. 2015, arXiv:1511.06434): transposed-conv G, strided-conv D.

Square images of s * 2**k pixels with 1 or 3 channels, and a channel schedule, as in ``sizes.py``: G starts at
s x s and doubles the resolution k times (28x28 MNIST grows 7 -> 14 -> 28, as the classic MNIST DCGAN does).
"""

from __future__ import annotations

import keras
from keras import layers

from genai_ray.config import ModelConfig
from genai_ray.gan.blocks import act, generator_input, label_input, norm, projection_logits, wrap
from genai_ray.gan.sizes import buildable_sides, channels, check_square, start_size, upsamplings

# The size helpers moved to sizes.py (the resnet family shares them); re-exported for code that imports them here.
__all__ = ["build_discriminator", "build_generator", "buildable_sides", "check_image_shape", "start_size",
           "upsamplings"]


def check_image_shape(image_shape: tuple[int, int, int]) -> None:
    """Refuse sizes the architecture can't produce, before any worker starts."""
    check_square(image_shape, "dcgan")


def build_generator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                    sync_bn: bool = False) -> keras.Model:
    """z (B, latent) [, labels int32 (B,)] -> images (B, H, W, C), in [-1, 1] with the default tanh output."""
    check_image_shape(image_shape)
    k = upsamplings(image_shape)
    inputs, x = generator_input(cfg.latent_dim, cfg.conditional, num_classes, cfg.label_embed_dim)
    ch, s = channels(cfg.base_channels, 0, k), start_size(image_shape[0])
    x = wrap(layers.Dense(s * s * ch, use_bias=cfg.g_norm != "batch"), cfg.g_norm)(x)
    x = layers.Reshape((s, s, ch))(x)  # (B, s, s, ch)
    for level in range(1, k + 1):
        if (n := norm(cfg.g_norm, sync_bn)) is not None:
            x = n(x)
        x = act(x)
        conv = layers.Conv2DTranspose(channels(cfg.base_channels, level, k), 4, strides=2, padding="same",
                                      use_bias=cfg.g_norm != "batch")
        x = wrap(conv, cfg.g_norm)(x)  # (B, s * 2**level, ...)
    if (n := norm(cfg.g_norm, sync_bn)) is not None:
        x = n(x)
    x = act(x)
    out = layers.Conv2D(image_shape[2], 3, padding="same", activation=cfg.output_activation, dtype="float32",
                        name="image")(x)
    return keras.Model(inputs, out, name="generator")


def build_discriminator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                        sync_bn: bool = False) -> keras.Model:
    """images (B, H, W, C) in [-1, 1] [, labels] -> logits (B, 1), float32."""
    check_image_shape(image_shape)
    k = upsamplings(image_shape)
    image = keras.Input(shape=image_shape, name="image")
    x = image
    for level in range(k, 0, -1):  # full resolution down to s x s
        x = wrap(layers.Conv2D(channels(cfg.base_channels, level - 1, k), 4, strides=2, padding="same"), cfg.d_norm)(x)
        if level != k and (n := norm(cfg.d_norm, sync_bn)) is not None:  # no norm on D's input layer (DCGAN)
            x = n(x)
        x = act(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout)(x)
    x = layers.Flatten()(x)  # (B, s * s * ch)
    if cfg.conditional:
        y = label_input()
        return keras.Model([image, y], projection_logits(x, y, num_classes, cfg.d_norm), name="discriminator")
    logits = wrap(layers.Dense(1, dtype="float32", name="logits"), cfg.d_norm)(x)
    return keras.Model(image, logits, name="discriminator")
