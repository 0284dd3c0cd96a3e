"""Serving under load: overload, a killed replica, autoscaling (real HTTP on Ray Serve)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from genai_ray.config import ServeConfig
from tests.helpers import Load
from tests.serve_helpers import KEY, deploy, make_package, post, replica_states, wait_replicas


@pytest.mark.slow  # minutes of load against Serve
def test_load_beyond_the_queue_gets_fast_503s_and_memory_stays_bounded(locked: str) -> None:
    """Fault: 64 concurrent n=64 requests against room for 2, three times. Expect: 200 or 503, nothing
    else, and the replica's memory does not grow from burst to burst."""
    good = {"Authorization": f"Bearer {KEY}"}

    def burst() -> list[int]:
        with cf.ThreadPoolExecutor(32) as pool:
            return list(pool.map(lambda _: post(locked, json={"n": 64}, headers=good).status_code, range(64)))

    def rss_mib() -> float:
        pid = httpx.get(f"{locked}/v1/model", headers=good).json()["serving"]["pid"]
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    codes = burst()
    assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0, codes
    after_first = rss_mib()
    codes = burst() + burst()
    grown = rss_mib() - after_first
    assert set(codes) <= {200, 503}, codes
    assert grown < 64, f"replica RSS grew {grown:.0f} MiB over two more overload bursts"


@pytest.mark.slow  # minutes of load against Serve
def test_replica_killed_under_load_is_replaced(serve_root: str, packages: dict[str, str]) -> None:
    """Fault: SIGKILL one of two replicas under load. Expect: Serve replaces it, the other keeps serving,
    and only requests in flight on the killed process fail (measured and reported)."""
    from ray import serve

    deploy("t-crash", ServeConfig(model_uri=packages["uncond"], batch_wait_timeout_s=0.01),
           max_ongoing_requests=8, autoscaling_config={"min_replicas": 2, "max_replicas": 2},
           ray_actor_options={"num_cpus": 0.25})
    url = f"{serve_root}/t-crash"
    try:
        pids: set[int] = set()
        for _ in range(200):
            pids.add(httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, f"expected two replica processes, saw {pids}"
        victim = min(pids)
        with Load(url, {"n": 1}) as load:
            load.resize(4)
            load.wait_for(20)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            new_pids: set[int] = set()
            for _ in range(600):  # until a replacement process answers
                new_pids.add(httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["pid"])
                if new_pids - pids:
                    break
                threading.Event().wait(0.1)
            recovered_at = time.monotonic()
            load.wait_for(20)
        seen = [(t, c) for t, c, _ in load.seen]
        failed = [(t - killed_at, c) for t, c in seen if c != 200]
        report = (f"{len(seen)} requests, {len(failed)} failed (codes {sorted({c for _, c in failed})}) "
                  f"the last sent {max((t for t, _ in failed), default=0):+.1f} s from the kill; "
                  f"replacement answering after {recovered_at - killed_at:.1f} s")
        print(f"replica crash: {report}")
        assert new_pids - pids, f"no replacement replica appeared: {report}"
        assert len(failed) <= 8, f"more failures than the killed replica had in flight (8): {report}"
        assert all(c == 200 for _, c in seen[-20:]), f"still failing after recovery: {report}"
    finally:
        serve.delete("t-crash")


@pytest.mark.slow  # load from 8 clients while Serve scales out and back in
def test_autoscaling_1_to_2_and_back_with_no_failed_request_and_one_version(
        serve_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load scales the deployment from 1 replica to 2 and, when it drops, back to 1, with no failed request.
    A new champion promoted meanwhile is not served: the replica added by autoscaling serves the version the
    deployment resolved ``champion`` to, like the first one, until the next deploy."""
    from ray import serve

    from genai_ray.tune.promote import promote

    store = str(tmp_path / "store")
    monkeypatch.setenv("GENAI_RAY_STORE", store)
    v1 = make_package(store, "cond", "v0001", True, seed=1)
    v2 = make_package(store, "cond", "v0002", True, seed=2)
    promote(store, "cond", v1, score=2.0)
    # Scale out when a replica averages over 2 requests in flight; react within about a second either way.
    auto = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2, "upscale_delay_s": 1,
            "downscale_delay_s": 3, "look_back_period_s": 1, "metrics_interval_s": 0.5}
    deploy("t-auto", ServeConfig(model_uri="champion:cond", batch_wait_timeout_s=0.01), max_ongoing_requests=16,
           autoscaling_config=auto, graceful_shutdown_wait_loop_s=0.5)
    url = f"{serve_root}/t-auto"
    load = Load(url, {"n": 4})
    try:
        assert replica_states("t-auto") == {"RUNNING": 1}
        promote(store, "cond", v2, score=1.0)  # the new champion: not for this deployment
        load.resize(8)
        up_s = wait_replicas("t-auto", 2)
        pids = {httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["pid"] for _ in range(40)}
        serving = httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]
        assert len(pids) == 2 and serving["replicas"] == {"RUNNING": 2}, (pids, serving)  # both replicas serve
        load.wait_for(40)
        load.resize(1)  # about one request in flight: under target, so one replica is enough
        down_s = wait_replicas("t-auto", 1)
        load.wait_for(10)
    finally:
        load.resize(0)
        serve.delete("t-auto")
    print(f"autoscaling: {len(load.seen)} requests, up in {up_s:.1f} s, down in {down_s:.1f} s")
    assert load.failures() == [], load.failures()[:5]
    assert {m for _, _, m in load.seen} == {"cond/v0001"}
