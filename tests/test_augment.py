"""Differentiable augmentation of D's inputs (DiffAugment / ADA): seeded, replica-independent, identity at p = 0,
and ADA's p rising when D overfits a tiny dataset."""

from __future__ import annotations

import numpy as np
import pytest

from genai_ray.config import build_config
from genai_ray.errors import UserError

POLICY = ("translation", "cutout", "color")


def _images(n: int = 16, shape: tuple[int, int, int] = (8, 8, 3)):
    import tensorflow as tf

    return tf.constant(np.random.default_rng(0).uniform(-1, 1, (n, *shape)), tf.float32)


def _seed(counter: int):
    import tensorflow as tf

    return tf.constant([7, counter], tf.int64)


def test_augmentation_is_deterministic_given_the_seed_and_differs_across_steps():
    from genai_ray.gan.augment import augment

    x = _images()
    a, again = augment(x, POLICY, 1.0, _seed(0)).numpy(), augment(x, POLICY, 1.0, _seed(0)).numpy()
    other = augment(x, POLICY, 1.0, _seed(1)).numpy()
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, x.numpy()), "p = 1 must change the images"
    assert not np.allclose(a, other), "the next step's counter must draw other transforms"
    # each transform on its own changes most images (translation can draw a zero shift for a few)
    for name in POLICY:
        one = augment(x, (name,), 1.0, _seed(0)).numpy()
        changed = np.abs(one - x.numpy()).reshape(len(one), -1).max(axis=1) > 1e-6
        assert changed.mean() > 0.5, f"{name} changed only {changed.mean():.0%} of the images"


def test_probability_zero_is_the_identity_and_half_applies_to_about_half():
    from genai_ray.gan.augment import augment

    x = _images(400, (8, 8, 1))
    np.testing.assert_array_equal(augment(x, POLICY, 0.0, _seed(3)).numpy(), x.numpy())
    changed = np.abs(augment(x, ("cutout",), 0.5, _seed(3)).numpy() - x.numpy()).reshape(400, -1).max(1) > 0
    # Binomial(400, 0.5): a share outside 0.5 +- 0.1 is a 5-sigma event.
    assert 0.4 < changed.mean() < 0.6


def test_a_replica_augments_its_rows_like_the_whole_batch_does():
    """N workers must see the same transforms as one worker holding the global batch."""
    from genai_ray.gan.augment import augment

    x = _images(8)
    whole = augment(x, POLICY, 0.7, _seed(5)).numpy()
    halves = [augment(x[r * 4 : (r + 1) * 4], POLICY, 0.7, _seed(5), r * 4, 8).numpy() for r in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), whole)


def test_augmentation_is_differentiable():
    import tensorflow as tf

    from genai_ray.gan.augment import augment

    x = _images(4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(augment(x, POLICY, 1.0, _seed(0)) ** 2)
    grad = tape.gradient(y, x)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


def test_ada_raises_p_when_the_discriminator_overfits_a_tiny_dataset():
    from genai_ray.gan.trainer import GanTrainer
    from genai_ray.train.input import make_dataset

    cfg = build_config("tiny", {"train": {"global_batch": 16, "augment": "translation,cutout", "ada_target": 0.6,
                                          "ada_kimg": 0.5, "d_lr": 2e-3}})
    trainer = GanTrainer(cfg, (8, 8, 1), 10)
    assert trainer.augment_stats()["aug/p"] == 0.0  # ADA starts without augmentation
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (16, 8, 8, 1)).astype(np.uint8), rng.integers(0, 10, 16)  # 16 images: D memorises
    trainer.train_steps(iter(trainer.distribute(lambda b: make_dataset(x, y, b, 0))), 60)
    stats = trainer.augment_stats()
    # Each step moves p by 16 / 500 = 0.032; D separates 16 images from noise within a few dozen steps, so r_t
    # sits above 0.6 for most of the 60 steps.
    assert stats["aug/p"] > 0.1, stats


def test_an_unknown_augmentation_is_one_line_naming_the_valid_ones():
    with pytest.raises(UserError, match="unknown augmentation 'flip'.*translation, cutout, color, or none") as err:
        build_config("tiny", {"train": {"augment": "translation,flip"}})
    assert "\n" not in str(err.value)
    assert build_config("tiny", {"train": {"augment": " translation , cutout"}}).train.augment == "translation,cutout"
    assert build_config("tiny", {"train": {"augment": ""}}).train.augment == "none"
