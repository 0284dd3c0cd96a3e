"""Shared bench helpers: the machine description, table printing, a moto S3 endpoint and a closed-loop HTTP
load."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import subprocess
import time
from contextlib import contextmanager

import numpy as np

from genai_ray.ray_runtime import free_port


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = "no GPU"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            gpu = out.stdout.strip().replace("\n", ", ")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, {gpu}, Python {platform.python_version()}, "
            f"{dt.date.today().isoformat()}")


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table, ready to paste into BENCHMARKS.md."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)


@contextmanager
def moto_s3():
    """A real S3 endpoint (moto's server on loopback) with a bucket; yields the bucket URI."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench")
        yield "s3://bench"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def closed_loop(url: str, concurrency: int, n: int, seconds: float,
                      headers: dict[str, str] | None = None) -> dict[str, float]:
    """C clients in a closed loop for ``seconds``; latencies of requests that finished in the window."""
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as client:

        async def one(seed: int) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            r = await client.post(url, json={"n": n, "seed": seed, "format": "png"})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

        async def client_loop(worker: int, stop_at: float) -> None:
            i = 0
            while time.perf_counter() < stop_at:
                await one(worker * 1_000_000 + i)
                i += 1

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm connections and the replica
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(w, start + seconds) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = np.asarray(latencies or [np.nan]) * 1000  # nan: every request failed
    return {"rps": len(latencies) / elapsed, "ips": len(latencies) * n / elapsed, "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "errors": errors}
