"""Network families and losses: shapes, dtypes, safe_mode round trips, size checks, loss maths."""

from __future__ import annotations

import numpy as np
import pytest

from genai_ray.config import build_config
from genai_ray.errors import UserError
from genai_ray.gan import FAMILIES, dcgan, family


def _cfg(fam: str, conditional: bool, **model):
    return build_config("tiny", {"model": {"family": fam, "conditional": conditional, **model}}).model


@pytest.mark.parametrize("fam,shape", [("mlp", (8, 8, 1)), ("mlp", (6, 10, 3)), ("dcgan", (8, 8, 1)),
                                       ("dcgan", (16, 16, 3)), ("dcgan", (32, 32, 1)), ("dcgan", (28, 28, 1)),
                                       ("dcgan", (12, 12, 3))])
@pytest.mark.parametrize("conditional", [False, True])
def test_generator_and_discriminator_shapes(fam, shape, conditional, tmp_path):
    import keras

    cfg = _cfg(fam, conditional, d_norm="spectral")
    g = family(fam).build_generator(cfg, shape, 10)
    d = family(fam).build_discriminator(cfg, shape, 10)
    z = np.random.default_rng(0).standard_normal((3, cfg.latent_dim)).astype(np.float32)
    labels = np.array([0, 4, 9], np.int32)
    x = np.asarray(g([z, labels] if conditional else z, training=False))
    assert x.shape == (3, *shape) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0  # tanh pixels
    logits = np.asarray(d([x, labels] if conditional else x, training=False))
    assert logits.shape == (3, 1) and logits.dtype == np.float32
    g.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras", safe_mode=True, compile=False)
    again = np.asarray(loaded([z, labels] if conditional else z, training=False))
    np.testing.assert_array_equal(x, again)


def test_conditional_generator_depends_on_label():
    cfg = _cfg("mlp", True)
    g = family("mlp").build_generator(cfg, (8, 8, 1), 10)
    z = np.zeros((2, cfg.latent_dim), np.float32) + 0.5
    x = np.asarray(g([z, np.array([1, 2], np.int32)], training=False))
    assert not np.allclose(x[0], x[1])  # default tolerances (1e-5): an ignored label gives bit-equal rows


@pytest.mark.parametrize("fam", ["mlp", "dcgan"])
def test_a_linear_output_reaches_past_tanhs_range_and_sampling_clips_it(fam):
    from genai_ray.evaluation.evaluate import keras_generate, latents

    cfg = _cfg(fam, False, output_activation="linear")
    g = family(fam).build_generator(cfg, (8, 8, 1), 1)
    last = g.layers[-2 if fam == "mlp" else -1]  # the mlp reshapes after its last dense layer
    last.kernel.assign(last.kernel * 1000.0)  # far past +-1 before any activation
    raw = np.asarray(g(latents(list(range(4)), cfg.latent_dim), training=False))
    assert np.abs(raw).max() > 1.0  # no tanh: unbounded
    images = keras_generate(g, cfg.latent_dim, False)(list(range(4)), None)
    assert images.min() >= 0.0 and images.max() <= 1.0  # clipped where samples leave G


def test_mlp_default_mirrors_the_classic_architecture():
    from keras import layers

    cfg = build_config("tiny", {"model": {"latent_dim": 100, "g_widths": [256, 512, 1024],
                                          "d_widths": [1024, 512, 256]}}).model
    g = family("mlp").build_generator(cfg, (28, 28, 1), 1)
    dense = [layer.units for layer in g.layers if isinstance(layer, layers.Dense)]
    assert g.input_shape == (None, 100) and dense == [256, 512, 1024, 784]


@pytest.mark.parametrize("shape", [(4, 4, 1), (7, 7, 1), (18, 18, 1), (36, 36, 3), (16, 8, 1), (16, 16, 2)])
def test_dcgan_refuses_sizes_it_cannot_make(shape):
    with pytest.raises(UserError, match="dcgan"):
        dcgan.check_image_shape(shape)


def test_dcgan_refusal_lists_the_sizes_it_can_make():
    with pytest.raises(UserError, match=r"s\*2\^k pixels \(s in 4\.\.7, k >= 1: 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, "
                                        r"48, 56, 64, \.\.\.\), but the dataset is 18x18"):
        dcgan.check_image_shape((18, 18, 1))


@pytest.mark.parametrize(("side", "maps"), [(28, [7, 14, 28]), (64, [4, 8, 16, 32, 64]), (48, [6, 12, 24, 48])])
def test_dcgan_generator_doubles_from_s_to_the_side(side, maps):
    """28 = 7 * 4 grows 7 -> 14 -> 28 as the classic MNIST DCGAN does; powers of two still start at 4x4."""
    from keras import layers

    g = dcgan.build_generator(_cfg("dcgan", False), (side, side, 1), 1)
    sizes = [g.layers[i].output.shape[1] for i, layer in enumerate(g.layers)
             if isinstance(layer, layers.Reshape | layers.Conv2DTranspose)]
    assert sizes == maps


