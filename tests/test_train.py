"""Ray Train: 2 workers on the session Ray, checkpoints, resume by name and after a crash, S3, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genai_ray import storage
from genai_ray.config import build_config
from genai_ray.data.prepare import prepare
from genai_ray.data.reader import open_dataset
from genai_ray.data.sources import digits_source
from genai_ray.package import load_package
from genai_ray.train import fit

TINY_CONDITIONAL = {"model": {"conditional": True}, "train": {"workers": 2, "epochs": 2, "keep_checkpoints": 1}}


def digits(uri: str) -> str:
    prepare(digits_source(None), uri, name="digits", progress=False, shards=2)
    return uri


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    """One conditional 2-worker run on digits, exported: (store, result)."""
    store = str(tmp_path_factory.mktemp("train") / "store")
    digits(storage.join(store, "datasets", "digits"))
    return store, fit(build_config("tiny", TINY_CONDITIONAL), "digits", name="two", store=store)


def test_two_workers_report_checkpoint_and_export(trained):
    store, result = trained
    assert result.epochs == 2 and result.resumed_from == 0
    m = result.metrics
    assert {"loss/d", "loss/g", "perf/images_per_s", "perf/epoch_s", "epoch"} <= set(m)
    assert m["epoch"] == 2 and m["perf/images_per_s"] > 0 and np.isfinite(m["loss/d"])
    ds = open_dataset(storage.join(store, "datasets", "digits"))
    assert m["step"] == 2 * (ds.manifest.train_count // 64)  # every rank ran the same steps per epoch
    run = Path(result.run_uri)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-epoch-00002"]  # keep_checkpoints=1
    ckpt = Path(result.checkpoint_uri)
    assert (ckpt / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((ckpt / "state").glob("ckpt.index"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    pkg = load_package(result.package_uri)
    assert pkg.meta.conditional and pkg.meta.class_names == [str(i) for i in range(10)]
    assert pkg.meta.dataset_sha256 == ds.manifest.sha256()
    assert pkg.meta.training["workers"] == 2 and pkg.meta.training["epochs"] == 2
    assert abs(sum(pkg.meta.class_probs) - 1.0) < 1e-9
    assert pkg.meta.config["model"]["conditional"] is True
    assert storage.exists(storage.join(result.package_uri, "samples.png"))


def test_tensorboard_has_scalars_and_images(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(trained[1].run_uri) / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"loss/d", "loss/g", "perf/images_per_s", "samples"} <= tags


def test_rerun_with_the_same_name_resumes(trained):
    store, first = trained
    more = build_config("tiny", {**TINY_CONDITIONAL, "train": {**TINY_CONDITIONAL["train"], "epochs": 3}})
    result = fit(more, "digits", name="two", store=store, export=False)
    assert result.resumed_from == 2 and result.epochs == 3 and result.package_uri is None
    assert result.metrics["step"] == first.metrics["step"] * 3 // 2  # the step counter continued


def test_rerun_with_a_different_model_is_refused(trained):
    from genai_ray.errors import UserError

    store, _ = trained
    other = build_config("tiny", {"model": {"conditional": True, "latent_dim": 8}, "train": {"workers": 2}})
    with pytest.raises(UserError, match="different model"):
        fit(other, "digits", name="two", store=store)


def test_worker_crash_resumes_from_the_last_checkpoint(ray_local, tmp_path):
    store = str(tmp_path / "store")
    digits(storage.join(store, "datasets", "digits"))
    cfg = build_config("tiny", {"train": {"workers": 2, "epochs": 2, "fail_at_epoch": 2, "max_failures": 1,
                                          "checkpoint_every": 1, "keep_checkpoints": 3}})
    result = fit(cfg, "digits", name="crash", store=store, export=False)
    assert storage.exists(storage.join(result.run_uri, "faults", "epoch-2"))  # rank 1 really died
    assert result.epochs == 2 and result.resumed_from == 1  # restarted from the epoch-1 checkpoint
    names = sorted(p.name for p in Path(result.run_uri).glob("checkpoint-*"))
    assert names == ["checkpoint-epoch-00001", "checkpoint-epoch-00002"]


def test_train_from_s3_with_checkpoints_on_s3(ray_local, s3_bucket):
    store = f"{s3_bucket}/genai"
    digits(storage.join(store, "datasets", "digits"))
    cfg = build_config("tiny", {"train": {"workers": 1, "epochs": 1}})
    result = fit(cfg, "digits", name="s3run", store=store)
    assert result.checkpoint_uri.startswith(f"{s3_bucket}/genai/runs/s3run/checkpoint-epoch-00001")
    assert storage.exists(storage.join(result.checkpoint_uri, "samples.png"))
    assert storage.list_dir(storage.join(result.checkpoint_uri, "state"))
    assert any(n.startswith("events.out.tfevents") for n in storage.list_dir(f"{result.run_uri}/tensorboard"))
    assert result.package_uri.startswith(f"{s3_bucket}/genai/models/s3run/v0001")
    images, _, _ = load_package(result.package_uri).sample(4, seed=1)
    assert images.shape == (4, 8, 8, 1)
    assert json.loads(storage.read_bytes(f"{result.run_uri}/genai-ray-run.json"))["train"]["workers"] == 1


def test_generate_npy_is_deterministic_float32_in_unit_range(trained, tmp_path):
    from genai_ray.train.generate import generate

    store, result = trained
    a, b, c = (str(tmp_path / f"{k}.npy") for k in "abc")
    generate(result.package_uri, 6, a, seed=11, store=store)
    generate("two", 6, b, seed=11, store=store)  # by name: the latest version, the same package
    generate(result.package_uri, 6, c, seed=12, store=store)
    x, y, z = np.load(a), np.load(b), np.load(c)
    assert x.dtype == np.float32 and x.shape == (6, 8, 8, 1)
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(x, y)
    assert not np.array_equal(x[0], z[0])
    np.testing.assert_array_equal(x[1], z[0])  # image i uses seed + i, independent of the batch


def test_generate_cli_png_label_and_errors(trained, tmp_path, capsys):
    from genai_ray.cli import main
    from genai_ray.images import png_text

    store, result = trained
    out = tmp_path / "grid.png"
    assert main(["--store", store, "generate", "--model", "two", "--n", "9", "--seed", "3", "--label", "7",
                 "--out", str(out)]) == 0
    assert png_text(out.read_bytes())["model"] == "two/v0001"
    capsys.readouterr()
    assert main(["--store", store, "generate", "--model", "two", "--label", "12", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "out of range" in err and "\n" not in err
    assert main(["--store", store, "generate", "--model", "nope", "--out", str(out)]) == 2
    assert "no exported model named 'nope'" in capsys.readouterr().err


def test_generate_to_a_dataset_records_provenance_and_class_proportions(trained):
    from genai_ray.train.generate import generate

    store, result = trained
    out = storage.join(store, "datasets", "synthetic-digits")
    generate("two", 300, out, seed=0, store=store)
    ds = open_dataset(out)
    m = ds.manifest
    assert m.synthetic and m.count == 300 and m.class_names == [str(i) for i in range(10)]
    assert m.provenance["model_uri"] == result.package_uri and m.provenance["version"] == "v0001"
    assert m.provenance["generator_sha256"] == load_package(result.package_uri).meta.generator_sha256
    _, labels = ds.read_numpy("train")
    assert set(np.unique(labels)) == set(range(10))  # sampled in the training proportions, not one class
    assert max(np.bincount(labels)) < 60


def test_two_simulated_nodes_with_spread_placement(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).parent / "scripts" / "two_node_train.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "store")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(line[7:] for line in out.stdout.splitlines() if line.startswith("RESULT ")))
    assert result["epochs"] == 1 and result["nodes"] == 2
    assert load_package(result["package"]).meta.training["workers"] == 2
