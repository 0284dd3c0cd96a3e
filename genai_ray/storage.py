"""Every location is a URI: a local path, ``file://...`` or ``s3://bucket/prefix``.

This module is the only place that turns a URI into a (pyarrow filesystem, path) pair. S3-compatible
endpoints (MinIO, moto, Ceph) come from the standard ``AWS_ENDPOINT_URL``; credentials come from the
standard AWS chain, which pyarrow's S3 client reads itself. We pass the endpoint explicitly because
``FileSystem.from_uri("s3://...")`` resolves the bucket region against real AWS (docs/ray-notes.md).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import uuid
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from genai_ray.errors import UserError

STORE_ENV = "GENAI_RAY_STORE"
DEFAULT_STORE = "~/.genai-ray/store"
# Enough to ride out throttling (503 SlowDown) and dropped connections, short enough that an unreachable
# endpoint fails within seconds rather than half a minute.
S3_RETRY_ATTEMPTS = 5


def default_store() -> str:
    """The embedded default store root: ``$GENAI_RAY_STORE`` or ``~/.genai-ray/store``."""
    return os.environ.get(STORE_ENV) or str(Path(DEFAULT_STORE).expanduser())


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI without losing its scheme."""
    if is_s3(uri) or uri.startswith("file://"):
        return uri.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)
    return os.path.join(uri, *parts)


def _endpoint() -> tuple[str | None, str]:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return None, "https"
    parsed = urlparse(endpoint)
    if not parsed.scheme or not parsed.netloc:
        raise UserError(f"AWS_ENDPOINT_URL={endpoint!r} is not a URL; set it like http://127.0.0.1:9000")
    return parsed.netloc, parsed.scheme


@lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, scheme: str, region: str, key_fingerprint: str) -> pafs.S3FileSystem:
    # key_fingerprint only keys the cache, so changed credentials get a new client; pyarrow reads the chain.
    del key_fingerprint
    return pafs.S3FileSystem(
        endpoint_override=endpoint,
        scheme=scheme,
        region=region,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_RETRY_ATTEMPTS),
        connect_timeout=5,
        request_timeout=30,
        allow_bucket_creation=False,
        allow_bucket_deletion=False,
    )


def s3_filesystem() -> pafs.S3FileSystem:
    endpoint, scheme = _endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    chain = [os.environ.get(k, "") for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                              "AWS_PROFILE")]
    fingerprint = hashlib.sha256("\0".join(chain).encode()).hexdigest()[:16]
    return _s3_filesystem(endpoint, scheme, region, fingerprint)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Map a URI to (filesystem, path inside it)."""
    if not uri:
        raise UserError("empty storage location; pass a local folder or s3://bucket/prefix")
    if is_s3(uri):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise UserError(f"{uri!r} names no bucket; use s3://bucket/prefix")
        return s3_filesystem(), (parsed.netloc + parsed.path).rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise UserError(f"unsupported storage scheme {scheme!r} in {uri!r}; use a local path, file:// or s3://")
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return pafs.LocalFileSystem(), str(Path(path).expanduser().absolute())


_MISSING_BUCKET = re.compile(r"NoSuchBucket|Bucket '[^']*' not found|bucket does not exist", re.IGNORECASE)
_DENIED = re.compile(r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken|\b403\b")
_UNREACHABLE = re.compile(r"NETWORK_CONNECTION|Could not connect|Couldn't connect|Could not resolve host")


def _describe_os_error(uri: str, err: OSError) -> UserError:
    """Turn a filesystem error into one line that says what failed, where, and how to fix it."""
    text = str(err)
    first = text.splitlines()[0][:200] if text else type(err).__name__
    if is_s3(uri):
        bucket = urlparse(uri).netloc
        if _MISSING_BUCKET.search(text):
            return UserError(f"S3 bucket {bucket!r} does not exist (for {uri}); create it or fix the URI")
        if _DENIED.search(text):
            return UserError(
                f"access to {uri} was denied ({first[:160]}); check the AWS credentials "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role) and the bucket policy"
            )
        if _UNREACHABLE.search(text):
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
            return UserError(f"cannot reach the S3 endpoint {endpoint} (for {uri}); check AWS_ENDPOINT_URL and "
                             "that the store is running")
    return UserError(f"storage error at {uri}: {first}")


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as err:
        raise _describe_os_error(uri, err) from err


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError as err:
        raise UserError(f"{uri} does not exist") from err
    except OSError as err:
        raise _describe_os_error(uri, err) from err


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object so that readers never see it half-written.

    On S3 a single PUT is atomic by itself (and S3 has no folders to create). Locally we write a temporary
    sibling, fsync it and rename it into place.
    """
    fs, path = resolve(uri)
    try:
        if is_s3(uri):
            with fs.open_output_stream(path) as out:
                out.write(data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as err:
        raise _describe_os_error(uri, err) from err


def size(uri: str) -> int | None:
    """The size in bytes of the object at ``uri``, or None when there is none."""
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as err:
        raise _describe_os_error(uri, err) from err
    return info.size if info.type == pafs.FileType.File else None


def delete(uri: str, missing_ok: bool = True) -> None:
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)
        elif not missing_ok:
            raise UserError(f"{uri} does not exist")
    except OSError as err:
        raise _describe_os_error(uri, err) from err


def list_dir(uri: str) -> list[str]:
    """Names (not paths) directly under a folder URI; empty when it does not exist."""
    fs, path = resolve(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise _describe_os_error(uri, err) from err
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def check_bucket(uri: str) -> None:
    """For an S3 URI: fail with a clear message when the bucket is missing, unreachable or refuses us."""
    if not is_s3(uri):
        return
    fs, path = resolve(uri)
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as err:
        raise _describe_os_error(uri, err) from err
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"S3 bucket {bucket!r} does not exist (for {uri}); create it or fix the URI")


def check_writable(uri: str) -> None:
    """Fail fast, before any work, when ``uri`` cannot hold a folder of objects."""
    check_bucket(uri)
    if is_s3(uri):
        return
    _, path = resolve(uri)
    if os.path.isfile(path):
        raise UserError(f"{uri} is a file, not a folder; choose another location")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def walk(uri: str) -> list[pafs.FileInfo]:
    """Every file under a folder URI, at any depth (one listing, paged by the client); empty when there is none."""
    fs, path = resolve(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as err:
        raise _describe_os_error(uri, err) from err
    return [i for i in infos if i.type == pafs.FileType.File]
