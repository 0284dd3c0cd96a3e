"""Reading prepared datasets as Ray Datasets: the session's real local Ray reads shards from moto's S3."""

from __future__ import annotations

import numpy as np
import pytest

from genai_ray.data.prepare import prepare
from genai_ray.data.reader import open_dataset, resolve_dataset_uri
from genai_ray.data.sources import open_source
from genai_ray.errors import UserError


def rows_sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order-free comparison: sort rows by their bytes (Ray may interleave shards)."""
    keys = np.array([img.tobytes() + bytes([lab & 0xFF]) for img, lab in zip(x, y, strict=True)])
    order = np.argsort(keys)
    return x[order], y[order]


def test_to_ray_streams_the_train_split_from_s3_as_numpy_batches(ray_local, s3_bucket):
    uri = f"{s3_bucket}/datasets/shapes"
    m = prepare(open_source("shapes", count=700, seed=2), uri, name="shapes", holdout=0.2, shard_rows=300,
                progress=False)
    ds = open_dataset(uri, checksums=True)
    batches = list(ds.to_ray("train").iter_batches(batch_size=100, batch_format="numpy"))  # one Ray execution
    assert sum(len(b["label"]) for b in batches) == m.train_count == 560
    first = batches[0]
    assert first["image"].shape == (100, 32, 32, 3) and first["image"].dtype == np.uint8
    assert first["label"].dtype == np.int64
    got = rows_sorted(np.concatenate([b["image"] for b in batches]), np.concatenate([b["label"] for b in batches]))
    want = rows_sorted(*ds.read_numpy("train"))
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_to_ray_of_an_empty_split_is_a_user_error(tmp_path):
    uri = str(tmp_path / "d")
    prepare(open_source("shapes", count=20, seed=0), uri, name="d", holdout=0.0, progress=False)
    with pytest.raises(UserError, match="the holdout split is empty; re-prepare with a larger --holdout"):
        open_dataset(uri).to_ray("holdout")
    x, y = open_dataset(uri).read_numpy("holdout")
    assert x.shape == (0, 32, 32, 3) and y.shape == (0,)


def test_bare_names_resolve_under_the_store(store):
    assert resolve_dataset_uri("digits", "s3://b/p") == "s3://b/p/datasets/digits"
    assert resolve_dataset_uri("digits") == f"{store}/datasets/digits"
    assert resolve_dataset_uri("./digits") == "./digits"
    assert resolve_dataset_uri("s3://b/x") == "s3://b/x"
