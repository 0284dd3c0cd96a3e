"""Differentiable augmentation of the discriminator's inputs, for small datasets.

- DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training",
  arXiv:2006.10738): random translation, cutout and colour transforms applied to real AND fake images before
  D, with G's gradients flowing through them, so D cannot memorise the few real images it sees.
- ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data", arXiv:2006.06676):
  each transform is applied to each image with probability p, and p is adapted during training from the
  overfitting heuristic r_t = E[sign(D(real))] toward a target (0.6 in the paper). Below p ~ 0.8 the
  transforms do not leak into G's samples.

Pure functions of (images, policy, p, seed): every random number comes from a stateless generator seeded by
``seed`` and is drawn for the whole GLOBAL batch, then sliced to this replica's rows, so N workers augment
exactly like one worker holding the whole batch. Images are in [-1, 1], NHWC.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from genai_ray.config import AUGMENTATIONS

TRANSLATION_RATIO = 0.125  # DiffAugment's: shift by up to 1/8 of the image side
CUTOUT_RATIO = 0.5  # DiffAugment's: erase a square of half the image side


def _translation(x: tf.Tensor, u: Callable[[int], tf.Tensor]) -> tf.Tensor:
    """Integer shifts in [-s, s] per image along each axis; pixels shifted in repeat the edge (the background of
    centred images), where DiffAugment pads with zeros."""
    _, h, w, _ = x.shape
    sy, sx = max(1, round(h * TRANSLATION_RATIO)), max(1, round(w * TRANSLATION_RATIO))
    dy = tf.cast(tf.floor(u(0) * (2 * sy + 1)), tf.int32) - sy  # (B,)
    dx = tf.cast(tf.floor(u(1) * (2 * sx + 1)), tf.int32) - sx
    rows = tf.clip_by_value(tf.range(h)[None, :] - dy[:, None], 0, h - 1)  # (B, H)
    cols = tf.clip_by_value(tf.range(w)[None, :] - dx[:, None], 0, w - 1)  # (B, W)
    x = tf.gather(x, rows, axis=1, batch_dims=1)
    return tf.gather(x, cols, axis=2, batch_dims=1)


def _cutout(x: tf.Tensor, u: Callable[[int], tf.Tensor]) -> tf.Tensor:
    """Sets a square of half the image side, centred anywhere in the image, to 0 (mid-grey), as DiffAugment."""
    _, h, w, _ = x.shape
    ch, cw = max(1, round(h * CUTOUT_RATIO)), max(1, round(w * CUTOUT_RATIO))
    cy = tf.cast(tf.floor(u(0) * h), tf.int32)[:, None]  # (B, 1) centre
    cx = tf.cast(tf.floor(u(1) * w), tf.int32)[:, None]
    inside_y = tf.abs(tf.range(h)[None, :] - cy) <= (ch - 1) // 2  # (B, H)
    inside_x = tf.abs(tf.range(w)[None, :] - cx) <= (cw - 1) // 2  # (B, W)
    hole = tf.logical_and(inside_y[:, :, None], inside_x[:, None, :])  # (B, H, W)
    return x * tf.cast(tf.logical_not(hole), x.dtype)[..., None]


def _color(x: tf.Tensor, u: Callable[[int], tf.Tensor]) -> tf.Tensor:
    """DiffAugment's brightness (+[-0.5, 0.5]), saturation (x[0, 2], RGB only) and contrast (x[0.5, 1.5])."""
    def r(i: int) -> tf.Tensor:
        return tf.reshape(u(i), [-1, 1, 1, 1])

    x = x + (r(0) - 0.5)
    if x.shape[-1] == 3:
        mean = tf.reduce_mean(x, axis=3, keepdims=True)
        x = (x - mean) * (r(1) * 2.0) + mean
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * (r(2) + 0.5) + mean


TRANSFORMS: dict[str, Callable[[tf.Tensor, Callable[[int], tf.Tensor]], tf.Tensor]] = {
    "translation": _translation,
    "cutout": _cutout,
    "color": _color,
}
assert tuple(TRANSFORMS) == AUGMENTATIONS, "the config's augmentation names and the transforms must match"
def augment_draws(policy: tuple[str, ...], seed: tf.Tensor, total: int) -> tf.Tensor:
    """(len(policy), total, 4) uniforms for a global batch of ``total`` rows: per transform, column 0 decides
    whether it applies to a row, columns 1.. are its parameters. ``seed`` is an int64 pair."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=len(policy))
    return tf.stack([tf.random.stateless_uniform([total, 4], seed=seeds[i]) for i in range(len(policy))])


def augment(images: tf.Tensor, policy: tuple[str, ...], p: tf.Tensor | float, seed: tf.Tensor,
            offset: tf.Tensor | int = 0, global_batch: int | None = None) -> tf.Tensor:
    """Apply each transform of ``policy`` to each image with probability ``p``.

    ``images`` are rows [offset, offset + B) of a global batch of ``global_batch`` (default: B, i.e. the whole
    batch); ``seed`` is an int64 pair for ``tf.random.stateless_uniform``. Same (seed, row) -> same transform,
    whatever the number of replicas. p = 0 returns the images unchanged.
    """
    if not policy:
        return images
    total = global_batch or (images.shape[0] if images.shape[0] is not None else tf.shape(images)[0])
    return augment_with(images, policy, p, augment_draws(policy, seed, total), offset)


def augment_with(images: tf.Tensor, policy: tuple[str, ...], p: tf.Tensor | float, draws: tf.Tensor,
                 offset: tf.Tensor | int = 0) -> tf.Tensor:
    """``augment`` with its random numbers given: ``draws`` from ``augment_draws`` for the global batch, of which
    ``images`` are the rows [offset, offset + B)."""
    if not policy:
        return images
    b = images.shape[0] if images.shape[0] is not None else tf.shape(images)[0]
    x = tf.cast(images, tf.float32)
    p = tf.cast(p, tf.float32)
    for i, name in enumerate(policy):
        rows = draws[i, offset : offset + b]  # (B, 4)
        applied = TRANSFORMS[name](x, lambda k, d=rows: d[:, k + 1])
        on = tf.reshape(rows[:, 0] < p, [-1, 1, 1, 1])
        x = tf.where(on, applied, x)
    return tf.cast(x, images.dtype)


def ada_adjust(p: tf.Tensor, r_t: tf.Tensor, target: float, images: int, ada_kimg: float) -> tf.Tensor:
    """ADA's update: p moves by sign(r_t - target) x images / (ada_kimg x 1000), clipped to [0, 1], so p can
    cross [0, 1] in ``ada_kimg`` thousand real images."""
    step = tf.sign(tf.cast(r_t, tf.float32) - target) * (images / (ada_kimg * 1000.0))
    return tf.clip_by_value(tf.cast(p, tf.float32) + step, 0.0, 1.0)
