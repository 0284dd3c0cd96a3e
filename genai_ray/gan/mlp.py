"""Dense GAN (Goodfellow et al. 2014, arXiv:1406.2661): the reference architecture.

By default G maps z (100) through dense 256, 512, 1024 to tanh pixels, and D mirrors it. Any image shape
works. The conditional G concatenates a label embedding to z; the conditional D is a projection D.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from genai_ray.config import ModelConfig
from genai_ray.gan.blocks import act, generator_input, label_input, norm, projection_logits, wrap


def check_image_shape(image_shape: tuple[int, int, int]) -> None:
    """Every (H, W, C) is fine for dense layers."""


def build_generator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                    sync_bn: bool = False) -> keras.Model:
    """z (B, latent) [, labels int32 (B,)] -> images (B, H, W, C), in [-1, 1] with the default tanh output."""
    inputs, x = generator_input(cfg.latent_dim, cfg.conditional, num_classes, cfg.label_embed_dim)
    for width in cfg.g_widths:
        x = wrap(layers.Dense(width, use_bias=cfg.g_norm != "batch"), cfg.g_norm)(x)
        if (n := norm(cfg.g_norm, sync_bn)) is not None:
            x = n(x)
        x = act(x)
    x = layers.Dense(math.prod(image_shape), activation=cfg.output_activation, dtype="float32", name="pixels")(x)
    out = layers.Reshape(image_shape, dtype="float32", name="image")(x)
    return keras.Model(inputs, out, name="generator")


def build_discriminator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                        sync_bn: bool = False) -> keras.Model:
    """images (B, H, W, C) in [-1, 1] [, labels] -> logits (B, 1), float32."""
    image = keras.Input(shape=image_shape, name="image")
    x = layers.Flatten()(image)
    for width in cfg.d_widths:
        x = wrap(layers.Dense(width), cfg.d_norm)(x)
        if (n := norm(cfg.d_norm, sync_bn)) is not None:
            x = n(x)
        x = act(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout)(x)
    if cfg.conditional:
        y = label_input()
        return keras.Model([image, y], projection_logits(x, y, num_classes, cfg.d_norm), name="discriminator")
    logits = wrap(layers.Dense(1, dtype="float32", name="logits"), cfg.d_norm)(x)
    return keras.Model(image, logits, name="discriminator")
