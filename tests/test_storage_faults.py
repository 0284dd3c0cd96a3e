"""Storage faults: transient S3 errors are retried with backoff; a missing bucket fails fast and clearly."""

from __future__ import annotations

import numpy as np
import pytest

from genai_ray import storage
from genai_ray.data.prepare import prepare
from genai_ray.data.reader import open_dataset
from genai_ray.data.sources import open_source
from genai_ray.errors import UserError
from tests.fault_proxy import FaultProxy


@pytest.fixture
def faulty_endpoint(s3_endpoint, monkeypatch):
    with FaultProxy(s3_endpoint, every=3) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        storage._s3_filesystem.cache_clear()
        yield proxy
    storage._s3_filesystem.cache_clear()


@pytest.mark.slow  # fault injection: S3 500s, 503s and dropped connections
def test_prepare_and_read_survive_throttling_500s_and_dropped_connections(s3_bucket, faulty_endpoint):
    uri = f"{s3_bucket}/digits"
    manifest = prepare(open_source("digits"), uri, name="digits", shard_rows=800, progress=False)
    ds = open_dataset(uri, checksums=True)
    x, y = ds.read_numpy("train")
    kinds = set(faulty_endpoint.injected)
    assert {"503", "500", "drop"} <= kinds, (
        f"fault: S3 503 SlowDown, 500 InternalError and dropped connections every 3rd request; "
        f"expected all three injected, measured {sorted(kinds)}"
    )
    assert len(x) == manifest.train_count and x.dtype == np.uint8, (
        f"expected: every shard written and read back despite {len(faulty_endpoint.injected)} injected faults "
        f"in {faulty_endpoint.requests} requests; measured {len(x)}/{manifest.train_count} rows"
    )
    assert set(np.unique(y)) == set(range(10))


def test_missing_bucket_fails_fast_with_a_clear_message(s3_endpoint):
    with pytest.raises(UserError, match="bucket 'no-such-bucket-x1' does not exist"):
        prepare(open_source("digits"), "s3://no-such-bucket-x1/ds", name="d", progress=False)
