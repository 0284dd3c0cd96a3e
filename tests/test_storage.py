"""Storage URIs: the same operations on a local folder, file:// and moto's S3 over HTTP, and clear errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from genai_ray import storage
from genai_ray.errors import UserError


@pytest.fixture(params=["local", "file", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket") + "/root"
    return str(tmp_path / "root") if request.param == "local" else f"file://{tmp_path}/root"


def test_write_read_list_delete_round_trip(root: str):
    a, b = storage.join(root, "d", "a.bin"), storage.join(root, "d", "sub", "b.bin")
    assert not storage.exists(a) and storage.list_dir(storage.join(root, "d")) == []
    storage.write_bytes(a, b"\x00first")
    storage.write_bytes(b, b"second")
    storage.write_bytes(a, b"\x00replaced")  # overwrite in place
    assert storage.read_bytes(a) == b"\x00replaced" and storage.size(a) == 9
    assert storage.list_dir(storage.join(root, "d")) == ["a.bin", "sub"]
    assert storage.exists(b) and storage.size(storage.join(root, "d", "missing")) is None
    storage.delete(a)
    storage.delete(a)  # missing is fine by default
    assert not storage.exists(a) and storage.list_dir(storage.join(root, "d")) == ["sub"]
    storage.delete(storage.join(root, "d"))
    assert storage.list_dir(root) == []
    with pytest.raises(UserError, match=r"a\.bin does not exist"):
        storage.read_bytes(a)
    with pytest.raises(UserError, match="does not exist"):
        storage.delete(a, missing_ok=False)


def test_local_writes_leave_no_temporary_files(tmp_path: Path):
    storage.write_bytes(str(tmp_path / "x" / "m.json"), b"{}")
    storage.write_bytes(str(tmp_path / "x" / "m.json"), b"{}")
    assert sorted(os.listdir(tmp_path / "x")) == ["m.json"]


def test_resolve_maps_each_scheme_to_one_filesystem(tmp_path: Path, s3_bucket: str):
    local_fs, local_path = storage.resolve(str(tmp_path / "a"))
    file_fs, file_path = storage.resolve(f"file://{tmp_path}/a")
    s3_fs, s3_path = storage.resolve(f"{s3_bucket}/p/q/")
    assert isinstance(local_fs, pafs.LocalFileSystem) and local_path == file_path == str(tmp_path / "a")
    assert isinstance(s3_fs, pafs.S3FileSystem) and s3_path == s3_bucket[len("s3://") :] + "/p/q"
    assert storage.resolve("~/x")[1] == str(Path.home() / "x")
    assert storage.join("s3://b/p/", "datasets", "d") == "s3://b/p/datasets/d"
    assert storage.join("file:///t", "a") == "file:///t/a"


@pytest.mark.parametrize(
    ("uri", "message"),
    [("", "empty storage location"), ("gs://b/x", "unsupported storage scheme 'gs'"), ("s3:///x", "names no bucket")],
)
def test_bad_uris_are_user_errors(uri: str, message: str):
    with pytest.raises(UserError, match=message):
        storage.resolve(uri)


def test_default_store_follows_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GENAI_RAY_STORE", "s3://bucket/prefix")
    assert storage.default_store() == "s3://bucket/prefix"
    monkeypatch.delenv("GENAI_RAY_STORE")
    assert storage.default_store() == str(Path("~/.genai-ray/store").expanduser())


def test_endpoint_comes_from_aws_endpoint_url(s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch):
    """The fixture's moto server is reached only through AWS_ENDPOINT_URL; a broken value is a clear error."""
    storage.write_bytes(f"{s3_bucket}/k", b"v")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "localhost-9000")
    with pytest.raises(UserError, match="AWS_ENDPOINT_URL='localhost-9000' is not a URL"):
        storage.read_bytes(f"{s3_bucket}/k")


def test_missing_bucket_is_named_for_reads_writes_and_checks(s3_endpoint: str):
    for op in (lambda u: storage.write_bytes(u, b"x"), storage.check_writable, storage.check_bucket):
        with pytest.raises(UserError, match=r"S3 bucket 'absent-bucket' does not exist \(for s3://absent-bucket/k\)"):
            op("s3://absent-bucket/k")


def test_a_local_file_is_not_a_writable_folder(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        storage.check_writable(str(tmp_path / "f"))


def test_unreachable_endpoint_is_named(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(UserError, match=rf"cannot reach the S3 endpoint http://127\.0\.0\.1:{port} .*AWS_ENDPOINT_URL"):
        storage.check_bucket("s3://any-bucket/x")
