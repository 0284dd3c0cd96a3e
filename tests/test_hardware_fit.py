"""Defaults fitted to the hardware: GPU settings on a Ray cluster that advertises GPUs (Ray's logical resources, no
GPU needed) or with --gpus-per-worker, CPU settings on CPUs, run lengths from the rate table within the time budgets,
and a fitted run that prints its estimated duration and, at its end, how the estimate compared."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from genai_ray import storage
from genai_ray.cli import main
from genai_ray.config import build_config
from genai_ray.data.manifest import Manifest
from genai_ray.train.defaults import fit_to_data
from genai_ray.train.hardware import Hardware
from genai_ray.train.rates import estimate, estimate_report, speed
from tests.helpers import prepare_digits

TWO_CPUS = Hardware(2, 0)


def manifest(shape: tuple[int, int, int], train: int = 2700) -> Manifest:
    return Manifest(name="x", shape=shape, channels=shape[2], count=train + 300, train_count=train, holdout_count=300,
                    holdout_fraction=0.1, class_names=[str(i) for i in range(10)], seed=0, shards=[], source={},
                    created_at="now")


def fitted(shape: tuple[int, int, int], hw: Hardware):
    return build_config(None, {}, fitted=fit_to_data(manifest(shape), hw)[0])


@pytest.mark.parametrize(("side", "minutes"), [(32, 20), (64, 40)])
def test_on_two_cpus_the_colour_default_fills_but_stays_within_its_budget(side: int, minutes: int) -> None:
    cfg = fitted((side, side, 3), TWO_CPUS)
    t = cfg.train
    assert (cfg.model.family, t.workers, t.cpus_per_worker, t.global_batch, t.mixed_precision, t.gpus_per_worker) == \
        ("resnet", 1, 2.0, 16, "off", 0.0)  # one worker with both cores beat two; batch 16 beat 32 (docs/training.md)
    assert (t.loss, t.r1_gamma, t.r2_gamma, t.beta1) == ("rpgan", 0.05, 0.05, 0.0), "R3GAN's recipe, as compared"
    assert cfg.model.base_channels == (32 if side == 32 else 16)
    seconds = estimate(cfg, manifest((side, side, 3)), TWO_CPUS).seconds
    assert 0.7 * minutes * 60 < seconds <= minutes * 60, f"{t.kimg} kimg: {seconds / 60:.1f} min"


@pytest.mark.parametrize("side", [32, 64])
def test_cpus_with_amx_train_the_residual_net_in_bfloat16_for_longer_within_the_same_budget(side: int) -> None:
    amx = Hardware(2, 0, bf16=True)
    cfg, plain = fitted((side, side, 3), amx), fitted((side, side, 3), TWO_CPUS)
    assert (cfg.model.family, cfg.train.mixed_precision, plain.train.mixed_precision) == ("resnet", "bfloat16", "off")
    assert cfg.train.kimg > 1.3 * plain.train.kimg, "the bfloat16 rows are faster"
    seconds = estimate(cfg, manifest((side, side, 3)), amx).seconds
    assert 0.7 * side / 32 * 20 * 60 < seconds <= side / 32 * 20 * 60, f"{cfg.train.kimg} kimg: {seconds / 60:.1f} min"
    grey = fitted((64, 64, 1), amx)
    assert (grey.model.family, grey.train.mixed_precision) == ("dcgan", "off"), "bfloat16 was compared on resnet only"


def test_amx_is_read_from_the_cpu_flags(tmp_path) -> None:
    from genai_ray.train.hardware import cpu_bfloat16

    amx, avx2 = tmp_path / "amx", tmp_path / "avx2"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    avx2.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_bfloat16(str(amx)) and not cpu_bfloat16(str(avx2)) and not cpu_bfloat16(str(tmp_path / "none"))


def test_more_cores_train_longer_in_the_same_budget_and_one_core_gets_one_worker() -> None:
    two, eight, one = (fitted((32, 32, 3), Hardware(n, 0)) for n in (2, 8, 1))
    assert eight.train.kimg > two.train.kimg > one.train.kimg
    assert (one.train.workers, eight.train.workers) == (1, 2)


def test_gpu_settings_from_gpus_on_the_cluster() -> None:
    cfg = fitted((64, 64, 3), Hardware(16, 2, where="the Ray cluster"))
    t = cfg.train
    assert (cfg.model.family, t.workers, t.gpus_per_worker, t.mixed_precision) == ("dcgan", 2, 1.0, "float16")
    assert t.global_batch == 512 and t.steps_per_call == 16
    assert 500 <= t.kimg <= 5000, "a GPU run shows hundreds to thousands of kimg"
    assert t.kimg > fitted((64, 64, 3), TWO_CPUS).train.kimg * 10
    grey = fitted((32, 32, 1), Hardware(16, 1))
    assert grey.model.family == "dcgan", "on a GPU, 32x32 greyscale images train as a convolutional GAN"
    digits = fitted((8, 8, 1), Hardware(16, 1))
    assert (digits.model.family, digits.train.workers, digits.train.gpus_per_worker) == ("mlp", 1, 1.0)


def test_the_rate_table_scales_by_pixels_between_rows_and_names_unmeasured_rows() -> None:
    at32, at16 = speed("dcgan", (32, 32, 3), TWO_CPUS), speed("dcgan", (16, 16, 3), TWO_CPUS)
    assert at16.images_per_s == pytest.approx(4 * at32.images_per_s) and at32.measured
    assert not speed("dcgan", (64, 64, 3), Hardware(8, 1)).measured
    assert speed("nosuchfamily", (32, 32, 3), TWO_CPUS) is None
    expected = estimate(fitted((32, 32, 3), TWO_CPUS), manifest((32, 32, 3)), TWO_CPUS)
    line = estimate_report(expected.seconds * 1.5, expected)
    assert line.startswith(f"took {expected.seconds * 1.5 / 60:.1f} min; estimated about ") and "1.50x" in line


def test_the_gpu_preset_counts_in_kimg() -> None:
    gpu = build_config("gpu")
    assert (gpu.train.kimg, gpu.train.epochs) == (2000, None)
    assert build_config("gpu", {"train": {"epochs": 5}}).train.kimg is None  # epochs still win when set


PROBE = """
import json, sys, ray
from genai_ray.config import build_config
from genai_ray.data.manifest import Manifest
from genai_ray.train.defaults import fit_to_data
from genai_ray.train.hardware import detect
ray.init(address="local", num_cpus=4, num_gpus=int(sys.argv[1]), include_dashboard=False)
hw = detect()
m = Manifest(name="x", shape=(64, 64, 3), channels=3, count=3000, train_count=2700, holdout_count=300,
             holdout_fraction=0.1, class_names=[str(i) for i in range(10)], seed=0, shards=[], source={},
             created_at="-")
