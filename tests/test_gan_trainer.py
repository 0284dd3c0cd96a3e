"""The training step: exact 1-vs-2-replica equivalence, checkpoints, losses moving, options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genai_ray.config import build_config

SCRIPT = Path(__file__).parent / "scripts" / "replica_equivalence.py"
COLLECTIVES = Path(__file__).parent / "scripts" / "step_collectives.py"


# Each case trains in its own 2-replica TensorFlow process (10-40 s); test-fast keeps the default preset's shape.
SLOW_CASE = pytest.mark.slow


@pytest.mark.parametrize("overrides", [
    # batch norm in G (synchronised), spectral norm in D, EMA, WGAN-GP with its penalty, two D steps
    pytest.param({"model": {"g_norm": "batch", "d_norm": "spectral"},
                  "train": {"loss": "wgan-gp", "d_steps": 2, "ema_decay": 0.9, "global_batch": 16, "workers": 1}},
                 id="mlp-wgan-gp", marks=SLOW_CASE),
    # conditional DCGAN with hinge loss and batch norm in both networks
    pytest.param({"model": {"family": "dcgan", "conditional": True, "g_norm": "batch", "d_norm": "batch"},
                  "train": {"loss": "hinge", "global_batch": 8, "workers": 1}},
                 id="dcgan-conditional-hinge", marks=SLOW_CASE),
    # the default preset's shape with the mode-seeking term: its pairs must not straddle replicas
    pytest.param({"model": {"conditional": True, "g_norm": "batch", "d_norm": "spectral"},
                  "train": {"loss": "hinge", "mode_seeking": 0.5, "global_batch": 16, "workers": 1}},
                 id="mlp-conditional-mode-seeking"),
    # D's augmentation with ADA: transforms drawn for the global batch, then sliced per replica; r_t all-reduced
    pytest.param({"model": {"conditional": True, "g_norm": "none", "d_norm": "spectral"},
                  "train": {"loss": "hinge", "augment": "translation,cutout,color", "ada_target": 0.6, "ada_kimg": 0.01,
                            "global_batch": 16, "workers": 1}},
                 id="mlp-augment-ada", marks=SLOW_CASE),
    # R1 on augmented reals: a gradient of D's input gradient, per replica
    pytest.param({"model": {"conditional": True, "g_norm": "none", "d_norm": "none"},
                  "train": {"loss": "hinge", "r1_gamma": 1.0, "augment": "translation", "augment_p": 0.5,
                            "global_batch": 16, "workers": 1}},
                 id="mlp-r1", marks=SLOW_CASE),
    # R3GAN's recipe: residual nets, RpGAN (G's loss reads D on a real batch too), R1 at reals and R2 at fakes
    pytest.param({"model": {"family": "resnet", "conditional": True, "base_channels": 4, "res_expansion": 2,
                            "res_group_channels": 4},
                  "train": {"loss": "rpgan", "r1_gamma": 1.0, "r2_gamma": 1.0, "augment": "translation",
                            "augment_p": 0.5, "global_batch": 16, "workers": 1}},
                 id="resnet-rpgan-r1-r2"),
    # train.jit_compile: one replica runs the XLA step, two fall back to the plain step, and both agree
    pytest.param({"model": {"family": "dcgan", "conditional": True, "g_norm": "none", "d_norm": "spectral"},
                  "train": {"loss": "hinge", "augment": "translation,cutout,color", "augment_p": 0.5,
                            "jit_compile": True, "global_batch": 8, "workers": 1}},
                 id="dcgan-xla-one-replica", marks=SLOW_CASE),
])
def test_one_and_two_replicas_make_the_same_first_update(overrides):
    out = subprocess.run([sys.executable, str(SCRIPT), json.dumps(overrides)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(next(line[7:] for line in out.stdout.splitlines() if line.startswith("RESULT ")))
    print("RESULT", result)  # the observed differences, shown by `pytest -s` or on failure
    assert result["replicas"] == 2
    # Tolerances: measured spread with a margin, well below what a broken split gives. One Adam step moves a
    # weight by about the learning rate (2e-4) whatever its gradient's size, so a replica bug (noise or labels
    # shared between replicas, a loss scaled by the replica batch) flips gradient signs and moves weights by
    # ~1e-4 and losses by ~1e-2 or more. Float32 reduction order (2 partial sums instead of 1; synchronised
    # batch-norm moments) differs by a few ulp: at most 1e-6 on weights and 1.6e-7 on a loss (a mean of O(1)
    # logits, so the error is absolute: relative to a mean near 0, like loss_g's -0.016, it reached 1.04e-5).
    # 1e-5 gives a 10x margin on weights and 60x on losses, and stays 10x below a broken split.
    assert result["moved"] > 1e-4, "the step did not change G's weights, so the comparison proves nothing"
    for net in ("g", "d", "ema"):
        assert result[net] < 1e-5, f"{net} differs by {result[net]} between 1 and 2 replicas"
    np.testing.assert_allclose(*result["loss_d"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(*result["loss_g"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # its own 2-process TensorFlow cluster
def test_a_two_worker_step_all_reduces_dense_gradients_and_gathers_nothing():
    """An embedding's sparse gradient would add all-gathers (each a ~2 ms round trip) to every step."""
    from tests.conftest import free_port

    ports = [str(free_port()), str(free_port())]
    workers = [subprocess.Popen([sys.executable, str(COLLECTIVES), str(i), *ports], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-2000:]
        counts = json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT ")))
        assert counts.get("CollectiveReduceV2", 0) > 0, f"no all-reduce found in the step: {counts}"
        assert "CollectiveGatherV2" not in counts, f"the step all-gathers: {counts}"


def _data(n: int = 64):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, 8, 8, 1)).astype(np.uint8), rng.integers(0, 10, n)


