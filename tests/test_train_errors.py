"""Every bad training input is one clear error line (exit 2) before any worker starts, and leaves no run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genai_ray.cli import main
from genai_ray.data.prepare import prepare
from genai_ray.data.sources import array_source, digits_source, shapes_source


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> str:
    store = tmp_path_factory.mktemp("errors") / "store"
    prepare(digits_source(None), str(store / "datasets" / "digits"), name="digits", progress=False)
    prepare(digits_source(18), str(store / "datasets" / "digits18"), name="digits18", progress=False)
    prepare(shapes_source(400, 64, 0), str(store / "datasets" / "shapes64"), name="shapes64", progress=False)
    x = np.random.default_rng(0).integers(0, 256, (200, 8, 8, 1)).astype(np.uint8)
    prepare(array_source("npz", {"kind": "npz"}, x, None, None), str(store / "datasets" / "unlabelled"),
            name="unlabelled", progress=False)
    return str(store)


CASES = {
    "unknown-model": (["--data", "digits", "--set", "model.family=stylegan"], "model.family"),
    "unknown-loss": (["--data", "digits", "--set", "train.loss=lsgan"], "train.loss"),
    "dcgan-size": (["--data", "digits18", "--set", "model.family=dcgan"], "8, 10, 12, 14, 16, 20, 24, 28, 32"),
    "resnet-size": (["--data", "digits18", "--set", "model.family=resnet"],
                    "model.family=resnet makes square images of s*2^k pixels (s in 4..7, k >= 1: 8, 10, 12, 14, 16, "
                    "20, 24, 28, 32, 40, 48, 56, 64, ...), but the dataset is 18x18"),
    "rpgan-gp-weight": (["--data", "digits", "--set", "train.loss=rpgan", "--set", "train.gp_weight=10"],
                        "train.gp_weight=10 weights WGAN-GP's penalty, which train.loss=rpgan does not use; unset it "
                        "and regularise D with train.r1_gamma and train.r2_gamma"),
    "negative-r1": (["--data", "digits", "--set", "train.r1_gamma=-1"], "train.r1_gamma: Input should be greater "
                    "than or equal to 0"),
    "negative-r2": (["--data", "digits", "--set", "train.r2_gamma=-0.5"], "train.r2_gamma: Input should be greater "
                    "than or equal to 0"),
    # 360 64x64x3 training images over 2 workers: 2 x 180 x 12,296 bytes = 4.2 MiB in memory, over 1 MiB.
    "memory-over-budget": (["--data", "shapes64", "--set", "train.data_mode=memory", "--set",
                            "train.memory_budget_mib=1"],
                           "train.data_mode=memory: each worker's shard needs 4.2 MiB in memory, its budget is "
                           "1.0 MiB (train.memory_budget_mib=1); use train.data_mode=stream"),
    "batch-split": (["--data", "digits", "--workers", "3"], "not divisible by train.workers=3"),
    "no-manifest": (["--data", "nowhere"], "manifest.json is missing"),
    "unlabelled": (["--data", "unlabelled", "--preset", "default"], "is unlabelled"),
    "batch-too-big": (["--data", "digits", "--set", "train.global_batch=4096"], "larger than the"),
    "too-many-gpus": (["--data", "digits", "--gpus-per-worker", "1"], "GPUs requested, but the Ray cluster has 0"),
    "too-many-cpus": (["--data", "digits", "--set", "train.cpus_per_worker=64"], "CPUs requested"),
    "bad-name": (["--data", "digits", "--name", "../escape"], "--name"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_any_worker(case, datasets, ray_local, capsys):
    args, expected = CASES[case]
    code = main(["--store", datasets, "train", "--preset", "tiny", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert expected in err
    assert not (Path(datasets) / "runs").exists()  # nothing was started or written
