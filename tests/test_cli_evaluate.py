"""``genai-ray evaluate`` end to end: a real Keras package on local and S3 stores, and the baselines."""

from __future__ import annotations

import json

import pytest

from genai_ray import storage
from genai_ray.data.reader import open_dataset
from genai_ray.package.format import load_package, read_meta
from tests.helpers import prepare_digits, run, toy_package

FAST = ["--set", "eval.classifier_epochs=4"]  # the CLI tests check plumbing, not feature quality


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("cli-eval") / "store")
    prepare_digits(storage.join(root, "datasets", "digits"))
    return root


def test_evaluate_model_writes_metrics_into_model_json(local_store: str, capsys) -> None:
    ds = open_dataset(storage.join(local_store, "datasets", "digits"))
    uri = toy_package(local_store, dataset=ds, conditional=True,
                      metrics={"loss/g": 1.5})  # as if training had written it
    code, out, err = run(capsys, "--store", local_store, "evaluate", "--model", "toy", "--n", "200", *FAST)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[0] == "metric" and lines[1].split()[0] == "eval/fd"
    meta = read_meta(uri)  # still a valid model.json
    assert meta.metrics["loss/g"] == 1.5  # what training wrote is kept
    assert meta.metrics["eval/n_samples"] == 200.0
    assert {"eval/fd", "eval/precision", "eval/recall", "eval/memorisation", "eval/cond_acc",
            "eval/class_coverage", "eval/features_holdout_accuracy"} <= set(meta.metrics)
    load_package(uri)  # the generator's sha256 still matches
    code, out, _ = run(capsys, "--store", local_store, "evaluate", "--model", uri, "--n", "200", "--json",
                       "--no-write", *FAST)
    assert code == 0
    # Same seed, same numbers: approx's default rel=1e-6 absorbs only float32 reduction order in the networks
    # (~1e-7); another seed or sample count moves the FD by percent.
    assert json.loads(out)[uri]["eval/fd"] == pytest.approx(meta.metrics["eval/fd"])
    code, _, _ = run(capsys, "--store", local_store, "evaluate", "--model", uri, "--split", "train", "--n", "200",
                     *FAST)
    assert code == 0
    assert "eval_train/fd" in read_meta(uri).metrics and read_meta(uri).metrics["eval/n_samples"] == 200.0


def test_evaluate_champion(local_store: str, capsys) -> None:
    from genai_ray.package.format import champion_uri

    ds = open_dataset(storage.join(local_store, "datasets", "digits"))
    uri = toy_package(local_store, dataset=ds, conditional=True, name="champ")
    storage.write_bytes(champion_uri(local_store, "champ"), json.dumps({"uri": uri}).encode())
    code, out, err = run(capsys, "--store", local_store, "evaluate", "--model", "champion:champ", "--n", "120",
                         "--json", *FAST)
    assert code == 0, err
    assert json.loads(out)["champion:champ"]["eval/n_samples"] == 120.0
    assert read_meta(uri).metrics["eval/n_samples"] == 120.0


def test_baselines_table(local_store: str, capsys) -> None:
    code, out, err = run(capsys, "--store", local_store, "evaluate", "--baseline", "real", "--baseline", "kde",
                         "--data", "digits", "--n", "300", "--json", *FAST)
    assert code == 0, err
    table = json.loads(out)
    assert set(table) == {"real", "kde"}
    assert table["real"]["eval/fd"] < table["kde"]["eval/fd"]
    assert table["real"]["eval/memorisation"] == 1.0  # the training images themselves
    assert table["kde"]["eval/memorisation"] <= 0.02
    code, out, _ = run(capsys, "--store", local_store, "evaluate", "--baseline", "kde", "--data", "digits",
                       "--n", "300", *FAST)
    assert code == 0 and out.splitlines()[0].split() == ["metric", "kde"]
    rows = [line.split()[0] for line in out.splitlines()[1:-1]]
    assert rows == ["eval/fd", "eval/precision", "eval/recall", "eval/coverage", "eval/memorisation"], out
    assert out.splitlines()[-1].endswith("more metrics: --all, or --json)"), out
    code, out, _ = run(capsys, "--store", local_store, "evaluate", "--baseline", "kde", "--data", "digits",
                       "--n", "300", "--all", *FAST)
    assert code == 0 and len(out.splitlines()) > 1 + len(rows) and "more metrics" not in out


@pytest.mark.parametrize("args, message", [
    ([], "pass either --model"),
    (["--model", "toy", "--baseline", "kde"], "pass either --model"),
    (["--baseline", "kde"], "--baseline needs --data"),
    (["--model", "nothing-here"], "no exported model named 'nothing-here'"),
    (["--baseline", "kde", "--data", "missing"], "manifest.json is missing"),
    (["--baseline", "kde", "--data", "digits", "--set", "eval.knn_k=0"], "eval.knn_k"),
])
def test_user_mistakes_are_one_line(local_store: str, capsys, args: list[str], message: str) -> None:
    code, out, err = run(capsys, "--store", local_store, "evaluate", *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_model_for_another_image_shape_is_refused(local_store: str, capsys) -> None:
    ds = open_dataset(storage.join(local_store, "datasets", "digits"))
    uri = toy_package(local_store, dataset=ds, conditional=False, name="wide", shape=(8, 16, 1))
    before = storage.read_bytes(storage.join(uri, "model.json"))
    code, _, err = run(capsys, "--store", local_store, "evaluate", "--model", "wide")
    assert code == 2 and "(8, 16, 1) images" in err
    assert storage.read_bytes(storage.join(uri, "model.json")) == before


def test_evaluate_on_s3(s3_bucket: str, capsys) -> None:
    store = storage.join(s3_bucket, "store")
    data = prepare_digits(storage.join(store, "datasets", "digits"))
    ds = open_dataset(data)
    uri = toy_package(store, dataset=ds, conditional=False)
    code, out, err = run(capsys, "--store", store, "evaluate", "--model", "toy", "--data", data, "--n", "150",
                         *FAST)
    assert code == 0, err
    assert "eval/fd" in out
    assert "eval/cond_acc" not in read_meta(uri).metrics  # unconditional model
    assert read_meta(uri).metrics["eval/n_samples"] == 150.0
    assert storage.list_dir(storage.join(data, "features"))  # the feature model is cached beside the manifest
