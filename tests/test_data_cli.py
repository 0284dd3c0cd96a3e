"""The ``genai-ray`` console script, run as a real subprocess: help, data prepare, data inspect and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from genai_ray.cli import cli

GENAI_RAY = Path(sys.executable).with_name("genai-ray")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert GENAI_RAY.exists(), f"{GENAI_RAY} is missing; install the package: pip install -e '.[dev]'"
    return subprocess.run([str(GENAI_RAY), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_help_lists_every_command():
    top = run("--help")
    assert top.returncode == 0 and "Usage: genai-ray" in top.stdout
    listed = top.stdout.split("Commands:", 1)[1]
    assert all(f"  {name} " in listed for name in cli.commands), listed
    data = run("data", "--help")
    assert data.returncode == 0 and "prepare" in data.stdout and "inspect" in data.stdout
    prep = run("data", "prepare", "-h")
    for flag in ("--out", "--name", "--shards", "--shard-size", "--image-size", "--holdout", "--seed", "--overwrite"):
        assert flag in prep.stdout


def test_prepare_then_inspect_through_the_store(store: str, tmp_path: Path):
    prep = run("data", "prepare", "digits", "--holdout", "0.2", "--seed", "3")
    assert prep.returncode == 0, prep.stderr
    out = f"{store}/datasets/digits"
    assert prep.stdout == f"prepared digits: 1797 images 8x8x1, 1439 train / 358 holdout, 2 shards -> {out}\n"
    assert "preparing digits: 1,797/1,797 images (100%)" in prep.stderr and "images/s" in prep.stderr

    shown = run("data", "inspect", "digits", cwd=tmp_path)  # a bare name is looked up in the store
    assert shown.returncode == 0, shown.stderr
    manifest_text, last_line = shown.stdout.rstrip("\n").rsplit("\n", 1)
    manifest = json.loads(manifest_text)
    assert (manifest["name"], manifest["count"], manifest["seed"], manifest["shape"]) == ("digits", 1797, 3, [8, 8, 1])
    assert last_line == "preview grid: digits-preview.png"
    with Image.open(tmp_path / "digits-preview.png") as preview:
        assert preview.format == "PNG" and preview.mode == "L" and min(preview.size) >= 64
        assert preview.text["dataset"] == "digits"


def test_prepare_to_s3_and_inspect_with_checksums(s3_bucket: str, tmp_path: Path):
    uri = f"{s3_bucket}/ds/shapes"
    prep = run("data", "prepare", "shapes", "--count", "500", "--shards", "3", "--out", uri)
    assert prep.returncode == 0 and prep.stdout.startswith("prepared shapes: 500 images 32x32x3"), prep.stderr
    shown = run("data", "inspect", uri, "--verify", "--preview", str(tmp_path / "p.png"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.rstrip().endswith(f"preview grid: {tmp_path / 'p.png'}; all shard checksums match")
    assert len([s for s in json.loads(shown.stdout.rsplit("\n", 2)[0])["shards"] if s["split"] == "train"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "prepare", "mnist2"], "error: unknown source 'mnist2': not 'digits', 'mnist', 'shapes', "
                                        "'photos', or an existing folder/.npz/IDX file"),
        (["data", "inspect", "s3://no-such-bucket-cli/x"], "error: S3 bucket 'no-such-bucket-cli' does not exist "
                                                           "(for s3://no-such-bucket-cli/x); create it or fix the URI"),
        (["data", "prepare", "digits", "--holdout", "1.5"], "error: --holdout 1.5: must be in [0, 1)"),
    ],
    ids=["unknown-source", "missing-bucket", "bad-holdout"],
)
def test_user_errors_are_one_line_and_exit_2(args: list[str], message: str, store: str):
    result = run(*args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message + "\n")


def test_existing_output_without_overwrite_exits_2_and_verbose_shows_the_traceback(store: str):
    assert run("data", "prepare", "shapes", "--count", "40").returncode == 0
    again = run("data", "prepare", "shapes", "--count", "40")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert again.stderr == (f"error: {store}/datasets/shapes already holds data; pass --overwrite to replace it "
                            "or choose another --out\n")
    verbose = run("--verbose", "data", "prepare", "shapes", "--count", "40")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr and "UserError" in verbose.stderr
    replaced = run("data", "prepare", "shapes", "--count", "60", "--overwrite")
    assert replaced.returncode == 0 and "prepared shapes: 60 images" in replaced.stdout
