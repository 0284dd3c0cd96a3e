"""Adversarial losses as pure functions of the discriminator's logits, per example (B,).

Per-example losses let the training step scale by the GLOBAL batch (``tf.nn.compute_average_loss``), so
N workers give the same update as one. Penalties are separate functions, weighted in the config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf


def _flat(logits: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.cast(logits, tf.float32), [-1])


def bce_d(real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    """-log D(x) - log(1 - D(G(z))) (Goodfellow et al. 2014)."""
    return tf.nn.softplus(-_flat(real)) + tf.nn.softplus(_flat(fake))


def bce_g(real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    """Non-saturating generator loss: -log D(G(z)). ``real`` is unused (the signature is every G loss's)."""
    return tf.nn.softplus(-_flat(fake))


def hinge_d(real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    """Hinge loss (Lim & Ye 2017, arXiv:1705.02894; used by SN-GAN)."""
    return tf.nn.relu(1.0 - _flat(real)) + tf.nn.relu(1.0 + _flat(fake))


def hinge_g(real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    return -_flat(fake)


def wgan_d(real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    """Wasserstein critic loss (Arjovsky et al. 2017); pair it with ``gradient_penalty``."""
    return _flat(fake) - _flat(real)


def wgan_g(real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    return -_flat(fake)


def rpgan_d(real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    """Relativistic pairing loss, softplus(-(D(x_i) - D(G(z_i)))) for pair i (Jolicoeur-Martineau 2018,
    arXiv:1807.00734). Its landscape has no bad basins, the mode collapse of separable losses (Sun et al. 2020,
    arXiv:2011.04926); R3GAN (Huang et al. 2024, arXiv:2501.05441) pairs it with R1 and R2 to make it converge."""
    return tf.nn.softplus(_flat(fake) - _flat(real))


def rpgan_g(real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    """RpGAN's generator loss, softplus(-(D(G(z_i)) - D(x_i))): G needs D's logits on the paired real batch too."""
    return tf.nn.softplus(_flat(real) - _flat(fake))


@dataclass(frozen=True)
class Loss:
    d: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (real_logits, fake_logits) -> (B,)
    g: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (real_logits, fake_logits) -> (B,)
    gradient_penalty: bool = False  # WGAN-GP's penalty at interpolates, weighted by train.gp_weight
    g_reads_real: bool = False  # G's loss uses D(real): the G step must run D on a real batch too


LOSSES: dict[str, Loss] = {
    "bce": Loss(bce_d, bce_g),
    "hinge": Loss(hinge_d, hinge_g),
    "wgan-gp": Loss(wgan_d, wgan_g, gradient_penalty=True),
    "rpgan": Loss(rpgan_d, rpgan_g, g_reads_real=True),
}


def gradient_penalty(critic: Callable[[tf.Tensor], tf.Tensor], real: tf.Tensor, fake: tf.Tensor,
                     alpha: tf.Tensor) -> tf.Tensor:
    """(||grad_x D(x_hat)||_2 - 1)^2 per example (Gulrajani et al. 2017, arXiv:1704.00028).

    ``alpha`` (B,) must be drawn from Uniform[0, 1], as the paper says (the keras-io example draws it from a
    normal distribution, which is a bug). x_hat = alpha * real + (1 - alpha) * fake.
    """
    alpha = tf.reshape(alpha, [-1, 1, 1, 1])
    x_hat = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        logits = critic(x_hat)
    grads = tape.gradient(logits, x_hat)
    norms = tf.sqrt(tf.reduce_sum(tf.square(tf.cast(grads, tf.float32)), axis=[1, 2, 3]) + 1e-12)
    return tf.square(norms - 1.0)


def _squared_input_gradient(tape: tf.GradientTape, logits: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    # A non-scalar target is summed: row i gives dD(x_i)/dx_i. A D that ignores its input has no path from x to the
    # logits, so its gradient is zero, not None.
    grads = tape.gradient(logits, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return tf.reduce_sum(tf.square(tf.cast(grads, tf.float32)), axis=[1, 2, 3])


def r1_penalty(real_tape: tf.GradientTape, real_logits: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    """||grad_x D(x)||^2 per real example (Mescheder et al. 2018, arXiv:1801.04406): StyleGAN2's D regulariser.

    ``real_tape`` must have watched ``real`` and recorded ``real_logits``; the caller scales it by gamma / 2.
    """
    return _squared_input_gradient(real_tape, real_logits, real)


def r2_penalty(fake_tape: tf.GradientTape, fake_logits: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
    """||grad_x D(x)||^2 per generated example: R1's twin at G's images (Mescheder et al. 2018; R3GAN uses both).

    ``fake`` must be detached from G (a constant to ``fake_tape``, which watched it and recorded ``fake_logits``),
    so the penalty shapes D only; the caller scales it by gamma / 2.
    """
    return _squared_input_gradient(fake_tape, fake_logits, fake)


def mode_seeking_penalty(images: tf.Tensor, z: tf.Tensor, eps: float = 1e-5) -> tf.Tensor:
    """1 / (|G(z_a) - G(z_b)| / |z_a - z_b|) per pair of rows (2j, 2j+1): mode-seeking regularisation (Mao et al.
    2019, arXiv:1903.05628). Large when two different latents give nearly the same image, i.e. when G collapses a
    class to a few modes; on digits it trades some precision for recall (docs/training.md).

    Pairs are adjacent rows, so with an even per-replica batch every pair lives on one replica and N workers
    compute the same penalty as one. Returns (B/2,).
    """
    images = tf.cast(images, tf.float32)
    pixels = tf.reduce_mean(tf.abs(images[0::2] - images[1::2]), axis=[1, 2, 3])
    latents = tf.reduce_mean(tf.abs(z[0::2] - z[1::2]), axis=1)
    return 1.0 / (pixels / latents + eps)
