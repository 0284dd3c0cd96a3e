"""Real datasets at real sizes through Ray Train: MNIST at 28x28, 64x64 photos, and stream mode from S3."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genai_ray import storage
from genai_ray.config import build_config
from genai_ray.data.prepare import prepare
from genai_ray.data.reader import open_dataset
from genai_ray.data.sources import open_source, shapes_source
from genai_ray.package.format import load_package
from genai_ray.train.run import fit

pytestmark = pytest.mark.slow  # four whole training runs, one with a worker SIGKILLed; `make test-fast` skips it

# A narrow DCGAN: what these tests check is the data path and the architecture's sizes, not image quality.
NARROW = {"model": {"family": "dcgan", "base_channels": 4, "latent_dim": 16}}


def train_cfg(**train):
    return build_config("tiny", {**NARROW, "train": {"epochs": 1, "keep_checkpoints": 1, **train}})


@pytest.mark.timeout(600)
def test_mnist_28x28_dcgan_trains_and_exports(ray_local, tmp_path, capsys):
    store = str(tmp_path / "store")
    prepare(open_source("mnist"), storage.join(store, "datasets", "mnist"), name="mnist", progress=False)
    result = fit(train_cfg(workers=1, global_batch=250), "mnist", name="mnist28", store=store)
    assert result.epochs == 1 and result.metrics["step"] == 4500 // 250
    assert np.isfinite(result.metrics["loss/d"]) and np.isfinite(result.metrics["loss/g"])
    assert "data: memory mode (auto: each worker's shard needs" in capsys.readouterr().out
    images, _, _ = load_package(result.package_uri).sample(3, seed=0)
    assert images.shape == (3, 28, 28, 1)


@pytest.mark.timeout(600)
def test_64x64_rgb_folder_of_mixed_photos_centre_cropped_trains_one_epoch_and_exports(ray_local, tmp_path):
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    for label in ("a", "b"):
        (photos / label).mkdir(parents=True)
        for i in range(48):  # mixed sizes and aspect ratios, as a folder of real photos has
            w, h = int(rng.integers(64, 120)), int(rng.integers(64, 120))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(photos / label / f"{i}.jpg")
    store = str(tmp_path / "store")
    prepare(open_source(str(photos), image_size=64, crop=True), storage.join(store, "datasets", "photos"),
            name="photos", progress=False)
    result = fit(train_cfg(workers=1, global_batch=16), "photos", name="photos64", store=store)
    train = open_dataset(storage.join(store, "datasets", "photos")).manifest.train_count
    assert result.epochs == 1 and result.metrics["step"] == train // 16
    package = load_package(result.package_uri)
    images, _, _ = package.sample(2, seed=0)
    assert images.shape == (2, 64, 64, 3)


@pytest.mark.timeout(600)
def test_stream_mode_two_workers_from_s3_run_the_same_steps_and_export(ray_local, s3_bucket, capsys):
    """Shards of 700 rows (row groups of 700) split over 2 ranks at batch 32: ranks straddle row groups, and
    every epoch skips a different tail shorter than a global batch. A rank short of a batch would hang the
    collectives (caught by the timeout), so finishing at the expected step count shows equal steps per rank."""
    store = f"{s3_bucket}/genai"
    uri = storage.join(store, "datasets", "shapes")
    prepare(shapes_source(2000, 16, 0), uri, name="shapes", progress=False, shard_rows=700)
    cfg = train_cfg(workers=2, epochs=2, global_batch=64, data_mode="stream", shuffle_buffer=256)
    started = time.monotonic()
    result = fit(cfg, "shapes", name="stream2", store=store)
    steps = open_dataset(uri).manifest.train_count // 64
    assert result.epochs == 2 and result.metrics["step"] == 2 * steps, result.metrics
    assert np.isfinite(result.metrics["loss/d"])
    assert "data: stream mode (train.data_mode=stream)" in capsys.readouterr().out
    assert result.package_uri.startswith(f"{s3_bucket}/genai/models/stream2/")
    print(f"stream-mode 2-worker S3 run: {time.monotonic() - started:.0f} s")


@pytest.mark.timeout(900)
def test_stream_mode_resumes_after_a_worker_sigkill(ray_local, tmp_path):
    """Fault: SIGKILL rank 0 once a checkpoint is registered, in stream mode. Expect: the group restarts from
    that checkpoint, streams on from the resumed tick with the batches an uninterrupted run has
    (tests/test_input.py), and the run ends at its last epoch with every checkpoint complete."""
    from tests.test_reliability import (
        in_background,
        incomplete_checkpoints,
        registered_checkpoints,
        sigkill_rank0,
        wait_for,
    )

    store = str(tmp_path / "store")
    prepare(shapes_source(1600, 16, 0), storage.join(store, "datasets", "shapes"), name="shapes", progress=False,
            shard_rows=500)
    epochs = 6
    cfg = train_cfg(workers=2, epochs=epochs, global_batch=32, steps_per_call=1, checkpoint_every=1,
                    keep_checkpoints=epochs, max_failures=1, data_mode="stream", shuffle_buffer=128)
    run_dir = tmp_path / "store" / "runs" / "kill"
    runner, outcome = in_background(lambda: fit(cfg, "shapes", name="kill", store=store, export=False))
    wait_for(lambda: registered_checkpoints(run_dir) or not runner.is_alive(), 300, "the first registered checkpoint")
    assert runner.is_alive(), f"the run ended before the fault could be injected: {outcome}"
    victim, _, seen = sigkill_rank0(run_dir, epochs, "run")
    runner.join(timeout=420)
    assert not runner.is_alive(), "fault: SIGKILL of a stream-mode worker; expected the run to finish; it still runs"
    assert "error" not in outcome, f"fault: SIGKILL of pid {victim}; expected a recovery, got {outcome}"
    result = outcome["result"]
    assert result.epochs == epochs and result.resumed_from >= max(seen) >= 1, (result.epochs, result.resumed_from)
    assert not incomplete_checkpoints(run_dir)
    assert Path(run_dir / f"checkpoint-epoch-{epochs:05d}").is_dir()
