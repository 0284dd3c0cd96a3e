"""Residual G and D without normalisation, after R3GAN (Huang et al. 2024, "The GAN is dead; long live the GAN!
A Modern GAN Baseline", arXiv:2501.05441; code brownvc/R3GAN).

R3GAN strips StyleGAN2 to plain residual stages and trains it with RpGAN + R1 + R2 (``train.loss=rpgan``,
``train.r1_gamma``, ``train.r2_gamma``). What is kept here, sized for CPUs with ``model.base_channels``:
- a block is x + conv1x1(act(conv3x3(act(conv1x1(x))))), its last conv zero-initialised and the others scaled
  down by the number of blocks (Fixup, Zhang et al. 2019, arXiv:1901.09321), so every block starts as the
  identity and no normalisation is needed;
- ``model.res_expansion`` widens the block's middle (an inverted bottleneck, R3GAN's 2) and
  ``model.res_group_channels`` splits its 3x3 conv into groups (ResNeXt; R3GAN's 16 channels per group);
- G resamples by a 1x1 conv and bilinear upsampling (no transposed convs, which leave checkerboard artefacts),
  D by average pooling and a 1x1 conv; LeakyReLU(0.2) everywhere;
- D ends with R3GAN's basis, a depthwise s x s conv over the last feature map, then a logit (a projection
  logit when conditional, as in ``blocks.py``).
The same square s * 2**k sizes and channel schedule as the DCGAN (``sizes.py``), 1 or 3 channels. Standard
Keras layers only, so a saved generator loads with ``safe_mode=True``. ``model.g_norm``, ``d_norm`` and
``dropout`` do not apply.
"""

from __future__ import annotations

import keras
from keras import layers

from genai_ray.config import ModelConfig
from genai_ray.gan.blocks import act, generator_input, label_input, projection_logits
from genai_ray.gan.sizes import channels, check_square, start_size, upsamplings

LEAK = 0.2  # blocks.act's LeakyReLU slope
CONVS_PER_BLOCK = 3


def check_image_shape(image_shape: tuple[int, int, int]) -> None:
    """Refuse sizes the architecture can't produce, before any worker starts."""
    check_square(image_shape, "resnet")


def _branch_init(total_blocks: int) -> keras.initializers.Initializer:
    """He init for LeakyReLU, times R3GAN's L**(-1/(2m-2)) gain for L blocks of m convs: the sum of the blocks'
    outputs keeps its variance as the network deepens."""
    gain2 = 2.0 / (1.0 + LEAK**2) * total_blocks ** (-1.0 / (CONVS_PER_BLOCK - 1))
    return keras.initializers.VarianceScaling(gain2, mode="fan_in", distribution="untruncated_normal")


def residual_block(x: keras.KerasTensor, cfg: ModelConfig, total_blocks: int) -> keras.KerasTensor:
    """(B, H, W, ch) -> (B, H, W, ch): x plus a 1x1 -> 3x3 (grouped) -> 1x1 branch that starts at zero."""
    ch = x.shape[-1]
    mid = ch * cfg.res_expansion
    groups = mid // cfg.res_group_channels if cfg.res_group_channels else 1
    init = _branch_init(total_blocks)
    y = act(layers.Conv2D(mid, 1, kernel_initializer=init)(x))
    y = act(layers.Conv2D(mid, 3, padding="same", groups=groups, kernel_initializer=init)(y))
    y = layers.Conv2D(ch, 1, use_bias=False, kernel_initializer="zeros")(y)
    return layers.Add()([x, y])


def _stage(x: keras.KerasTensor, cfg: ModelConfig, total_blocks: int) -> keras.KerasTensor:
    for _ in range(cfg.res_blocks):
        x = residual_block(x, cfg, total_blocks)
    return x


def _to_channels(x: keras.KerasTensor, ch: int) -> keras.KerasTensor:
    return x if x.shape[-1] == ch else layers.Conv2D(ch, 1)(x)


def build_generator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                    sync_bn: bool = False) -> keras.Model:
    """z (B, latent) [, labels int32 (B,)] -> images (B, H, W, C), in [-1, 1] with the default tanh output."""
    check_image_shape(image_shape)
    k = upsamplings(image_shape)
    total = (k + 1) * cfg.res_blocks
    inputs, x = generator_input(cfg.latent_dim, cfg.conditional, num_classes, cfg.label_embed_dim)
    ch, s = channels(cfg.base_channels, 0, k), start_size(image_shape[0])
    x = layers.Reshape((s, s, ch))(layers.Dense(s * s * ch)(x))  # (B, s, s, ch): R3GAN's generative basis
    x = _stage(x, cfg, total)
    for level in range(1, k + 1):
        x = _to_channels(x, channels(cfg.base_channels, level, k))  # at the lower resolution: 4x cheaper
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)  # (B, s * 2**level, ...)
        x = _stage(x, cfg, total)
    out = layers.Conv2D(image_shape[2], 1, activation=cfg.output_activation, dtype="float32", name="image")(x)
    return keras.Model(inputs, out, name="generator")


def build_discriminator(cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int,
                        sync_bn: bool = False) -> keras.Model:
    """images (B, H, W, C) in [-1, 1] [, labels] -> logits (B, 1), float32."""
    check_image_shape(image_shape)
    k = upsamplings(image_shape)
    total = (k + 1) * cfg.res_blocks
    image = keras.Input(shape=image_shape, name="image")
    x = layers.Conv2D(channels(cfg.base_channels, k, k), 1)(image)  # R3GAN's extraction layer
    for level in range(k, 0, -1):  # full resolution down to 2s x 2s
        x = _stage(x, cfg, total)
        x = layers.AveragePooling2D(2)(x)
        x = _to_channels(x, channels(cfg.base_channels, level - 1, k))  # at the lower resolution: 4x cheaper
    x = _stage(x, cfg, total)  # (B, s, s, ch)
    x = layers.Flatten()(layers.DepthwiseConv2D(x.shape[1])(x))  # (B, ch): R3GAN's discriminative basis
    if cfg.conditional:
        y = label_input()
        return keras.Model([image, y], projection_logits(x, y, num_classes, "none"), name="discriminator")
    logits = layers.Dense(1, dtype="float32", name="logits")(x)
    return keras.Model(image, logits, name="discriminator")
