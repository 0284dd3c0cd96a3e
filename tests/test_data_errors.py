"""Bad input to prepare and read: one clear line naming the file or shard and the fix, and no dataset that looks
complete (no manifest.json) left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genai_ray import storage
from genai_ray.data import sources
from genai_ray.data.prepare import prepare
from genai_ray.data.reader import open_dataset
from genai_ray.data.sources import open_source
from genai_ray.errors import IntegrityError, UserError
from tests.helpers import prepare_digits


def image_folder(root: Path, n: int, size=(6, 6), corrupt: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    if corrupt:
        good = (root / "000.png").read_bytes()
        (root / corrupt).write_bytes(good[: len(good) // 2])  # a truncated PNG
    return root


def assert_no_dataset(uri: str) -> None:
    assert not storage.exists(storage.join(uri, "manifest.json"))
    assert storage.list_dir(uri) == [], "a failed prepare deletes the shards it wrote"
    with pytest.raises(UserError, match="manifest.json is missing"):
        open_dataset(uri)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read folders 4 images at a time, so shards are written before a bad image late in the folder."""
    monkeypatch.setattr(sources, "CHUNK", 4)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_corrupt_image_names_the_file_and_leaves_nothing(where, tmp_path, small_chunks, request):
    root = request.getfixturevalue("s3_bucket") if where == "s3" else str(tmp_path / "store")
    uri = storage.join(root, "bad")
    folder = image_folder(tmp_path, 12, corrupt="zz-broken.png")
    with pytest.raises(UserError) as err:
        prepare(open_source(str(folder)), uri, name="bad", holdout=0.0, shard_rows=2, progress=False)
    assert one_line(err) == f"{folder / 'zz-broken.png'}: unreadable or corrupt image (OSError); remove or replace it"
    assert_no_dataset(uri)


@pytest.mark.parametrize("name", ["000-first.jpg", "zzz-last.jpg"])
def test_an_image_that_is_not_an_image_at_all(tmp_path, name):
    image_folder(tmp_path, 2)
    (tmp_path / name).write_text("hello")
    with pytest.raises(UserError) as err:
        prepare(open_source(str(tmp_path)), str(tmp_path / "out"), name="x", progress=False)
    assert one_line(err) == f"{tmp_path / name}: unreadable or corrupt image (UnidentifiedImageError); remove or " \
                            "replace it"


def test_mixed_sizes_need_image_size_which_fixes_them(tmp_path, small_chunks):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image_folder(folder, 9)
    Image.new("RGB", (10, 7)).save(folder / "zz-wide.png")
    uri = str(tmp_path / "out")
    with pytest.raises(UserError) as err:
        prepare(open_source(str(folder)), uri, name="mixed", shard_rows=2, progress=False)
    assert one_line(err) == f"{folder / 'zz-wide.png'}: image is 10x7 but 000.png is 6x6; pass --image-size to " \
                            "resize all images"
    assert_no_dataset(uri)
    m = prepare(open_source(str(folder), image_size=8), uri, name="mixed", progress=False)
    assert m.shape == (8, 8, 3) and m.count == 10
    assert open_dataset(uri).read_numpy("train")[0].shape[1:] == (8, 8, 3)


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        open_source(str(tmp_path / "empty"))
    assert one_line(err) == f"{tmp_path / 'empty'}: no .png/.jpg/.jpeg images found; point at a folder of images"


def test_unknown_source():
    with pytest.raises(UserError) as err:
        open_source("cifar10")
    assert one_line(err) == ("unknown source 'cifar10': not 'digits', 'mnist', 'shapes', 'photos', or an "
                             "existing folder/.npz/IDX file")


def test_missing_bucket(s3_endpoint):
    with pytest.raises(UserError) as err:
        prepare(open_source("digits"), "s3://no-such-bucket-here/ds", name="d", progress=False)
    assert one_line(err) == ("S3 bucket 'no-such-bucket-here' does not exist (for s3://no-such-bucket-here/ds); "
                             "create it or fix the URI")
    with pytest.raises(UserError, match="S3 bucket 'no-such-bucket-here' does not exist"):
        open_dataset("s3://no-such-bucket-here/ds")


