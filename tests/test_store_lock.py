"""The model lock that promotions and exports share: distinct versions under concurrency, and on S3 a lock that
only its holder deletes and whose age is read on S3's own clock."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from genai_ray import storage
from genai_ray.errors import UserError
from genai_ray.package.format import add_version, load_package, write_package
from genai_ray.store_lock import lock_age, lock_uri, model_lock
from tests.helpers import LATENT, toy_generator


def meta_fields(version: str) -> dict:
    return {"name": "toy", "version": version, "image_shape": (8, 8, 1), "latent_dim": LATENT, "conditional": False,
            "class_names": None, "class_probs": None, "dataset_uri": "memory://toy", "dataset_sha256": "0" * 64,
            "config": {}, "created_at": datetime.now(UTC).isoformat()}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_eight_concurrent_exports_get_eight_distinct_versions(where: str, tmp_path: Path, s3_bucket: str) -> None:
    store = str(tmp_path / "store") if where == "local" else f"{s3_bucket}/store"
    generator = toy_generator(conditional=False)
    start = threading.Barrier(8)

    def export(_: int) -> str:
        start.wait()
        return add_version(store, "toy", lambda uri, version: write_package(uri, generator, meta_fields(version), None))

    with ThreadPoolExecutor(8) as pool:
        uris = list(pool.map(export, range(8)))
    versions = sorted(uri.rsplit("/", 1)[1] for uri in uris)
    assert versions == [f"v{i:04d}" for i in range(1, 9)], versions
    assert sorted(load_package(uri).meta.version for uri in uris) == versions  # each package whole and its own
    assert not storage.exists(lock_uri(store, "toy")) or where == "local"  # S3: every holder removed its lock


def test_lock_age_is_read_on_s3s_clock_not_the_local_one() -> None:
    written = datetime(2020, 1, 1, tzinfo=UTC)  # years ago by the local clock: only S3's clock says 5 s
    head = {"ETag": '"a"', "LastModified": written, "ResponseMetadata": {"HTTPHeaders": {
        "date": "Wed, 01 Jan 2020 00:00:05 GMT"}}}
    assert lock_age(head, {}) == 5.0
    seen: dict[str, float] = {}
    no_date = {"ETag": '"b"', "LastModified": written, "ResponseMetadata": {"HTTPHeaders": {}}}
    assert lock_age(no_date, seen) < 1.0  # a lease from when this process first saw it, not from LastModified
    time.sleep(0.3)
    assert 0.3 <= lock_age(no_date, seen) < 5.0


def lock_token(uri: str) -> str:
    return json.loads(storage.read_bytes(uri))["token"]


def test_a_slow_holder_whose_lock_was_broken_leaves_the_new_holders_lock(s3_bucket: str, capfd) -> None:
    store, uri = f"{s3_bucket}/store", lock_uri(f"{s3_bucket}/store", "m")
    taken, done = threading.Event(), threading.Event()
    newcomer_token: list[str] = []

    def newcomer() -> None:
        with model_lock(store, "m", wait_s=30, stale_s=1):  # breaks the stalled holder's lock once S3 says > 1 s
            newcomer_token.append(lock_token(uri))
            taken.set()
            done.wait(60)

    thread = threading.Thread(target=newcomer)
    try:
        with model_lock(store, "m", stale_s=1):
            slow = lock_token(uri)
            thread.start()
            assert taken.wait(30), "the waiter never broke the stale lock"
            assert newcomer_token[0] != slow
        # The slow holder's release found someone else's token: the newcomer still holds its lock.
        assert storage.exists(uri) and lock_token(uri) == newcomer_token[0]
        assert "was broken as stale while this process held it" in capfd.readouterr().err
    finally:
        done.set()
        if thread.is_alive():
            thread.join(30)
    assert not storage.exists(uri)  # the newcomer released its own


def test_a_live_lock_makes_waiters_give_up_in_one_line(s3_bucket: str, tmp_path: Path) -> None:
    for store in (f"{s3_bucket}/store", str(tmp_path / "store")):
        with model_lock(store, "m"):
            with pytest.raises(UserError, match="another promotion or export of 'm'") as err, \
                    model_lock(store, "m", wait_s=0.5):
                pass
            assert "\n" not in str(err.value)
        with model_lock(store, "m", wait_s=0.5):  # free again
            pass


@pytest.mark.slow  # 16 exports of a real generator checkpoint
@pytest.mark.parametrize("where", ["local", "s3"])
def test_eight_concurrent_export_checkpoints_of_one_model_get_distinct_versions(
        where: str, tmp_path: Path, s3_bucket: str) -> None:
    """The export itself (a Ray checkpoint in, a model package out), 8 at once for one model name."""
    import os

    import tensorflow as tf
    from ray.train import Checkpoint

    from genai_ray.config import build_config
    from genai_ray.data.prepare import prepare
    from genai_ray.data.reader import open_dataset
    from genai_ray.data.sources import open_source
    from genai_ray.gan import family
    from genai_ray.package.export import export_checkpoint
    from genai_ray.train.loop import STATE_DIR, STATE_PREFIX

    cfg = build_config("tiny")
    dataset = open_dataset(prepare(open_source("shapes", count=40, seed=0), str(tmp_path / "shapes"), name="shapes",
                                   progress=False) and str(tmp_path / "shapes"))
    shape = tuple(dataset.manifest.shape)
    generator = family(cfg.model.family).build_generator(cfg.model, shape, max(dataset.manifest.num_classes, 1))
    tf.train.Checkpoint(ema=generator).write(os.path.join(tmp_path, "ckpt", STATE_DIR, STATE_PREFIX))
    checkpoint = Checkpoint.from_directory(str(tmp_path / "ckpt"))
    store = str(tmp_path / "store") if where == "local" else f"{s3_bucket}/store"
    start = threading.Barrier(8)

    def export(i: int) -> str:
        start.wait()
        return export_checkpoint(checkpoint, cfg, dataset, "shapes", store, {"run": f"r{i}"})

    with ThreadPoolExecutor(8) as pool:
        uris = list(pool.map(export, range(8)))
    assert sorted(uri.rsplit("/", 1)[1] for uri in uris) == [f"v{i:04d}" for i in range(1, 9)]
    runs = {load_package(uri).meta.training["run"] for uri in uris}
    assert runs == {f"r{i}" for i in range(8)}  # no export overwrote another's package
