"""DCGAN (Radford et al. 2015, arXiv:1511.06434): transposed-conv G, strided-conv D.

Square images of s * 2**k pixels, s in 4..7 and k >= 1 (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ..., 64, ...
128), with 1 or 3 channels. G starts at s x s and doubles the resolution k times, as the classic MNIST DCGAN
does for 28 = 7 * 4 (7 -> 14 -> 28); powers of two start at 4x4. Channels are ``base_channels`` at full
resolution and double at each halving (capped at 16x base), so the network stays balanced at every size.
"""

from __future__ import annotations

import keras
from keras import layers

from genai_ray.config import ModelConfig
from genai_ray.errors import UserError
from genai_ray.gan.blocks import act, label_input, norm, projection_logits, wrap

MIN_START, MAX_START = 4, 7  # G's first feature map is s x s with s in this range


def start_size(side: int) -> int:
    """The s of side = s * 2**k: halve while the result stays an integer of at least MIN_START."""
    s = side
    while s % 2 == 0 and s // 2 >= MIN_START:
        s //= 2
    return s


def upsamplings(image_shape: tuple[int, int, int]) -> int:
    """k, the doublings from s x s to the full resolution."""
    h = image_shape[0]
    return (h // start_size(h)).bit_length() - 1


def buildable_sides(up_to: int = 128) -> list[int]:
    return sorted({s << k for s in range(MIN_START, MAX_START + 1) for k in range(1, 12) if s << k <= up_to})


def check_image_shape(image_shape: tuple[int, int, int]) -> None:
    """Refuse sizes the architecture can't produce, before any worker starts."""
    h, w, c = image_shape
    if h != w or h not in buildable_sides(max(h, 8)):
        raise UserError(
            f"model.family=dcgan makes square images of s*2^k pixels (s in {MIN_START}..{MAX_START}, k >= 1: "
            f"{', '.join(map(str, buildable_sides(64)))}, ...), but the dataset is {h}x{w}; re-prepare it with "
            "--image-size (for example 28, 32 or 64) or use model.family=mlp"
        )
    if c not in (1, 3):
        raise UserError(f"model.family=dcgan needs 1 or 3 channels, the dataset has {c}")


def _channels(cfg: ModelConfig, level: int, k: int) -> int:
    """Channels at resolution s * 2**level (level k is the full resolution)."""
    return cfg.base_channels * min(2 ** (k - level), 16)


def build_generator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                    sync_bn: bool = False) -> keras.Model:
    """z (B, latent) [, labels int32 (B,)] -> images (B, H, W, C), in [-1, 1] with the default tanh output."""
    check_image_shape(image_shape)
    k = upsamplings(image_shape)
    z = keras.Input(shape=(cfg.latent_dim,), name="z")
    x = z
    if cfg.conditional:
        y = label_input()
        x = layers.Concatenate()([z, layers.Embedding(num_classes, cfg.label_embed_dim)(y)])
    ch, s = _channels(cfg, 0, k), start_size(image_shape[0])
    x = wrap(layers.Dense(s * s * ch, use_bias=cfg.g_norm != "batch"), cfg.g_norm)(x)
    x = layers.Reshape((s, s, ch))(x)  # (B, s, s, ch)
    for level in range(1, k + 1):
        if (n := norm(cfg.g_norm, sync_bn)) is not None:
            x = n(x)
        x = act(x)
        conv = layers.Conv2DTranspose(_channels(cfg, level, k), 4, strides=2, padding="same",
                                      use_bias=cfg.g_norm != "batch")
        x = wrap(conv, cfg.g_norm)(x)  # (B, s * 2**level, ...)
    if (n := norm(cfg.g_norm, sync_bn)) is not None:
        x = n(x)
    x = act(x)
    out = layers.Conv2D(image_shape[2], 3, padding="same", activation=cfg.output_activation, dtype="float32",
                        name="image")(x)
    return keras.Model([z, y] if cfg.conditional else z, out, name="generator")


def build_discriminator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                        sync_bn: bool = False) -> keras.Model:
    """images (B, H, W, C) in [-1, 1] [, labels] -> logits (B, 1), float32."""
    check_image_shape(image_shape)
    k = upsamplings(image_shape)
    image = keras.Input(shape=image_shape, name="image")
    x = image
    for level in range(k, 0, -1):  # full resolution down to s x s
        x = wrap(layers.Conv2D(_channels(cfg, level - 1, k), 4, strides=2, padding="same"), cfg.d_norm)(x)
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