def test_registry_holds_every_family():
    assert set(FAMILIES) == {"mlp", "dcgan", "resnet"}


def test_losses_match_their_definitions():
    import tensorflow as tf

    from genai_ray.gan.losses import LOSSES

    real, fake = tf.constant([[2.0], [-1.0]]), tf.constant([[0.5], [-3.0]])
    sp = lambda v: np.log1p(np.exp(v))  # noqa: E731
    # float32 softplus against float64 numpy: a few float32 roundings (6e-8 each), so rtol=1e-6; a wrong sign or
    # a missing term is off by O(1). Hinge and WGAN values are sums of halves, exact in float32: the default rtol.
    np.testing.assert_allclose(LOSSES["bce"].d(real, fake), [sp(-2.0) + sp(0.5), sp(1.0) + sp(-3.0)], rtol=1e-6)
    np.testing.assert_allclose(LOSSES["bce"].g(real, fake), [sp(-0.5), sp(3.0)], rtol=1e-6)
    np.testing.assert_allclose(LOSSES["hinge"].d(real, fake), [0.0 + 1.5, 2.0 + 0.0])
    np.testing.assert_allclose(LOSSES["hinge"].g(real, fake), [-0.5, 3.0])
    np.testing.assert_allclose(LOSSES["wgan-gp"].d(real, fake), [-1.5, -2.0])
    assert LOSSES["wgan-gp"].gradient_penalty and not LOSSES["hinge"].gradient_penalty
    # RpGAN pairs row i of each batch: D's loss softplus(-(2 - 0.5)), softplus(-(-1 - -3)); G's the other way round
    np.testing.assert_allclose(LOSSES["rpgan"].d(real, fake), [sp(-1.5), sp(-2.0)], rtol=1e-6)
    np.testing.assert_allclose(LOSSES["rpgan"].g(real, fake), [sp(1.5), sp(2.0)], rtol=1e-6)
    assert LOSSES["rpgan"].g_reads_real and not any(LOSSES[n].g_reads_real for n in ("bce", "hinge", "wgan-gp"))


def test_gradient_penalty_of_a_linear_critic():
    import tensorflow as tf

    from genai_ray.gan.losses import gradient_penalty

    w = tf.constant(np.full((1, 2, 2, 1), 0.25, np.float32))  # ||w|| = 0.5
    critic = lambda x: tf.reduce_sum(x * w, axis=[1, 2, 3])  # noqa: E731
    real = tf.random.normal([3, 2, 2, 1], seed=1)
    fake = tf.random.normal([3, 2, 2, 1], seed=2)
    penalty = gradient_penalty(critic, real, fake, tf.constant([0.0, 0.3, 1.0]))
    # (0.5 - 1)^2 whatever alpha is. float32 gradients of a linear critic and the 1e-12 inside the sqrt are off by
    # ~1e-7; rtol=1e-4 is loose on purpose, while a norm that is not per example or not squared is off by > 10%.
    np.testing.assert_allclose(penalty, [0.25, 0.25, 0.25], rtol=1e-4)


def test_r2_penalty_is_zero_for_a_constant_critic_and_the_squared_input_gradient_otherwise():
    import tensorflow as tf

    from genai_ray.gan.losses import r2_penalty

    fake = tf.constant(np.random.default_rng(1).uniform(-1, 1, (3, 4, 4, 1)), tf.float32)
    w = tf.constant(np.random.default_rng(0).normal(size=(1, 4, 4, 1)), tf.float32)
    critics = {
        "ignores x": lambda x: tf.fill([3, 1], 0.7),  # no path from x: zero, not None
        "flat in x": lambda x: 0.0 * tf.reduce_sum(x, axis=[1, 2, 3]) + 0.7,
        "linear": lambda x: tf.reduce_sum(w * x, axis=[1, 2, 3]),
        "quadratic": lambda x: tf.reduce_sum(x**2, axis=[1, 2, 3]),
    }
    out = {}
    for name, critic in critics.items():
        with tf.GradientTape() as tape:
            tape.watch(fake)
            logits = critic(fake)
        out[name] = r2_penalty(tape, logits, fake).numpy()
    np.testing.assert_array_equal(out["ignores x"], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["flat in x"], [0.0, 0.0, 0.0])
    # float32 sums of 16 squares against the same in float32: rtol 1e-5; a missing square or a norm is off by > 10%
    np.testing.assert_allclose(out["linear"], [float(tf.reduce_sum(w**2))] * 3, rtol=1e-5)
    np.testing.assert_allclose(out["quadratic"], tf.reduce_sum((2 * fake) ** 2, axis=[1, 2, 3]).numpy(), rtol=1e-5)
    assert (out["quadratic"] > 0).all()
