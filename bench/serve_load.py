"""Closed-loop HTTP load on the Serve endpoint: batching on vs off, and Serve's overhead.

``python -m bench.serve_load [--seconds 8] [--model URI | --family mlp|dcgan] [--sizes 1,16]``. Without
``--model`` it serves an untrained generator shaped like a preset's, which costs the same per call as a
trained one: ``mlp`` is the ``default`` preset's (conditional MLP, 8x8x1), ``dcgan`` the ``gpu`` preset's
(conditional DCGAN, base 64 channels) at 32x32x3. Each of C clients sends its next request as soon as the
last one returns, for a fixed time, at C = 1, 8 and 32, with n = 1 and n = 16, against two apps deployed side
by side: batching on (``max_batch_size`` 32) and off (``max_batch_size`` 1). It prints one table with the
machine and its load average.

``--compare-ingress [--clients 1,8,32]``: genai-ray's endpoint (batching on) against a no-op FastAPI app on Serve
(the ceiling), under Serve's default proxy, direct ingress and HAProxy, each mode on its own private Ray
(``bench/serve_ingress.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime

import numpy as np

from bench.common import closed_loop, free_port, machine, table

CONCURRENCY = (1, 8, 32)


# What the untrained generator is shaped like: the preset whose model it copies, and the image shape.
FAMILIES = {"mlp": ("default", (8, 8, 1)), "dcgan": ("gpu", (32, 32, 3))}


def untrained_package(store: str, family_name: str) -> str:
    """An untrained conditional generator shaped like a preset's, as a real package: costs what a trained one does."""
    import keras

    from genai_ray import storage
    from genai_ray.config import build_config
    from genai_ray.gan import family
    from genai_ray.package.format import write_package

    preset, shape = FAMILIES[family_name]
    cfg = build_config(preset, {})
    keras.utils.set_random_seed(0)
    generator = family(cfg.model.family).build_generator(cfg.model, shape, 10, False)
    uri = storage.join(store, "models", "bench", "v0001")
    meta = {"name": "bench", "version": "v0001", "image_shape": shape, "latent_dim": cfg.model.latent_dim,
            "conditional": True, "class_names": [str(i) for i in range(10)], "class_probs": [0.1] * 10,
            "dataset_uri": "none", "dataset_sha256": "0" * 64, "config": {},
            "created_at": datetime.now(UTC).isoformat()}
    write_package(uri, generator, meta, None)
    return uri


async def soak(url: str, requests: int, concurrency: int) -> int:
    """Exactly ``requests`` n=1 requests from ``concurrency`` clients; returns how many failed."""
    import httpx

    pending = iter(range(requests))
    failed = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def client_loop() -> None:
            nonlocal failed
            for seed in pending:
                r = await client.post(url, json={"n": 1, "seed": seed, "format": "png"})
                failed += r.status_code != 200

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return failed


