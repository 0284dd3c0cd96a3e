"""Request batching on Ray Serve over real HTTP: batches form under concurrency, and a batched request gets
the pixels it would get alone."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from genai_ray.config import ServeConfig
from genai_ray.package.format import load_package
from tests.serve_helpers import deploy, npy, post


def test_concurrent_requests_batch_and_keep_pixels(cond: str) -> None:
    requests = [{"n": 1 + i % 3, "seed": 100 * i, "label": [None, 0, "two"][i % 3], "format": "npy"} for i in range(48)]
    with cf.ThreadPoolExecutor(24) as pool:
        together = list(pool.map(lambda b: post(cond, json=b), requests))
    sizes = [int(r.headers["x-batch-size"]) for r in together]
    assert max(sizes) > 1, sizes
    for body, r in zip(requests[:12], together[:12], strict=True):
        alone = post(cond, json=body)
        assert alone.headers["x-batch-size"] == "1"
        np.testing.assert_array_equal(npy(r), npy(alone))
        assert r.headers["x-labels"] == alone.headers["x-labels"]
    stats = httpx.get(f"{cond}/v1/model").json()["serving"]
    assert stats["largest_batch"] > 1 and stats["requests"] >= 60



def test_a_poisoned_request_fails_alone_and_its_batch_mates_get_200(cond: str) -> None:
    """Labels that pass ``str.isdigit()`` but not ``int()`` ("²", 5,000 digits), sent at once with good requests:
    each poisoned one gets its own 422, the good ones their images, and the replica saw batches that mixed both."""
    poisons = ["²", "9" * 5000, "٣"]

    def mixed() -> int:
        return httpx.get(f"{cond}/v1/model").json()["serving"]["mixed_batches"]

    def send(body: dict, start: threading.Barrier) -> httpx.Response:
        start.wait()
        return post(cond, json=body)

    before, rounds = mixed(), 0
    while rounds < 3:  # 15 requests land within the 50 ms batch wait; a retry covers a slow thread start
        rounds += 1
        bodies = [{"n": 1, "seed": i, "label": poisons[i // 5] if i % 5 == 2 else i % 3} for i in range(15)]
        start = threading.Barrier(len(bodies))
        with cf.ThreadPoolExecutor(len(bodies)) as pool:
            responses = list(pool.map(send, bodies, [start] * len(bodies)))
        for body, r in zip(bodies, responses, strict=True):
            if isinstance(body["label"], str):
                assert r.status_code == 422 and "unknown label" in r.json()["detail"], r.text
            else:
                assert r.status_code == 200, r.text
        if mixed() > before:
            break
    assert mixed() > before, f"no batch mixed a poisoned request with good ones in {rounds} rounds"
    assert max(int(r.headers["x-batch-size"]) for r in responses if r.status_code == 200) > 1


@pytest.mark.slow  # load: 192 requests from 32 clients
def test_batches_fill_while_a_slow_model_computes_and_keep_dcgan_pixels(serve_root: str, tmp_path: Path) -> None:
    """Ray's batcher forms the next batch as soon as a request arrives, so with a 1 ms wait a slow model saw
    batches of 1-2 under load; the replica waits about one model call while busy (about 60 ms here).

    The same real generator (a DCGAN with batch norm) gives the same pixels to a request served in a batch
    and alone: batch norm must use its moving statistics, not the batch's."""
    from ray import serve

    from bench.serve_load import untrained_package

    uri = untrained_package(str(tmp_path), "dcgan")  # the gpu preset's generator at 32x32x3
    layers = [type(layer).__name__ for layer in load_package(uri).model.layers]
    assert "BatchNormalization" in layers, layers
    deploy("t-slow", ServeConfig(model_uri=uri, max_batch_size=32, batch_wait_timeout_s=0.001),
           max_ongoing_requests=64)
    try:
        url = f"{serve_root}/t-slow"
        bodies = [{"n": 1 + i % 2, "seed": 7 * i, "label": i % 10, "format": "npy"} for i in range(192)]
        with cf.ThreadPoolExecutor(32) as pool:
            together = list(pool.map(lambda b: post(url, json=b), bodies))
        assert [r.status_code for r in together] == [200] * 192
        stats = httpx.get(f"{url}/v1/model").json()["serving"]
        assert stats["requests"] / stats["batches"] >= 4, stats["batch_sizes"]
        batched = [(b, r) for b, r in zip(bodies, together, strict=True) if int(r.headers["x-batch-size"]) > 1]
        assert len(batched) >= 8, [r.headers["x-batch-size"] for r in together]
        for body, r in batched[:: max(1, len(batched) // 8)][:8]:
            alone = post(url, json=body)
            assert alone.headers["x-batch-size"] == "1"
            np.testing.assert_array_equal(npy(r), npy(alone))  # bit-identical, not just close
    finally:
        serve.delete("t-slow")