def test_wrong_credentials_are_refused_and_named(s3_with_auth, monkeypatch):
    bucket, key_id, secret = s3_with_auth
    uri = f"{bucket}/ds"
    for wrong in ({"AWS_ACCESS_KEY_ID": "AKIANOBODY", "AWS_SECRET_ACCESS_KEY": secret},  # unknown key
                  {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}):  # bad signature
        for name, value in wrong.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(UserError) as err:
            prepare(open_source("digits"), uri, name="d", progress=False)
        assert one_line(err).startswith(f"access to {uri} was denied (")
        assert "check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE" in str(err.value)
    # The same server accepts the right credentials, so the refusals above were really about the credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    prepare(open_source("digits"), uri, name="d", progress=False)
    assert open_dataset(uri, checksums=True).manifest.count == 1797
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(UserError, match=rf"access to {uri}/manifest.json was denied"):
        open_dataset(uri)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_existing_output_needs_overwrite(where, tmp_path, request):
    root = request.getfixturevalue("s3_bucket") if where == "s3" else str(tmp_path / "store")
    uri = storage.join(root, "d")
    first = prepare(open_source("shapes", count=50, seed=1), uri, name="d", progress=False)
    with pytest.raises(UserError) as err:
        prepare(open_source("shapes", count=80, seed=2), uri, name="d", progress=False)
    assert one_line(err) == f"{uri} already holds data; pass --overwrite to replace it or choose another --out"
    assert open_dataset(uri, checksums=True).manifest == first, "the refused prepare changed nothing"
    storage.write_bytes(storage.join(uri, "features", "0123abcd", "feature-model.json"), b"{}")  # an eval cache
    second = prepare(open_source("shapes", count=80, seed=2), uri, name="d", shard_rows=30, overwrite=True,
                     progress=False)
    assert open_dataset(uri, checksums=True).manifest == second and second.count == 80
    assert sorted(storage.list_dir(uri)) == sorted(["manifest.json", *(s.path for s in second.shards)])


def test_interrupted_overwrite_never_looks_complete(tmp_path, small_chunks):
    uri = prepare_digits(str(tmp_path / "d"), name="d")
    folder = image_folder(tmp_path, 10, corrupt="zz-broken.png")
    with pytest.raises(UserError, match="zz-broken.png"):
        prepare(open_source(str(folder)), uri, name="d", shard_rows=2, overwrite=True, progress=False)
    assert_no_dataset(uri)


def test_overwrite_refuses_to_delete_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="holds 'thesis.tex', which is not part of a genai-ray dataset"):
        prepare(open_source("digits"), str(tmp_path / "home"), name="d", overwrite=True, progress=False)
    assert (tmp_path / "home" / "thesis.tex").read_text() == "years of work"


@pytest.fixture(params=["local", "s3"])
def dataset(request, tmp_path) -> str:
    root = request.getfixturevalue("s3_bucket") if request.param == "s3" else str(tmp_path)
    return prepare_digits(storage.join(root, "digits"), shard_rows=500)


def edit_manifest(uri: str, change) -> None:
    m = json.loads(storage.read_bytes(storage.join(uri, "manifest.json")))
    change(m)
    storage.write_bytes(storage.join(uri, "manifest.json"), json.dumps(m).encode())


def test_flipped_byte_fails_the_checksum(dataset):
    shard = storage.join(dataset, "train-00001.parquet")
    data = bytearray(storage.read_bytes(shard))
    data[len(data) // 2] ^= 0xFF
    storage.write_bytes(shard, bytes(data))
    open_dataset(dataset)  # size and row count still agree: only the checksum can tell
    with pytest.raises(IntegrityError) as err:
        open_dataset(dataset, checksums=True)
    assert one_line(err).startswith(f"{shard}: sha256 ")
    assert err.value.args[0].endswith("does not match the manifest's " + json.loads(
        storage.read_bytes(storage.join(dataset, "manifest.json")))["shards"][1]["sha256"][:12]
        + "...; the shard is corrupt, re-run data prepare")


def test_missing_shard(dataset):
    storage.delete(storage.join(dataset, "holdout-00000.parquet"))
    with pytest.raises(IntegrityError) as err:
        open_dataset(dataset)
    assert one_line(err) == (f"{storage.join(dataset, 'holdout-00000.parquet')}: shard listed in the manifest is "
                             "missing; re-run data prepare")


def test_shard_of_the_wrong_size(dataset):
    shard = storage.join(dataset, "train-00000.parquet")
    storage.write_bytes(shard, storage.read_bytes(storage.join(dataset, "train-00003.parquet")))
    with pytest.raises(IntegrityError, match=r"train-00000\.parquet: shard is \d+ bytes, manifest says \d+; re-run"):
        open_dataset(dataset)


def test_manifest_row_count_that_disagrees_with_the_shard(dataset):
    def shift(m):
        m["shards"][0]["rows"] += 1
        m["train_count"] += 1
        m["count"] += 1

    edit_manifest(dataset, shift)
    with pytest.raises(IntegrityError) as err:
        open_dataset(dataset)
    assert one_line(err) == (f"{storage.join(dataset, 'train-00000.parquet')}: shard has 500 rows, manifest says "
                             "501; re-run data prepare")


def test_manifest_totals_that_disagree_with_its_shards(dataset):
    edit_manifest(dataset, lambda m: m.update(train_count=m["train_count"] + 5))
    with pytest.raises(IntegrityError, match="manifest.json: its train shards hold 1618 rows but it says 1623"):
        open_dataset(dataset)


def test_manifest_shape_that_disagrees_with_the_shards(dataset):
    edit_manifest(dataset, lambda m: m.update(shape=[16, 16, 1]))
    with pytest.raises(IntegrityError, match=r"train-00000\.parquet: images are .* manifest says shape \(16, 16, 1\)"):
        open_dataset(dataset)


def test_unreadable_manifest(dataset):
    storage.write_bytes(storage.join(dataset, "manifest.json"), b"{not json")
    with pytest.raises(UserError, match=r"manifest\.json is not a valid manifest .*; re-run data prepare"):
        open_dataset(dataset)
