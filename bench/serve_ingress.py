"""Serve's own ceiling and its three HTTP ingress modes, for ``python -m bench.serve_load --compare-ingress``.

The ceiling is a no-op FastAPI app on Serve that returns a fixed 8x8 PNG: Serve's per-request path with no
model, auth or batching. An ingress mode is chosen by an environment variable that Serve reads when it is
imported, so each mode runs in its own subprocess with its own private local Ray: ``proxy`` (Serve's default
proxy actor takes HTTP and calls the replica), ``direct`` (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``: each ingress
replica serves HTTP itself, on a port Serve allocates from 30000) and ``haproxy`` (``RAY_SERVE_ENABLE_HA_PROXY=1``:
an HAProxy process on the HTTP port forwards to those replica ports). Modes run in the order A B C C B A.
"""

# No "from __future__ import annotations": FastAPI must see real types on the no-op's route.
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from bench.common import closed_loop, free_port, table
from genai_ray.images import png_bytes

MODES = {"proxy": {}, "direct": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
         "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"}}
# A direct-ingress replica stays up 30 s after it is told to stop, so that an outside load balancer can
# deregister it. The bench has none, and would wait that long at every shutdown.
NO_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0"}
KEY_ENV = "GENAI_RAY_API_KEY"
PNG = png_bytes(np.zeros((8, 8, 1), np.uint8))
OPTIONS = {"max_ongoing_requests": 64, "max_queued_requests": -1, "ray_actor_options": {"num_cpus": 1}}

noop_api = FastAPI()


@serve.deployment
@serve.ingress(noop_api)
class NoOp:
    """The ceiling: reads the request body and returns a fixed PNG."""

    @noop_api.post("/v1/generate")
    async def generate(self, request: Request) -> Response:
        await request.body()
        return Response(PNG, media_type="image/png")


def listener(port: int) -> str:
    """The name of the process listening on ``port`` on this machine (``ss``), to show who takes HTTP."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    if "pid=" not in out:
        return "?"
    with open(f"/proc/{out.split('pid=', 1)[1].split(',', 1)[0]}/cmdline", "rb") as f:
        return os.path.basename(f.read().split(b"\0")[0].decode().split()[0])


def haproxy_servers() -> dict[str, int]:
    """Requests each HAProxy backend server answered since HAProxy's last reload (``stot``): replicas or fallback."""
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_SOCKET_PATH

    base = os.path.dirname(RAY_SERVE_HAPROXY_SOCKET_PATH)
    socks = [os.path.join(root, f) for root, _, files in os.walk(base) for f in files if f == "admin.sock"]
    totals: dict[str, int] = {}
    for path in socks:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            try:
                s.connect(path)
            except OSError:
                continue  # a stale socket, left by an HAProxy that is gone
            s.sendall(b"show stat\n")
            data = b"".join(iter(lambda: s.recv(65536), b"")).decode()
        head, *rows = [line.split(",") for line in data.lstrip("# ").splitlines() if line]
        for row in rows:
            r = dict(zip(head, row, strict=False))
            if r.get("svname") not in ("FRONTEND", "BACKEND", None) and r.get("stot", "0") != "0":
                server = f"{r['pxname']}/{r['svname']}"
                totals[server] = totals.get(server, 0) + int(r["stot"])
    return totals


