"""Promotion: the store's ``models/<name>/champion.json`` names the generator that Serve runs.

A candidate that scores worse than the current champion is refused unless forced. Every promotion is
recorded in ``models/<name>/promotions.json`` (who beat whom, with what score). The pointer is written
last, atomically, so a failed promotion never leaves a half-written champion.

Promotions of one model are serialised by a lock (``models/<name>/promote.lock``): read champion, compare,
append to the history and write the pointer happen as one step, so two promotions at once lose no entry and
the pointer names the history's last entry. Locally the lock is ``flock``; on S3 it is an object created with a
conditional PUT (``If-None-Match: *``), which S3 refuses while another promoter holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import random
import time
from collections.abc import Iterator
from typing import Any

from genai_ray import storage
from genai_ray.data.manifest import now_iso
from genai_ray.errors import UserError
from genai_ray.names import check_name
from genai_ray.package import champion_uri, read_champion, read_meta

HISTORY_FILE = "promotions.json"
LOCK_FILE = "promote.lock"
LOCK_WAIT_S = 60.0  # how long a promotion waits for another one to finish
STALE_LOCK_S = 120.0  # an S3 lock older than this was left by a promoter that died; it is broken


@contextlib.contextmanager
def promotion_lock(store: str, name: str) -> Iterator[None]:
    """Hold the model's promotion lock (local ``flock`` or an S3 conditional-PUT object) for the block."""
    uri = storage.join(store, "models", name, LOCK_FILE)
    if storage.is_s3(uri):
        with _s3_lock(uri):
            yield
        return
    path = storage.resolve(uri)[1]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(f"{path}: another promotion of {name!r} has held the lock for over "
                                    f"{LOCK_WAIT_S:.0f} s; retry when it finishes") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _s3_lock(uri: str) -> Iterator[None]:
    import boto3
    from botocore.exceptions import ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3")
    body = json.dumps({"by": _who(), "pid": os.getpid(), "at": now_iso()}).encode()
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            break
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise UserError(f"{uri}: cannot take the promotion lock "
                                f"({err.response.get('Error', {}).get('Message', err)})") from None
        with contextlib.suppress(ClientError):
            held = client.head_object(Bucket=bucket, Key=key)
            age = time.time() - held["LastModified"].timestamp()
            if age > STALE_LOCK_S:
                client.delete_object(Bucket=bucket, Key=key)  # its promoter died mid-promotion
                continue
        if time.monotonic() > deadline:
            raise UserError(f"{uri}: another promotion holds the lock for over {LOCK_WAIT_S:.0f} s; retry when it "
                            f"finishes (a lock older than {STALE_LOCK_S:.0f} s is broken automatically)")
        time.sleep(random.uniform(0.05, 0.25))  # noqa: S311 - jitter, not security
    try:
        yield
    finally:
        client.delete_object(Bucket=bucket, Key=key)


def better(candidate: float, incumbent: float, mode: str) -> bool:
    return candidate < incumbent if mode == "min" else candidate > incumbent


def promote(store: str, name: str, package_uri: str, *, metric: str = "eval/fd", mode: str = "min",
            score: float | None = None, force: bool = False, campaign: str | None = None) -> dict[str, Any]:
    """Make ``package_uri`` the champion of ``name``. Returns the new pointer."""
    check_name(name, "model name")
    meta = read_meta(package_uri)  # refuses a package without a valid model.json
    if score is None:
        if metric not in meta.metrics:
            raise UserError(f"{package_uri} has no '{metric}' in model.json; run 'genai-ray evaluate' on it first")
        score = float(meta.metrics[metric])
    with promotion_lock(store, name):
        current = read_champion(store, name)
        if current and current.get("metric") == metric and not force and not better(score, current["score"], mode):
            raise UserError(
                f"refusing to promote {meta.name}/{meta.version} ({metric}={score:.4g}): the champion "
                f"{current.get('version')} scores {current['score']:.4g} ({'lower' if mode == 'min' else 'higher'} "
                "is better); pass --force to promote anyway"
            )
        pointer = {
            "uri": package_uri, "name": meta.name, "version": meta.version, "metric": metric, "mode": mode,
            "score": score, "promoted_at": now_iso(), "promoted_by": _who(), "campaign": campaign,
            "forced": bool(force and current is not None), "previous": current and
            {k: current.get(k) for k in ("uri", "version", "score")},
        }
        history_uri = storage.join(store, "models", name, HISTORY_FILE)
        history = json.loads(storage.read_bytes(history_uri)) if storage.exists(history_uri) else []
        storage.write_bytes(history_uri, json.dumps([*history, pointer], indent=2).encode())
        storage.write_bytes(champion_uri(store, name), json.dumps(pointer, indent=2).encode())
    return pointer


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
