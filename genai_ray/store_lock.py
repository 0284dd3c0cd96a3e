"""One lock per model in the store (``models/<name>/model.lock``), held by promotions and exports.

A promotion reads the champion, compares, appends to the history and writes the pointer; an export picks the
next ``vNNNN`` and writes it. Under the lock each is one step, so two at once lose no history entry and never
pick the same version.

Locally the lock is ``flock`` on the file, which the kernel releases with its holder. On S3 it is an object
created with a conditional PUT (``If-None-Match: *``) that holds a random owner token:
- only its holder deletes it: the release reads the token and deletes with ``If-Match`` on the ETag it read, so a
  holder whose lock was broken while it stalled leaves the new holder's lock alone;
- a lock older than ``stale_s`` was left by a holder that died, and a waiter breaks it, again with ``If-Match``,
  so two waiters cannot break one lock and then the next holder's;
- its age is S3's own: ``LastModified`` against the ``Date`` of the same response, so a skewed local clock does
  not matter. An endpoint without a ``Date`` header gets a lease counted from when this process first saw it.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

from genai_ray import storage
from genai_ray.errors import UserError

LOCK_FILE = "model.lock"
LOCK_WAIT_S = 60.0  # how long a promotion or export waits for another one to finish
STALE_LOCK_S = 120.0  # an S3 lock older than this (by S3's clock) was left by a holder that died; it is broken
BUSY_CODES = ("PreconditionFailed", "ConditionalRequestConflict")  # S3's answers to a conditional request that lost


def lock_uri(store: str, name: str) -> str:
    return storage.join(store, "models", name, LOCK_FILE)


@contextlib.contextmanager
def model_lock(store: str, name: str, wait_s: float = LOCK_WAIT_S, stale_s: float = STALE_LOCK_S) -> Iterator[None]:
    """Hold model ``name``'s lock for the block: local ``flock``, or an S3 object only its holder deletes."""
    uri = lock_uri(store, name)
    if storage.is_s3(uri):
        with _s3_lock(uri, name, wait_s, stale_s):
            yield
        return
    path = storage.resolve(uri)[1]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:  # its own open file description: threads of one process exclude each other
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(f"{path}: another promotion or export of {name!r} has held the lock for over "
                                    f"{wait_s:.0f} s; retry when it finishes") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_age(head: dict[str, Any], first_seen: dict[str, float]) -> float:
    """Seconds since the lock object was written, by S3's clock (its ``Date`` header against ``LastModified``);
    without a ``Date``, seconds since this process first saw that very object (``first_seen``, by ETag)."""
    date = (head.get("ResponseMetadata", {}).get("HTTPHeaders") or {}).get("date")
    if date:
        return (parsedate_to_datetime(date) - head["LastModified"]).total_seconds()
    return time.monotonic() - first_seen.setdefault(head["ETag"], time.monotonic())


def _code(err: Any) -> str:
    return err.response.get("Error", {}).get("Code", "")


@contextlib.contextmanager
def _s3_lock(uri: str, name: str, wait_s: float, stale_s: float) -> Iterator[None]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    client = boto3.session.Session().client("s3")  # a session per lock: boto3's default one is not thread-safe
    token = uuid.uuid4().hex
    body = json.dumps({"token": token, "by": _who(), "host": socket.gethostname(), "pid": os.getpid(),
                       "name": name}).encode()
    first_seen: dict[str, float] = {}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"]
            break
        except ClientError as err:
            if _code(err) not in BUSY_CODES:
                raise UserError(f"{uri}: cannot take the lock ({err.response.get('Error', {}).get('Message', err)})"
                                ) from None
        try:
            held = client.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if _code(err) in ("404", "NoSuchKey", "NotFound"):
                continue  # released in between: try again at once
            raise UserError(f"{uri}: cannot read the lock ({_code(err)}); check s3:GetObject on the store") from None
        if lock_age(held, first_seen) > stale_s:
            with contextlib.suppress(ClientError):  # someone else broke or replaced it first
                client.delete_object(Bucket=bucket, Key=key, IfMatch=held["ETag"])  # its holder died
            continue
        if time.monotonic() > deadline:
            raise UserError(f"{uri}: another promotion or export of {name!r} holds the lock for over {wait_s:.0f} s; "
                            f"retry when it finishes (a lock older than {stale_s:.0f} s is broken automatically)")
        time.sleep(random.uniform(0.05, 0.25))  # noqa: S311 - jitter, not security
    try:
        yield
    finally:
        _release(client, bucket, key, token, etag, uri)


def _release(client: Any, bucket: str, key: str, token: str, etag: str, uri: str) -> None:
    """Delete the lock only while it is still ours: same token, and (``If-Match``) the very object we read."""
    try:
        current = client.get_object(Bucket=bucket, Key=key)
        mine = json.loads(current["Body"].read()).get("token") == token and current["ETag"] == etag
    except (ClientError, ValueError):
        mine = False
    if not mine:
        print(f"warning: {uri} was broken as stale while this process held it; left the new holder's lock alone",
              file=sys.stderr, flush=True)
        return
    try:
        client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
    except ClientError as err:
        if _code(err) in BUSY_CODES:
            return  # broken and retaken between our read and our delete: it is not ours any more
        if _code(err) not in ("NotImplemented", "InvalidArgument"):
            raise
        client.delete_object(Bucket=bucket, Key=key)  # an endpoint without conditional deletes: the token matched


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