def replica_rss_mib(app: str) -> float:
    """Resident memory of the app's single replica process (its actor's pid, from Ray's State API; /proc)."""
    from ray.util.state import list_actors

    [replica] = [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
                 if a.class_name.startswith(f"ServeReplica:{app}:")]
    with open(f"/proc/{replica.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def in_process(uri: str, seconds: float, sizes: list[int]) -> list[list[object]]:
    """The generator called directly: the floor under Serve's latency."""
    from genai_ray.package.format import load_package

    package = load_package(uri)
    rows = []
    for n in sizes:
        package.sample(n, seed=0)
        times = []
        stop = time.perf_counter() + seconds / 2
        seed = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            package.sample(n, seed=seed)
            times.append(time.perf_counter() - t0)
            seed += n
        lat = np.asarray(times) * 1000
        rows.append(["in-process generate", n, 1, f"{len(lat) / lat.sum() * 1000:.0f}",
                     f"{len(lat) * n / lat.sum() * 1000:.0f}", f"{np.percentile(lat, 50):.1f}",
                     f"{np.percentile(lat, 99):.1f}", 0])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per cell")
    parser.add_argument("--model", default=None, help="a package URI (default: an untrained one, see --family)")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="mlp",
                        help="untrained model: mlp (the default preset's, 8x8x1) or dcgan (the gpu preset's, 32x32x3)")
    parser.add_argument("--sizes", default="1,16", help="comma-separated n per request")
    parser.add_argument("--soak", type=int, default=10_000, help="requests for the replica-memory check (0: skip)")
    parser.add_argument("--compare-ingress", action="store_true",
                        help="the endpoint against a no-op app on Serve, under each HTTP ingress mode")
    parser.add_argument("--clients", default=",".join(map(str, CONCURRENCY)), help="concurrencies, --compare-ingress")
    parser.add_argument("--ingress", choices=["proxy", "direct", "haproxy"], help=argparse.SUPPRESS)  # one mode
    parser.add_argument("--json", help=argparse.SUPPRESS)  # where --ingress writes its cells
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    if args.ingress or args.compare_ingress:
        from bench import serve_ingress

        uri = args.model or untrained_package(tempfile.mkdtemp(prefix="serve-bench-"), args.family)
        if args.ingress:
            result = serve_ingress.run_mode(args.ingress, uri, args.seconds, clients)
            with open(args.json, "w") as f:
                json.dump(result, f)
            return
        print(f"Serve ingress modes ({args.model or 'untrained ' + args.family}), closed loop, n = 1, "
              f"{args.seconds:.0f} s per cell, PNG responses, each mode run twice (A B C C B A). "
              f"Machine: {machine()}\n")
        serve_ingress.compare(uri, args.seconds, clients)
        print(f"\nload average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        return

    from ray import serve

    from genai_ray.config import ServeConfig
    from genai_ray.ray_runtime import ensure_ray
    from genai_ray.serve.app import application

    sizes = [int(n) for n in args.sizes.split(",")]
    uri = args.model or untrained_package(tempfile.mkdtemp(prefix="serve-bench-"), args.family)
    rows = in_process(uri, args.seconds, sizes)
    ensure_ray()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    modes = {"batching on (max 32)": 32, "batching off (max 1)": 1}
    urls = {}
    for i, (mode, batch) in enumerate(modes.items()):
        cfg = ServeConfig(model_uri=uri, max_batch_size=batch, batch_wait_timeout_s=0.002)
        serve.run(application(cfg, {"max_ongoing_requests": 64, "max_queued_requests": -1,
                                    "autoscaling_config": {"min_replicas": 1, "max_replicas": 1},
                                    "ray_actor_options": {"num_cpus": 1}}),
                  name=f"bench{i}", route_prefix=f"/bench{i}")
        urls[mode] = f"http://127.0.0.1:{port}/bench{i}/v1/generate"
    # Cells alternate between the two apps, so load on a shared machine drifts into both alike.
    cells = {mode: [] for mode in modes}
    for n in sizes:
        for c in CONCURRENCY:
            for mode, url in urls.items():
                m = asyncio.run(closed_loop(url, c, n, args.seconds))
                cells[mode].append([mode, n, c, f"{m['rps']:.0f}", f"{m['ips']:.0f}", f"{m['p50']:.1f}",
                                    f"{m['p99']:.1f}", m["errors"]])
                print(cells[mode][-1], flush=True)
    for mode in modes:
        rows += cells[mode]
    soak_line = ""
    if args.soak:  # the batching app's replica, already warm from its cells
        before = replica_rss_mib("bench0")
        failed = asyncio.run(soak(urls["batching on (max 32)"], args.soak, 32))
        after = replica_rss_mib("bench0")
        soak_line = (f"replica RSS before / after {args.soak:,} more requests (batching on, 32 clients): "
                     f"{before:.0f} / {after:.0f} MiB ({(after / before - 1) * 100:+.1f}%, target <= +10%), "
                     f"{failed} failed")
    serve.shutdown()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    model = args.model or f"untrained {args.family} shaped like the {FAMILIES[args.family][0]} preset's"
    print(f"\nServe load ({model}), closed loop, {args.seconds:.0f} s per cell, PNG responses. Machine: {machine()}; "
          f"load average at the end {load}\n")
    print(table(["mode", "n", "clients", "req/s", "images/s", "p50 ms", "p99 ms", "errors"], rows))
    if soak_line:
        print(soak_line)


if __name__ == "__main__":
    main()
