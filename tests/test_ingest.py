"""data prepare on Ray Data: folders of images (local or in S3) and Parquet tables of encoded images become the
same shards and manifest as the single-process path, with a split that does not depend on parallelism."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from genai_ray import storage
from genai_ray.data.decode import DecodeSpec, decode_image
from genai_ray.data.ingest import DECODE_BATCH, DECODE_TASK_BYTES, decode_batch_rows, open_store_source, prepare_store
from genai_ray.data.reader import open_dataset
from genai_ray.data.sources import centre_box, folder_source
from tests.helpers import run

CLASSES = ["zebra", "ant", "moth"]  # not in sorted order: class names must come out sorted


def jpeg(rng: np.random.Generator, h: int, w: int, grey: bool = False) -> bytes:
    shape = (h, w) if grey else (h, w, 3)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def image_files(n: int, labelled: bool = True, seed: int = 0) -> dict[str, bytes]:
    """``n`` JPEGs of mixed sizes (and one greyscale), under class subfolders when ``labelled``."""
    rng = np.random.default_rng(seed)
    files = {}
    for i in range(n):
        h, w = rng.integers(10, 40, 2)
        name = f"{CLASSES[i % 3]}/{i:03d}.jpg" if labelled else f"{i:03d}.jpg"
        files[name] = jpeg(rng, int(h), int(w), grey=i == 4)
    return files


def to_folder(files: dict[str, bytes], root: Path) -> str:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return str(root)


def to_s3(files: dict[str, bytes], uri: str) -> str:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3")
    for name, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}".lstrip("/"), Body=data)
    return uri


def rows(uri: str, split: str) -> list[tuple[int, bytes]]:
    """A split as a sorted list of (label, pixels): comparable whatever the shard order."""
    x, y = open_dataset(uri, checksums=True).read_numpy(split)
    return sorted(zip(y.tolist(), (img.tobytes() for img in x), strict=True))


def test_local_folder_gives_the_single_process_pixels_and_labels(ray_local, tmp_path: Path):
    folder = to_folder(image_files(30), tmp_path / "imgs")
    src = open_store_source(folder, image_size=12, crop=True, holdout=0.2, seed=1)
    manifest, report = prepare_store(src, str(tmp_path / "out"), name="d", progress=False)
    assert manifest.class_names == sorted(CLASSES) and manifest.shape == (12, 12, 3)
    assert manifest.count == 30 and sum(report.nodes.values()) == 30
    reference = folder_source(Path(folder), 12, crop=True)  # today's single-process decoder
    x = np.concatenate([c.images for c in reference.chunks()])
    y = np.concatenate([c.labels for c in reference.chunks()])
    expected = sorted(zip(y.tolist(), (img.tobytes() for img in x), strict=True))
    assert sorted(rows(str(tmp_path / "out"), "train") + rows(str(tmp_path / "out"), "holdout")) == expected
    train_labels = Counter(label for label, _ in rows(str(tmp_path / "out"), "train"))
    assert manifest.label_counts == {str(k): v for k, v in sorted(train_labels.items())}


def test_the_split_follows_each_image_not_the_folder(ray_local, tmp_path: Path):
    """Adding images never moves an existing image to the other split: the split is a function of its path."""
    files = image_files(40, labelled=False)
    first = dict(list(files.items())[:25])
    to_folder(first, tmp_path / "a")
    to_folder(files, tmp_path / "b")
    for name in ("a", "b"):
        src = open_store_source(str(tmp_path / name), image_size=8, holdout=0.3, seed=7)
        prepare_store(src, str(tmp_path / f"out-{name}"), name=name, progress=False)
    held_a = set(rows(str(tmp_path / "out-a"), "holdout"))
    held_b = set(rows(str(tmp_path / "out-b"), "holdout"))
    train_b = set(rows(str(tmp_path / "out-b"), "train"))
    assert held_a and held_a <= held_b and not held_a & train_b


@pytest.mark.slow
def test_s3_labelled_folder_of_mixed_sizes_prepares_and_trains(ray_local, s3_bucket: str, store: str, capsys):
    from genai_ray.config import build_config
    from genai_ray.train.run import fit

    source = to_s3(image_files(96), f"{s3_bucket}/raw/pets")
    code, out, err = run(capsys, "data", "prepare", source + "/", "--image-size", "8", "--crop",
                         "--out", f"{s3_bucket}/datasets/pets")
    assert code == 0, err
    assert "prepared pets: 96 images 8x8x3" in out and "images/s" in err
    ds = open_dataset(f"{s3_bucket}/datasets/pets", checksums=True)
    assert ds.manifest.class_names == sorted(CLASSES) and ds.manifest.source["uri"] == source + "/"
    result = fit(build_config("tiny", {"train": {"workers": 1, "epochs": 1}}), f"{s3_bucket}/datasets/pets",
                 name="pets", store=store)
    assert result.epochs == 1


def table(tmp_path: Path, images: list[bytes], labels: list, hf: bool) -> str:
    rng = np.random.default_rng(3)
    column = (pa.array([{"bytes": b, "path": f"img{i}.jpg"} for i, b in enumerate(images)]) if hf
              else pa.array(images, pa.binary()))
    t = pa.table({"id": pa.array(range(len(images))), "photo": column, "label": labels,
                  "score": rng.uniform(size=len(images))})
    path = tmp_path / "table.parquet"
    pq.write_table(t, path, row_group_size=8)
    return str(path)


@pytest.mark.parametrize("hf", [False, True], ids=["binary-column", "hf-struct"])
def test_parquet_table_of_encoded_images_with_string_labels(ray_local, tmp_path: Path, capsys, hf: bool):
    rng = np.random.default_rng(0)
    images = [jpeg(rng, 16, 16) for _ in range(24)]
    labels = [["ship", "car", "frog"][i % 3] for i in range(24)]
    path = table(tmp_path, images, labels, hf)
    code, out, err = run(capsys, "data", "prepare", path, "--out", str(tmp_path / "out"), "--holdout", "0.25")
    assert code == 0, err
    ds = open_dataset(str(tmp_path / "out"), checksums=True)
    assert ds.manifest.class_names == ["car", "frog", "ship"] and ds.manifest.shape == (16, 16, 3)
    assert ds.manifest.source["image_column"] == "photo" and ds.manifest.source["label_column"] == "label"
    got = rows(str(tmp_path / "out"), "train") + rows(str(tmp_path / "out"), "holdout")
    decoded = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).tobytes() for b in images]
    index = {"car": 0, "frog": 1, "ship": 2}
    assert sorted(got) == sorted(zip([index[s] for s in labels], decoded, strict=True))


def corrupt_jpeg() -> bytes:
    good = jpeg(np.random.default_rng(9), 20, 20)
    return good[:40] + b"\x00" * 20  # a header, then garbage


def test_corrupt_jpeg_in_s3_fails_with_its_key_or_is_skipped_and_recorded(ray_local, s3_bucket: str, capsys):
    files = image_files(20, labelled=False)
    files["007.jpg"] = corrupt_jpeg()
    source = to_s3(files, f"{s3_bucket}/raw")
    out = f"{s3_bucket}/ds"
    assert one_line_error(capsys, "data", "prepare", source, "--image-size", "8", "--out", out, "--shard-size",
                          "2") == (f"{s3_bucket}/raw/007.jpg: unreadable or corrupt image (OSError); remove or "
                                   "replace it, or pass --skip-bad")
    assert storage.list_dir(out) == [], "a failed prepare leaves no shard and no manifest"
    code, _, err = run(capsys, "data", "prepare", source, "--image-size", "8", "--out", out, "--skip-bad")
    assert code == 0, err
    assert f"skipped 1 unreadable images (--skip-bad); the first 1:\n  {s3_bucket}/raw/007.jpg\n" in err
    manifest = open_dataset(out, checksums=True).manifest
    assert manifest.count == 19 and manifest.source["skipped"] == {"count": 1, "uris": [f"{s3_bucket}/raw/007.jpg"]}


def one_line_error(capsys, *args: str) -> str:
    """The error line of a failed prepare. Progress lines, and log lines Ray forwards from its workers, may come
    before it on stderr (the console command hides the latter; tests call main() directly)."""
    code, out, err = run(capsys, *args)
    lines = err.splitlines()
    assert code == 2 and out == "" and "Traceback" not in err, (code, out, err)
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, err
    return lines[-1].removeprefix("error: ")


def test_bad_store_sources_are_one_line(s3_bucket: str, tmp_path: Path, capsys):
    assert one_line_error(capsys, "data", "prepare", "s3://no-such-bucket-ingest/x") == (
        "S3 bucket 'no-such-bucket-ingest' does not exist (for s3://no-such-bucket-ingest/x); create it or fix the URI")
    assert one_line_error(capsys, "data", "prepare", f"{s3_bucket}/nothing") == (
        f"{s3_bucket}/nothing: nothing there (no such folder or prefix); check the path")
    to_s3({"notes.txt": b"hello"}, f"{s3_bucket}/docs")
    assert one_line_error(capsys, "data", "prepare", f"{s3_bucket}/docs") == (
        f"{s3_bucket}/docs: holds no .png/.jpg/.jpeg images and no .parquet tables; point at a folder of images "
        "or a table of encoded images")


def test_bad_tables_are_one_line(tmp_path: Path, capsys):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1, 2], "caption": ["a", "b"]}), path)
    assert one_line_error(capsys, "data", "prepare", str(path)) == (
        f"{path}: no column of encoded images (binary, or a {{bytes, path}} struct as Hugging Face exports them); "
        "its columns: id (int64), caption (string)")
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"img": pa.array([jpeg(rng, 8, 8)] * 3, pa.binary()), "label": [1, None, 0]}), path)
    assert one_line_error(capsys, "data", "prepare", str(path)) == (
        f"{path}: label column 'label' has 1 empty (null) values; fill them or drop those rows, or pass "
        "--label-column for another column")
    assert one_line_error(capsys, "data", "prepare", str(path), "--label-column", "nope") == (
        f"{path}: --label-column 'nope' does not exist; it must be an integer or string column (usable: label)")


def test_mixed_sizes_without_image_size_name_the_image(ray_local, tmp_path: Path, capsys):
    rng = np.random.default_rng(1)
    files = {f"{i:02d}.jpg": jpeg(rng, 10, 10) for i in range(6)} | {"09-wide.jpg": jpeg(rng, 10, 14)}
    folder = to_folder(files, tmp_path / "mixed")
    out = tmp_path / "out"
    assert one_line_error(capsys, "data", "prepare", folder, "--out", str(out)) == (
        f"{folder}/09-wide.jpg: image is 14x10 but 00.jpg is 10x10; pass --image-size to resize all images")
    assert storage.list_dir(str(out)) == []


def test_refused_credentials_are_one_line(request, monkeypatch, capsys):
    bucket, key_id, _ = request.getfixturevalue("s3_with_auth")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert one_line_error(capsys, "data", "prepare", f"{bucket}/raw").startswith(f"access to {bucket}/raw was denied (")


@pytest.mark.slow
def test_two_nodes_decode_and_split_as_one_cpu_does(tmp_path: Path):
    """Its own process: a 1-CPU Ray, then a two-node cluster, on the same folder and seed."""
    folder = to_folder(image_files(60), tmp_path / "imgs")
    script = Path(__file__).parent / "scripts" / "two_node_prepare.py"
    done = subprocess.run([sys.executable, str(script), folder, str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert len(result["alive"]) == 2 and set(result["two"]["nodes"]) == set(result["alive"]), result
    assert len(result["one"]["nodes"]) == 1 and result["one"]["count"] == result["two"]["count"] == 60
    for split in ("train", "holdout"):
        assert rows(str(tmp_path / "out" / "one-cpu"), split) == rows(str(tmp_path / "out" / "two-nodes"), split)


@pytest.mark.slow
def test_submitted_prepare_reads_s3_on_a_local_head(head, s3_bucket: str, capsys):
    _, store = head
    source = to_s3(image_files(12), f"{s3_bucket}/raw")
    code, out, err = run(capsys, "submit", "--", "data", "prepare", source, "--image-size", "8", "--name", "s3-job")
    assert code == 0, err[-3000:]
    assert "prepared s3-job: 12 images 8x8x3" in out
    manifest = json.loads((store / "datasets" / "s3-job" / "manifest.json").read_text())
    assert manifest["class_names"] == sorted(CLASSES) and manifest["source"]["uri"] == source


def test_progress_shows_the_rate_and_an_eta(capsys):
    from genai_ray.data.prepare import Progress

    meter = Progress(1000, "preparing p")
    meter.start -= 10.0  # 10 s in, 250 done: 25 images/s, 30 s to go
    meter.last = meter.start
    meter.update(250)
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(r"preparing p: 250/1,000 images \(25%\), 25 images/s, ETA (29|30|31)s", line), line


def test_a_large_jpeg_decodes_at_a_reduced_scale_close_to_a_full_decode():
    out = io.BytesIO()
    Image.fromarray(load_sample_images().images[0]).save(out, "JPEG", quality=90)  # 640x427
    spec = DecodeSpec(32, 32, "RGB", 32, crop=True, seed=0, holdout=0.1)
    reduced = decode_image(out.getvalue(), spec).astype(np.int16)
    with Image.open(out) as im:
        full = im.convert("RGB")
    full = np.asarray(full.crop(centre_box(*full.size)).resize((32, 32), Image.BILINEAR)).astype(np.int16)
    difference = np.abs(reduced - full).mean()
    assert 0 < difference < 3, f"mean difference {difference:.2f} of 255: not a reduced decode, or not close"


def test_decode_tasks_hold_at_most_a_batch_and_a_byte_budget_of_images(ray_local):
    assert decode_batch_rows(1_000_000, 5_000) == DECODE_BATCH  # small JPEGs: the image cap
    assert decode_batch_rows(1_000_000, 4 << 20) == DECODE_TASK_BYTES // (4 << 20)  # 4 MiB photos: the byte cap
    assert decode_batch_rows(1_000_000, 1 << 30) == 1  # one huge image still gets a task
    assert decode_batch_rows(40, 5_000) <= 10  # a small source is split so that every CPU gets two tasks
