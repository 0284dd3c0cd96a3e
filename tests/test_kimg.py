"""Run length in images shown (train.kimg): the same kimg shows the same number of real images to D whatever
the dataset size, worker count and global batch; epochs still work; both set is one line and exit 2."""

from __future__ import annotations

import numpy as np
import pytest

from genai_ray.cli import main
from genai_ray.config import build_config
from genai_ray.errors import UserError
from genai_ray.train.loop import RunPlan, run_length
from tests.helpers import prepare_digits


@pytest.mark.parametrize("kimg", [0.5, 12.0, 768.0, 1000.3])
def test_the_same_kimg_shows_the_same_images_at_any_dataset_size_and_batch(kimg: float) -> None:
    for train_count in (500, 1618, 60_000):
        for batch in (16, 64, 96, 512, 4096):
            length = run_length(kimg, None, train_count, batch)
            shown = length.total_steps * batch
            assert kimg * 1000 <= shown < kimg * 1000 + batch, (train_count, batch, shown)
            per, ticks = length.steps_per_tick, length.ticks
            assert per * (ticks - 1) < length.total_steps <= per * ticks, "ticks cover the steps, the last maybe short"


def test_epochs_count_whole_passes() -> None:
    length = run_length(None, 3, 1618, 64)
    assert (length.steps_per_tick, length.ticks, length.total_steps) == (25, 3, 75)


def test_plan_does_not_depend_on_worker_count(tmp_path) -> None:
    from genai_ray.data.reader import open_dataset
    from genai_ray.train.run import plan_run

    ds = open_dataset(prepare_digits(str(tmp_path / "d"), name="d"))
    plans = [plan_run(build_config(None, {"train": {"kimg": 10, "workers": w, "global_batch": 64}}), ds, "x")
             for w in (1, 2, 4)]
    assert len({(p.steps_per_epoch, p.ticks, p.total_steps) for p in plans}) == 1
    assert plans[0].total_steps * 64 >= 10_000 and plans[0].in_kimg


def test_the_loop_runs_exactly_the_planned_steps() -> None:
    """Two batch sizes on two dataset sizes, through the real loop (no Ray): same kimg, same images shown."""
    from genai_ray.train.loop import MemoryInput, set_up, train

    shown = []
    for batch, rows in ((16, 40), (48, 200)):
        cfg = build_config("tiny", {"model": {"conditional": True},
                                    "train": {"kimg": 0.5, "global_batch": batch, "checkpoint_every": 1000}})
        length = run_length(0.5, None, rows, batch)
        plan = RunPlan(run_uri="unused", image_shape=(8, 8, 1), num_classes=10, steps_per_epoch=length.steps_per_tick,
                       dataset_name="x", ticks=length.ticks, total_steps=length.total_steps, in_kimg=True)
        session = set_up(cfg, plan, None, rank=1, checkpoint_folder=None, exploit=False)  # rank 1: no reporting
        rng = np.random.default_rng(0)
        data = MemoryInput((rng.integers(0, 256, (rows, 8, 8, 1)).astype(np.uint8), rng.integers(0, 10, rows)),
                           seed=0, rank=1)
        reports: list[dict] = []
        train(session, data, lambda metrics, folder, out=reports: out.append(metrics))
        shown.append(int(session.trainer.step.numpy()) * batch)
        assert reports[-1]["kimg"] == shown[-1] / 1000  # the last tick reports the images shown
    assert all(500 <= s < 500 + b for s, b in zip(shown, (16, 48), strict=True)), shown


def test_kimg_and_epochs_both_set_is_one_line_and_exit_2(capsys) -> None:
    with pytest.raises(UserError, match="train.kimg=5 and train.epochs=2 both set"):
        build_config(None, {"train": {"kimg": 5, "epochs": 2}})
    assert build_config(None, {"train": {"epochs": 2}}).train.kimg is None  # the preset's kimg gives way
    assert build_config("tiny", {"train": {"kimg": 3}}).train.epochs is None  # and the tiny preset's epochs
    assert main(["train", "--data", "nowhere", "--kimg", "5", "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "both set" in err and "\n" not in err


def test_a_run_reports_kimg_not_its_ticks_and_epochs_only_when_it_counts_them() -> None:
    from genai_ray.train.run import TrainResult, length_trained

    # a 768-kimg run on digits: 750 ticks of about 1 kimg, stored in the checkpoint's epoch field
    kimg_run = TrainResult("runs/d", 750, {"kimg": 768.0}, "runs/d/checkpoint-epoch-00750", 0, None)
    assert length_trained(kimg_run, counts_epochs=False) == "768 kimg"
    assert length_trained(TrainResult("r", 32, {"kimg": 2.048}, "c", 0, None), counts_epochs=False) == "2.048 kimg"
    assert length_trained(TrainResult("r", 3, {"kimg": 4.8}, "c", 0, None), counts_epochs=True) == "3 epochs"
