"""R3GAN's annealing: train.lr_decay and train.gamma_decay take the learning rates and R1/R2's gammas along half a
cosine to a fraction of their configured values, tick by tick through the real loop (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from genai_ray.config import build_config
from genai_ray.gan.trainer import cosine_decay
from genai_ray.train.loop import MemoryInput, RunPlan, run_length, set_up, train


def test_cosine_decay_runs_from_one_to_its_end() -> None:
    assert cosine_decay(0.0, 0.25) == 1.0
    assert cosine_decay(0.5, 0.25) == pytest.approx(0.625)
    assert cosine_decay(1.0, 0.25) == pytest.approx(0.25)
    assert cosine_decay(1.7, 0.25) == pytest.approx(0.25), "past the end it stays at the end"
    assert cosine_decay(0.3, 1.0) == 1.0, "a decay of 1 is constant"
    values = [cosine_decay(p, 0.1) for p in np.linspace(0, 1, 11)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


def _reports(train_overrides: dict) -> tuple[list[dict], RunPlan]:
    cfg = build_config("tiny", {"model": {"d_norm": "none"},
                                "train": {"kimg": 0.16, "global_batch": 16, "checkpoint_every": 1, "loss": "rpgan",
                                          "r1_gamma": 0.5, "r2_gamma": 0.5, **train_overrides}})
    length = run_length(0.16, None, 64, 16)
    plan = RunPlan(run_uri="unused", image_shape=(8, 8, 1), num_classes=1, steps_per_epoch=2, dataset_name="x",
                   ticks=5, total_steps=length.total_steps, in_kimg=True)
    session = set_up(cfg, plan, None, rank=1, checkpoint_folder=None, exploit=False)  # rank 1: no reporting
    rng = np.random.default_rng(0)
    data = MemoryInput((rng.integers(0, 256, (64, 8, 8, 1)).astype(np.uint8), np.zeros(64, np.int64)), seed=0, rank=1)
    reports: list[dict] = []
    train(session, data, lambda metrics, folder, out=reports: out.append(metrics))
    return reports, plan


def test_the_loop_decays_the_rates_and_gammas_tick_by_tick() -> None:
    reports, plan = _reports({"lr_decay": 0.25, "gamma_decay": 0.1, "g_lr": 4e-4, "d_lr": 2e-4})
    assert len(reports) == 5 and plan.total_steps == 10
    for tick, r in enumerate(reports):
        progress = tick * 2 / plan.total_steps  # each tick runs at its first step's value
        assert r["hp/g_lr"] == pytest.approx(4e-4 * cosine_decay(progress, 0.25), rel=1e-5)
        assert r["hp/d_lr"] == pytest.approx(2e-4 * cosine_decay(progress, 0.25), rel=1e-5)
        assert r["hp/gamma_scale"] == pytest.approx(cosine_decay(progress, 0.1), rel=1e-5)
    assert reports[-1]["hp/g_lr"] < 0.4 * 4e-4, "the last tick runs near the end value"


def test_without_decay_the_rates_stay_and_no_gamma_scale_is_reported() -> None:
    reports, _ = _reports({})
    assert len(reports) == 5 and all(r["hp/g_lr"] == pytest.approx(2e-4, rel=1e-6) for r in reports)
    assert all("hp/gamma_scale" not in r for r in reports)


def test_a_decayed_gamma_regularises_d_as_that_smaller_gamma_does() -> None:
    """gamma 100 at a scale of 0.01 makes the update gamma 1 makes, and not the one gamma 100 makes."""
    import tensorflow as tf

    from genai_ray.gan.trainer import GanTrainer

    def d_after_one_step(gamma: float, progress: float | None, **train_overrides) -> np.ndarray:
        batch = (np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8), np.zeros(8, np.int64))
        cfg = build_config("tiny", {"model": {"d_norm": "none"},
                                    "train": {"global_batch": 8, "workers": 1, "loss": "rpgan", "r1_gamma": gamma,
                                              "r2_gamma": gamma, **train_overrides}})
        trainer = GanTrainer(cfg, (8, 8, 1), 1)
        if progress is not None:
            trainer.schedule(progress)
        trainer.train_steps(iter(trainer.distribute(lambda b: tf.data.Dataset.from_tensors(batch).repeat())), 1)
        return trainer.d.get_weights()[0]

    decayed = d_after_one_step(100.0, 1.0, gamma_decay=0.01)
    np.testing.assert_allclose(decayed, d_after_one_step(1.0, None), atol=1e-6)
    assert np.abs(decayed - d_after_one_step(100.0, None)).max() > 1e-4
