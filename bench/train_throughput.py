"""Images/s of (a) a plain single-process TensorFlow loop, (b) 1 Ray Train worker, (c) 2 workers.

Same GAN modules, same model, same global batch, data in memory. The plain loop uses every core; the
Ray runs split the same cores over their workers (``train.cpus_per_worker``), so the comparison is fair.
The first epoch (tracing) is excluded from every number.

    python -m bench.train_throughput [--preset default] [--epochs 4] [--set train.global_batch=256 ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.common import machine, table

PLAIN = r"""
import sys, time, json, numpy as np, tensorflow as tf
from genai_ray.config import Config
from genai_ray.data.reader import open_dataset
from genai_ray.gan.trainer import GanTrainer
from genai_ray.train.worker import make_dataset
cfg = Config.model_validate_json(sys.argv[1]); ds = open_dataset(sys.argv[2]); epochs = int(sys.argv[3])
x, y = ds.read_numpy("train")
steps = len(x) // cfg.train.global_batch
tr = GanTrainer(cfg, tuple(ds.manifest.shape), max(ds.manifest.num_classes, 1))
it = iter(tr.distribute(lambda b: make_dataset(x, y, b, 0)))
rates = []
for epoch in range(epochs):
    t = time.perf_counter(); left = steps
    while left:
        n = min(cfg.train.steps_per_call, left); tr.train_steps(it, n); left -= n
    rates.append(steps * cfg.train.global_batch / (time.perf_counter() - t))
print("RATE", float(np.median(rates[1:])))
"""


def plain_rate(cfg, dataset_uri: str, epochs: int) -> float:
    out = subprocess.run([sys.executable, "-c", PLAIN, cfg.model_dump_json(), dataset_uri, str(epochs)],
                         capture_output=True, text=True, check=True)
    return float(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("RATE")))


STARTUP = ["startup/launch_s", "startup/setup_s", "startup/shard_read_s", "startup/first_call_s"]


def ray_rate(cfg, store: str, workers: int, epochs: int) -> tuple[float, float, float, dict[str, float]]:
    """(images/s of the last epoch, seconds of the run outside its epochs: worker start-up, the shard's first
    read, tracing the step, the checkpoint and shutdown; the first epoch counts as overhead beyond a steady one,
    rank 0's peak RSS in MiB, and rank 0's start-up phases)."""
    from genai_ray.train.run import fit

    cores = os.cpu_count() or 1
    run = cfg.model_copy(deep=True)
    run.train = run.train.model_copy(update={"workers": workers, "epochs": epochs, "checkpoint_every": epochs,
                                             "cpus_per_worker": max(1, cores // workers)})
    started = time.perf_counter()
    result = fit(run, "bench", name=f"bench-{workers}w-{time.time_ns()}", store=store, export=False)
    wall = time.perf_counter() - started
    m = result.metrics
    return (float(m["perf/images_per_s"]), wall - epochs * float(m["perf/epoch_s"]), float(m["perf/peak_rss_mib"]),
            {k: float(m[k]) for k in STARTUP})


def main() -> None:
    from genai_ray.config import build_config, parse_set_option
    from genai_ray.data.prepare import prepare
    from genai_ray.data.reader import open_dataset
    from genai_ray.data.sources import digits_source, shapes_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--data", default="digits", choices=["digits", "shapes"])
    ap.add_argument("--epochs", type=int, default=4, help="epochs per measurement (the first is excluded)")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. train.global_batch=256")
    ap.add_argument("--images", type=int, default=10000, help="shapes: how many 32x32 images to generate")
    args = ap.parse_args()
    cfg = build_config(args.preset, {**parse_set_option(args.set), "train": {
        **parse_set_option(args.set).get("train", {}), "workers": 1}})
    store = tempfile.mkdtemp(prefix="genai-ray-bench-")
    os.environ["GENAI_RAY_STORE"] = store
    source = digits_source(None) if args.data == "digits" else shapes_source(args.images, 32, 0)
    prepare(source, os.path.join(store, "datasets", "bench"), name="bench", progress=False, shards=2)
    dataset = os.path.join(store, "datasets", "bench")
    plain = plain_rate(cfg, dataset, args.epochs)
    from genai_ray.ray_runtime import ensure_ray

    started = time.perf_counter()
    ensure_ray()
    ray_start = time.perf_counter() - started
    runs = {"Ray Train, 1 worker": ray_rate(cfg, store, 1, args.epochs),
            "Ray Train, 2 workers": ray_rate(cfg, store, 2, args.epochs)}
    print(f"\n{machine()}; preset {args.preset}, model {cfg.model.family}, global batch {cfg.train.global_batch}, "
          f"steps/call {cfg.train.steps_per_call}, data {args.data}; local Ray started in {ray_start:.1f} s")
    manifest = open_dataset(dataset).manifest
    shard_mib = manifest.train_count * int(np.prod(manifest.shape)) / 2**20  # uint8 pixels, the whole split
    rows = [["plain TF, 1 process", f"{plain:,.0f}", "1.00x", "", ""]]
    for workers, (label, (rate, overhead, rss, _)) in enumerate(runs.items(), start=1):
        rows.append([label, f"{rate:,.0f}", f"{rate / plain:.2f}x", f"{overhead:.1f}",
                     f"{rss:,.0f} ({shard_mib / workers:.1f})"])
    print(table(["path", "images/s", "vs plain", "start-up and teardown s", "rank 0 peak RSS MiB (its shard MiB)"],
                rows))
    print("\nTime to first step, s (rank 0; the local Ray is started once, before both runs):")
    rows = [[label, f"{ray_start:.1f}", *(f"{phases[k]:.1f}" for k in STARTUP), f"{sum(phases.values()):.1f}"]
            for label, (*_, phases) in runs.items()]
    print(table(["path", "local Ray start", "launch (controller, worker group)", "setup (TF, model)",
                 "shard read", "first call (tracing)", "run start to first step"], rows))


if __name__ == "__main__":
    main()
