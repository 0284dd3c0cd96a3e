"""DCGAN (Radford et al. 2015, arXiv:1511.06434): transposed-conv G, strided-conv D.

Square images of 4 * 2**k pixels (8, 16, 32, 64, ...) with 1 or 3 channels. G starts at 4x4 and doubles
the resolution k times; channels are ``base_channels`` at full resolution and double at each halving
(capped at 16x base), so the network stays balanced at every size.
"""

from __future__ import annotations

import keras
from keras import layers

from genai_ray.config import ModelConfig
from genai_ray.errors import UserError
from genai_ray.gan.blocks import act, label_input, norm, projection_logits, wrap

START = 4  # G's first feature map is START x START


def upsamplings(image_shape: tuple[int, int, int]) -> int:
    h, _, _ = image_shape
    return (h // START).bit_length() - 1


def check_image_shape(image_shape: tuple[int, int, int]) -> None:
    """Refuse sizes the architecture can't produce, before any worker starts."""
    h, w, c = image_shape
    if h != w or h < 2 * START or h & (h - 1):
        raise UserError(
            f"model.family=dcgan makes square images of 8, 16, 32, 64... pixels, but the dataset is {h}x{w}; "
            "re-prepare it with --image-size 32 (or another power of two) or use model.family=mlp"
        )
    if c not in (1, 3):
        raise UserError(f"model.family=dcgan needs 1 or 3 channels, the dataset has {c}")


def _channels(cfg: ModelConfig, level: int, k: int) -> int:
    """Channels at resolution START * 2**level (level k is the full resolution)."""
    return cfg.base_channels * min(2 ** (k - level), 16)


def build_generator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                    sync_bn: bool = False) -> keras.Model:
    """z (B, latent) [, labels int32 (B,)] -> tanh images (B, H, W, C)."""
    check_image_shape(image_shape)
    k = upsamplings(image_shape)
    z = keras.Input(shape=(cfg.latent_dim,), name="z")
    x = z
    if cfg.conditional:
        y = label_input()
        x = layers.Concatenate()([z, layers.Embedding(num_classes, cfg.label_embed_dim)(y)])
    ch = _channels(cfg, 0, k)
    x = wrap(layers.Dense(START * START * ch, use_bias=cfg.g_norm != "batch"), cfg.g_norm)(x)
    x = layers.Reshape((START, START, ch))(x)  # (B, 4, 4, ch)
    for level in range(1, k + 1):
        if (n := norm(cfg.g_norm, sync_bn)) is not None:
            x = n(x)
        x = act(x)
        conv = layers.Conv2DTranspose(_channels(cfg, level, k), 4, strides=2, padding="same",
                                      use_bias=cfg.g_norm != "batch")
        x = wrap(conv, cfg.g_norm)(x)  # (B, 4 * 2**level, ...)
    if (n := norm(cfg.g_norm, sync_bn)) is not None:
        x = n(x)
    x = act(x)
    out = layers.Conv2D(image_shape[2], 3, padding="same", activation="tanh", dtype="float32", name="image")(x)
    return keras.Model([z, y] if cfg.conditional else z, out, name="generator")


def build_discriminator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                        sync_bn: bool = False) -> keras.Model:
    """images (B, H, W, C) in [-1, 1] [, labels] -> logits (B, 1), float32."""
    check_image_shape(image_shape)
    k = upsamplings(image_shape)
    image = keras.Input(shape=image_shape, name="image")
    x = image
    for level in range(k, 0, -1):  # full resolution down to 4x4
        x = wrap(layers.Conv2D(_channels(cfg, level - 1, k), 4, strides=2, padding="same"), cfg.d_norm)(x)
        if level != k and (n := norm(cfg.d_norm, sync_bn)) is not None:  # no norm on D's input layer (DCGAN)
            x = n(x)
        x = act(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout)(x)
    x = layers.Flatten()(x)  # (B, 4 * 4 * ch)
    if cfg.conditional:
        y = label_input()
        return keras.Model([image, y], projection_logits(x, y, num_classes, cfg.d_norm), name="discriminator")
    logits = wrap(layers.Dense(1, dtype="float32", name="logits"), cfg.d_norm)(x)
    return keras.Model(image, logits, name="discriminator")