def run_mode(mode: str, uri: str, seconds: float, clients: list[int]) -> dict[str, object]:
    """Both apps on one private Ray in this process's ingress mode; cells alternate between them."""
    import ray
    from ray.serve.context import _get_global_client

    from genai_ray.config import ServeConfig
    from genai_ray.ray_runtime import ensure_ray
    from genai_ray.serve.app import application

    os.environ.setdefault(KEY_ENV, secrets.token_urlsafe(24))  # replicas get its scrypt hash only
    headers = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"}
    ensure_ray()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = ServeConfig(model_uri=uri, max_batch_size=32, batch_wait_timeout_s=0.002)
    serve.run(application(cfg, {**OPTIONS, "autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}),
              name="mlp", route_prefix="/mlp")
    serve.run(NoOp.options(num_replicas=1, **OPTIONS).bind(), name="ceiling", route_prefix="/ceiling")
    ports = {"ceiling": port, "mlp": port}
    if mode == "direct":  # each replica's own port, as Serve's controller hands it to a load balancer
        for app in ports:
            [group] = [g for g in ray.get(_get_global_client()._controller.get_target_groups.remote(app))
                       if g.protocol == "HTTP"]
            ports[app] = group.targets[0].port
    urls = {app: f"http://127.0.0.1:{p}/{app}/v1/generate" for app, p in ports.items()}
    result: dict[str, object] = {"mode": mode, "env": MODES[mode], "cells": [],
                                 "listeners": {app: listener(p) for app, p in ports.items()}}
    for url in urls.values():  # warm: replicas, connections and (HAProxy) health checks of the replica ports
        asyncio.run(closed_loop(url, 8, 1, 3.0, headers))
    for c in clients:
        for app, url in urls.items():
            m = asyncio.run(closed_loop(url, c, 1, seconds, headers))
            result["cells"].append({"app": app, "clients": c, **m})
            print(mode, app, c, {k: round(v, 1) for k, v in m.items()}, file=sys.stderr, flush=True)
    if mode == "haproxy":
        result["haproxy_servers"] = haproxy_servers()
        serve.shutdown()  # stops HAProxy, the proxy actor's child process; Ray's exit ends the rest
    return result


def child(mode: str, uri: str, seconds: float, clients: list[int]) -> dict[str, object]:
    """One mode in a subprocess; on failure, its last error line instead of numbers."""
    fd, out = tempfile.mkstemp(prefix=f"ingress-{mode}-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, "-m", "bench.serve_load", "--ingress", mode, "--model", uri, "--seconds", str(seconds),
           "--clients", ",".join(map(str, clients)), "--json", out]
    env = {**os.environ, **MODES[mode], **NO_DRAIN}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode == 0 and os.path.getsize(out):
        with open(out) as f:
            return json.load(f)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line] or lines
    return {"mode": mode, "error": f"exit {proc.returncode}: {errors[-1][:300] if errors else 'no output'}"}


def compare(uri: str, seconds: float, clients: list[int]) -> None:
    """Every mode twice (A B C C B A), each in its own subprocess, then the tables."""
    os.environ.setdefault(KEY_ENV, secrets.token_urlsafe(24))
    runs = [child(mode, uri, seconds, clients) for mode in [*MODES, *reversed(MODES)]]
    with tempfile.NamedTemporaryFile("w", prefix="ingress-runs-", suffix=".json", delete=False) as f:
        json.dump(runs, f)  # every cell of every run, for a second look
    print(f"runs: {f.name}")
    report(runs, clients)


def report(runs: list[dict[str, object]], clients: list[int]) -> None:
    """Per cell, each run's req/s and the mean latencies; then MLP / ceiling and each mode against the proxy."""
    rps: dict[tuple[str, str, int], list[float]] = {}
    rows = []
    for mode in MODES:
        done = [r for r in runs if r["mode"] == mode and "cells" in r]
        for r in runs:
            if r["mode"] == mode and "error" in r:
                print(f"{mode}: FAILED {r['error']}")
        if done:
            print(f"{mode}: HTTP taken by {done[0]['listeners']}"
                  + (f"; HAProxy servers' requests {done[0].get('haproxy_servers')}" if mode == "haproxy" else ""))
        for c in clients:
            for app in ("ceiling", "mlp"):
                cells = [cell for r in done for cell in r["cells"] if cell["app"] == app and cell["clients"] == c]
                if not cells:
                    continue
                rps[mode, app, c] = [cell["rps"] for cell in cells]
                rows.append([mode, app, c, " / ".join(f"{x:.0f}" for x in rps[mode, app, c]),
                             f"{statistics.mean(cell['p50'] for cell in cells):.1f}",
                             f"{statistics.mean(cell['p99'] for cell in cells):.1f}",
                             sum(cell["errors"] for cell in cells)])
    print()
    print(table(["ingress", "app", "clients", "req/s (each run)", "p50 ms", "p99 ms", "errors"], rows))
    ratios = []
    for mode in MODES:
        for c in clients:
            if (mode, "mlp", c) not in rps or (mode, "ceiling", c) not in rps:
                continue
            mlp, ceiling = statistics.mean(rps[mode, "mlp", c]), statistics.mean(rps[mode, "ceiling", c])
            base = {app: statistics.mean(rps["proxy", app, c])
                    for app in ("ceiling", "mlp") if ("proxy", app, c) in rps}
            ratios.append([mode, c, f"{mlp / ceiling:.2f}x",
                           *(f"{statistics.mean(rps[mode, app, c]) / base[app]:.2f}x" if app in base else "-"
                             for app in ("ceiling", "mlp"))])
    print()
    print(table(["ingress", "clients", "MLP / ceiling", "ceiling vs proxy", "MLP vs proxy"], ratios))