def _trainer(**train):
    from genai_ray.gan.trainer import GanTrainer

    cfg = build_config("tiny", {"model": {"conditional": True}, "train": {"global_batch": 16, **train}})
    return GanTrainer(cfg, (8, 8, 1), 10)


def _iterator(trainer, seed=0):
    from genai_ray.train.input import make_dataset

    x, y = _data()
    return iter(trainer.distribute(lambda b: make_dataset(x, y, b, seed)))


def test_checkpoint_restores_every_part(tmp_path):
    a = _trainer()
    a.train_steps(_iterator(a), 3)
    path = a.checkpoint.write(str(tmp_path / "ckpt"))
    b = _trainer()
    b.checkpoint.read(path).assert_existing_objects_matched()
    assert int(b.step.numpy()) == 3
    for net in ("g", "d", "ema"):
        for p, q in zip(getattr(a, net).get_weights(), getattr(b, net).get_weights(), strict=True):
            np.testing.assert_array_equal(p, q)
    for p, q in zip(a.d_opt.variables, b.d_opt.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
    # Restored state continues exactly like the original: same noise counter, same weights.
    a.train_steps(_iterator(a, seed=5), 2)
    b.train_steps(_iterator(b, seed=5), 2)
    # Same graph, same inputs: at most ulps of float32 weights of size < 1 (thread scheduling of reductions). A
    # restore that missed a part (Adam moments, the noise counter) moves weights by about the learning rate, 2e-4.
    np.testing.assert_allclose(a.g.get_weights()[0], b.g.get_weights()[0], atol=1e-6)


def test_several_steps_per_call_trace_the_step_once_and_return_the_last_steps_losses():
    """Tracing is most of a run's first call, so the step must be traced once, not twice."""
    fused = _trainer()
    traced = []
    step = fused._replica_step
    fused._replica_step = lambda *args: traced.append(1) or step(*args)
    last = fused.train_steps(_iterator(fused), 3)
    fused.train_steps(_iterator(fused), 5)  # another n reuses the same graph
    assert len(traced) == 1, f"the GAN step was traced {len(traced)} times"
    assert int(fused.step.numpy()) == 8
    single = _trainer()
    iterator = _iterator(single)
    one_at_a_time = [single.train_steps(iterator, 1) for _ in range(3)]
    assert last == one_at_a_time[-1] != one_at_a_time[0]


def test_ema_lags_the_generator_and_training_moves_the_losses():
    t = _trainer(ema_decay=0.9)
    first = t.train_steps(_iterator(t), 1)
    later = t.train_steps(_iterator(t), 20)
    assert (first.d, first.g) != (later.d, later.g)
    g, ema = t.g.get_weights()[0], t.ema.get_weights()[0]
    assert not np.allclose(g, ema)  # the EMA is a smoothed copy: 21 steps of 2e-4 apart, far above rtol 1e-5
    assert t.sampler is t.ema
    assert _trainer(ema_decay=0.0).sampler.name == "generator"


def test_ema_rampup_caps_the_half_life_early_and_leaves_the_decay_later():
    ramped, plain = _trainer(ema_decay=0.999), _trainer(ema_decay=0.999, ema_rampup=0.0)
    for t in (ramped, plain):
        t.train_steps(_iterator(t), 1)
    # after one step the ramped EMA is G (half-life 0.05 steps: decay 0.5**20); the plain one still holds the init
    np.testing.assert_allclose(ramped.ema.get_weights()[0], ramped.g.get_weights()[0], atol=1e-7)
    assert not np.allclose(plain.ema.get_weights()[0], plain.g.get_weights()[0], atol=1e-6)
    ramped.step.assign(99)  # half-life 100 x 0.05 = 5 steps
    assert float(ramped._ema_decay()) == pytest.approx(0.5 ** (1 / 5), rel=1e-6)
    ramped.step.assign(20_000)  # past 693 steps (0.999's half-life) / 0.05: the configured decay
    assert float(ramped._ema_decay()) == pytest.approx(0.999, rel=1e-7)
    assert float(plain._ema_decay()) == pytest.approx(0.999, rel=1e-7)


@pytest.mark.parametrize("precision", ["float16", "bfloat16", True])
def test_mixed_precision_step_runs_with_float32_outputs(precision):
    import keras

    t = _trainer(mixed_precision=precision)
    losses = t.train_steps(_iterator(t), 2)
    assert np.isfinite(losses.d) and np.isfinite(losses.g)
    assert t.g.layers[-1].dtype_policy.name == "float32"  # tanh output kept in float32
    compute = "float16" if precision is True else precision  # true, as configs said before bfloat16, is float16
    assert any(layer.dtype_policy.name == f"mixed_{compute}" for layer in t.g.layers)
    scaled = isinstance(t.g_opt, keras.optimizers.LossScaleOptimizer)
    assert scaled == (compute == "float16"), "float16 needs loss scaling; bfloat16 has float32's range"
    assert keras.mixed_precision.global_policy().name == "float32"  # the global policy was restored


def test_dataset_passes_are_seeded_permutations_of_whole_batches():
    from genai_ray.train.input import make_dataset

    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    y = np.arange(10)
    take = lambda seed: [(np.asarray(a), np.asarray(b)) for a, b in make_dataset(x, y, 4, seed).take(4)]  # noqa: E731
    first, again, other = take(3), take(3), take(4)
    for (a, b), (c, d) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert any(not np.array_equal(a, c) for (a, _), (c, _) in zip(first, other, strict=True))
    for images, labels in first:
        assert images.shape == (4, 1, 1, 1) and (images[:, 0, 0, 0] == labels).all()  # rows stay paired
    one_pass = np.concatenate([first[0][1], first[1][1]])
    assert len(set(one_pass.tolist())) == 8  # 2 whole batches per pass of 10 rows, no repeats within a pass
    import tensorflow as tf

    # declared endless, so a multi-worker iterator needs no per-step "out of data?" all-reduce
    assert make_dataset(x, y, 4, 0).cardinality() == tf.data.INFINITE_CARDINALITY


def test_mode_seeking_penalty_punishes_pairs_that_collapse_to_one_image():
    import tensorflow as tf

    from genai_ray.gan.losses import mode_seeking_penalty

    z = tf.constant(np.random.default_rng(0).normal(size=(8, 4)), tf.float32)
    base = tf.constant(np.random.default_rng(1).uniform(-1, 1, (8, 8, 8, 1)), tf.float32)
    collapsed = tf.repeat(base[0::2], 2, axis=0)  # each pair (2j, 2j+1) is one image twice
    diverse = mode_seeking_penalty(base, z).numpy()
    assert diverse.shape == (4,)
    assert (mode_seeking_penalty(collapsed, z).numpy() > 1000 * diverse).all(), "collapse must cost far more"
    # Halving the pixel distance doubles 1 / (ratio + eps) up to eps / ratio ~ 2e-5 (eps = 1e-5, ratio ~ 0.5);
    # rtol=1e-3 leaves 50x, while a penalty that is not 1/ratio (1/ratio^2, ratio) is off by 2x.
    assert np.allclose(mode_seeking_penalty(base * 0.5, z).numpy(), 2 * diverse, rtol=1e-3), "1/ratio scaling"


def test_r1_penalty_is_the_squared_norm_of_ds_gradient_at_each_real_image():
    import tensorflow as tf

    from genai_ray.gan.losses import r1_penalty

    w = tf.constant(np.random.default_rng(0).normal(size=(1, 4, 4, 1)), tf.float32)
    real = tf.constant(np.random.default_rng(1).uniform(-1, 1, (3, 4, 4, 1)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(real)
        logits = tf.reduce_sum(w * real, axis=[1, 2, 3]) + tf.reduce_sum(real**2, axis=[1, 2, 3])  # grad w + 2x
    expected = tf.reduce_sum(tf.square(w + 2 * real), axis=[1, 2, 3]).numpy()
    np.testing.assert_allclose(r1_penalty(tape, logits, real).numpy(), expected, rtol=1e-5)


def _d_after_one_step(**train) -> np.ndarray:
    import tensorflow as tf

    from genai_ray.gan.trainer import GanTrainer

    batch = (np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8), np.zeros(8, np.int64))
    cfg = build_config("tiny", {"model": {"d_norm": "none"}, "train": {"global_batch": 8, "workers": 1, **train}})
    trainer = GanTrainer(cfg, (8, 8, 1), 1)
    trainer.train_steps(iter(trainer.distribute(lambda b: tf.data.Dataset.from_tensors(batch).repeat())), 1)
    return trainer.d.get_weights()[0]


# Adam's first step moves each weight by the learning rate (2e-4) along its gradient's sign, so a penalty that
# reaches D flips some signs and those weights end 4e-4 apart, far above float noise.
def test_r1_gamma_reaches_ds_update():
    assert np.abs(_d_after_one_step(r1_gamma=100.0) - _d_after_one_step(r1_gamma=0.0)).max() > 1e-4


def test_r2_gamma_reaches_ds_update():
    assert np.abs(_d_after_one_step(loss="rpgan", r2_gamma=100.0) - _d_after_one_step(loss="rpgan")).max() > 1e-4


def test_an_unset_gp_weight_is_wgan_gps_10():
    unset = _d_after_one_step(loss="wgan-gp")
    # same graph, same inputs: ulps apart at most (reduction order across threads); another weight is 4e-4 apart
    np.testing.assert_allclose(unset, _d_after_one_step(loss="wgan-gp", gp_weight=10.0), atol=1e-6)
    assert np.abs(unset - _d_after_one_step(loss="wgan-gp", gp_weight=0.0)).max() > 1e-4


def test_rpgan_refuses_wgan_gps_penalty_weight_only_when_set():
    from genai_ray.errors import UserError

    assert build_config("tiny", {"train": {"loss": "rpgan"}}).train.gp_weight is None
    with pytest.raises(UserError, match="train.gp_weight=5 weights WGAN-GP's penalty"):
        build_config("tiny", {"train": {"loss": "rpgan", "gp_weight": 5}})
    assert build_config("tiny", {"train": {"loss": "wgan-gp", "gp_weight": 5}}).train.gp_weight == 5


def test_mode_seeking_needs_even_batches_per_worker():
    from genai_ray.errors import UserError

    with pytest.raises(UserError, match="odd per-worker batch"):
        build_config("tiny", {"train": {"mode_seeking": 0.1, "global_batch": 6, "workers": 2}})


@pytest.mark.parametrize("model, train", [
    # the fitted colour default's shape: conditional DCGAN, spectral-norm D, hinge, EMA, mode seeking, and every
    # augmentation applied to half the rows (its random draws must reach the compiled step unchanged)
    ({"family": "dcgan", "conditional": True, "g_norm": "none", "d_norm": "spectral"},
     {"loss": "hinge", "augment": "translation,cutout,color", "augment_p": 0.5, "mode_seeking": 0.2,
      "ema_decay": 0.9}),
    # WGAN-GP's interpolation stream, two D steps, batch norm in G, ADA's update of p
    ({"g_norm": "batch", "d_norm": "none"},
     {"loss": "wgan-gp", "d_steps": 2, "augment": "translation", "ada_target": 0.6, "ada_kimg": 0.05}),
], ids=["dcgan-conditional-hinge-augment", "mlp-wgan-gp-ada"])
def test_the_xla_step_makes_the_same_updates_as_the_plain_step(model, train):
    from genai_ray.gan.trainer import GanTrainer

    shape = (8, 8, 3) if model.get("family") == "dcgan" else (8, 8, 1)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (64, *shape)).astype(np.uint8), rng.integers(0, 10, 64)

    def trained(jit: bool):
        from genai_ray.train.input import make_dataset

        cfg = build_config("tiny", {"model": {"conditional": True, **model},
                                    "train": {"global_batch": 16, "jit_compile": jit, **train}})
        trainer = GanTrainer(cfg, shape, 10)
        losses = trainer.train_steps(iter(trainer.distribute(lambda b: make_dataset(x, y, b, 0))), 4)
        return trainer, losses

    (plain, plain_losses), (xla, xla_losses) = trained(False), trained(True)
    # Four Adam steps move a weight by up to ~4 x 2e-4; XLA's own random numbers for the same seeds (the bug this
    # guards against) moved them by 2e-3. Fused float32 arithmetic differs by ulps: measured <= 3e-7.
    moved = max(float(np.abs(p - q).max()) for p, q in zip(
        plain.g.trainable_weights, GanTrainer(plain.cfg, shape, 10).g.trainable_weights, strict=True))
    assert moved > 1e-4, "training did not move G, so the comparison proves nothing"
    for net in ("g", "d", "ema"):
        for p, q in zip(getattr(plain, net).get_weights(), getattr(xla, net).get_weights(), strict=True):
            np.testing.assert_allclose(p, q, atol=1e-5, err_msg=f"{net} differs between the XLA and plain steps")
    np.testing.assert_allclose([plain_losses.d, plain_losses.g], [xla_losses.d, xla_losses.g], rtol=1e-4, atol=1e-5)
    assert float(plain.aug_p.numpy()) == pytest.approx(float(xla.aug_p.numpy()), abs=1e-6)