fitted, why = fit_to_data(m, hw)
t = build_config(None, {}, fitted=fitted).train
print("FIT", json.dumps({"gpus": hw.gpus, "cpus": hw.cpus, "workers": t.workers, "mp": t.mixed_precision,
                         "gpw": t.gpus_per_worker, "batch": t.global_batch, "kimg": t.kimg, "why": why}))
ray.shutdown()
"""


@pytest.mark.parametrize("gpus", [2, 0])
def test_fitting_reads_the_gpus_a_running_ray_advertises(gpus: int) -> None:
    """A real Ray whose node advertises logical GPUs (none exist here); the fitting only reads them."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(gpus)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    fit = json.loads(next(line[4:] for line in out.stdout.splitlines() if line.startswith("FIT ")))
    assert fit["cpus"] <= 4 and fit["gpus"] == gpus
    if gpus:
        assert (fit["workers"], fit["mp"], fit["gpw"], fit["batch"]) == (2, "float16", 1.0, 512)
        assert fit["kimg"] >= 500 and any("2 GPUs on the running Ray" in why for why in fit["why"])
    else:
        from genai_ray.train.hardware import cpu_bfloat16

        local = "bfloat16" if cpu_bfloat16() else "off"  # a local Ray: this CPU's AMX units count
        assert (fit["mp"], fit["gpw"], fit["batch"]) == (local, 0.0, 16) and fit["kimg"] < 500


def photos_store(tmp_path, count: int = 60) -> str:
    from genai_ray.data.prepare import prepare
    from genai_ray.data.sources import open_source

    store = str(tmp_path / "store")
    prepare(open_source("photos", count=count), storage.join(store, "datasets", "photos"), name="photos",
            progress=False)
    return store


def test_gpus_per_worker_alone_picks_the_gpu_settings(tmp_path, capsys) -> None:
    store = photos_store(tmp_path)
    # a batch larger than the dataset is refused after the fitting is printed, before anything trains
    args = ["--store", store, "train", "--data", "photos", "--set", "train.global_batch=4096"]
    assert main([*args, "--gpus-per-worker", "1"]) == 2
    gpu = capsys.readouterr().out
    assert "on 1 GPU worker" in gpu and "mixed precision" in gpu, gpu
    assert re.search(r"\d+ kimg \(about [\d.]+ (min|h) on 1 GPU ", gpu), gpu
    assert main(args) == 2
    cpu = capsys.readouterr().out
    on_cpus = r"on (1 worker with all \d+ CPUs? of|2 workers \(\d+ CPUs? on) (this machine|the running Ray)"
    assert "mixed precision" not in cpu and re.search(on_cpus, cpu), cpu


@pytest.mark.slow
def test_a_fitted_run_prints_its_estimate_and_at_its_end_how_long_it_took(ray_local, tmp_path, capsys) -> None:
    store = str(tmp_path / "store")
    prepare_digits(storage.join(store, "datasets", "digits"))
    assert main(["--store", store, "train", "--data", "digits", "--kimg", "2", "--no-export"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "default preset fitted to digits" in lines[0]
    assert re.search(r"^training mlp \(conditional\) on digits: .* 2 kimg, loss hinge, about \d+ s on \d+ CPUs?$",
                     lines[1]), lines[1]
    last = re.fullmatch(r"took ([\d.]+) min; estimated about \d+ s on \d+ CPUs?: ([\d.]+)x the estimate "
                        r"\(([\d.]+) min\)", lines[-1])
    assert last, lines[-1]
    took, ratio, estimated = map(float, last.groups())
    half = 0.05  # the minutes are printed to 0.1: the ratio must lie within what their rounding allows
    assert took > 0 and (took - half) / (estimated + half) <= ratio <= (took + half) / max(estimated - half, 0.01)
