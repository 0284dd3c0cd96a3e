"""Stream mode against dataset size and against memory mode: worker peak RSS, time to first step, images/s.

``--part memory``: 64x64x3 shapes at two sizes (default 20,000 and 200,000 images), one DCGAN worker in stream
mode for a fixed number of steps; the worker's peak RSS and the time from the run's launch to the end of its
first training call should not grow with the dataset. ``--part throughput``: the same DCGAN on the smaller
dataset in memory and in stream mode, from local disk and from a moto S3 endpoint; the steady epoch's images/s.
Run: python -m bench.stream_input --part memory|throughput [--sizes 20000,200000] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace

from bench.common import machine, moto_s3, table
from genai_ray.train.loop import STARTUP


def prepare_shapes(uri: str, count: int) -> float:
    from genai_ray.data.prepare import prepare
    from genai_ray.data.sources import open_source

    started = time.perf_counter()
    prepare(open_source("shapes", count=count, seed=0, image_size=64), uri, name="bench-shapes64", holdout=0.0,
            progress=False)
    return time.perf_counter() - started


def config(mode: str, workers: int, extra: dict | None = None):
    from genai_ray.config import build_config

    return build_config("tiny", {
        "model": {"family": "dcgan", "base_channels": 16, "latent_dim": 64},
        "train": {"workers": workers, "cpus_per_worker": 2 // workers, "global_batch": 64, "epochs": 2,
                  "checkpoint_every": 2, "keep_checkpoints": 1, "steps_per_call": 10, "data_mode": mode,
                  **(extra or {})}})


def run(cfg, data_uri: str, store: str, name: str, steps: int) -> dict:
    """One Ray Train run of ``steps`` steps per epoch (2 epochs); the last epoch's report."""
    from genai_ray import storage
    from genai_ray.data.reader import open_dataset
    from genai_ray.train.run import build_trainer, plan_run, runs_uri

    ds = open_dataset(data_uri)
    plan = replace(plan_run(cfg, ds, storage.join(runs_uri(store), name)), steps_per_epoch=steps)
    return dict(build_trainer(cfg, ds, plan, name, store).fit().metrics)


def memory_part(sizes: list[int], steps: int, tmp: str) -> None:
    from genai_ray.ray_runtime import ensure_ray

    ensure_ray()
    rows = []
    for n in sizes:
        uri = f"{tmp}/shapes-{n}"
        prep_s = prepare_shapes(uri, n)
        disk = sum(os.path.getsize(os.path.join(uri, f)) for f in os.listdir(uri))
        m = run(config("stream", 1), uri, f"{tmp}/store", f"mem-{n}", steps)
        first = sum(m[k] for k in STARTUP)
        rows.append([f"{n:,}", f"{n * 64 * 64 * 3 / 2**30:.2f}", f"{disk / 2**20:,.0f}", f"{prep_s:.0f}",
                     f"{m['perf/peak_rss_mib']:,.0f}", f"{first:.1f}",
                     " / ".join(f"{m[k]:.1f}" for k in STARTUP), f"{m['perf/images_per_s']:,.0f}"])
        print(rows[-1], flush=True)
        shutil.rmtree(uri)
    print(f"stream_input --part memory: DCGAN (base_channels 16), 1 worker x 2 CPUs, batch 64, {steps} steps x 2 "
          f"epochs, stream mode; machine: {machine()}")
    print(table(["images", "pixels GiB", "on disk MiB", "prepare s", "worker peak RSS MiB", "launch to first call s",
                 "launch / setup / read / first call s", "images/s"], rows))


def throughput_part(count: int, steps: int, tmp: str) -> None:
    from genai_ray.ray_runtime import ensure_ray

    rows = []
    with moto_s3() as bucket:
        ensure_ray()  # after moto, so workers inherit the endpoint
        for where, root in (("local", tmp), ("s3 (moto)", bucket)):
            uri = f"{root}/shapes-{count}"
            prepare_shapes(uri, count)
            rates = {}
            for mode in ("memory", "stream"):
                m = run(config(mode, 1), uri, f"{root}/store", f"tp-{mode}-{where[:2]}", steps)
                rates[mode] = m["perf/images_per_s"]
                rows.append([where, mode, f"{m['perf/images_per_s']:,.0f}", f"{m['perf/peak_rss_mib']:,.0f}",
                             f"{sum(m[k] for k in STARTUP):.1f}"])
                print(rows[-1], flush=True)
            rows[-1].append(f"{rates['stream'] / rates['memory']:.2f}x")
            rows[-2].append("")
    print(f"stream_input --part throughput: {count:,} shapes 64x64x3, DCGAN (base_channels 16), 1 worker x 2 CPUs, "
          f"batch 64, {steps} steps x 2 epochs (the second reported); machine: {machine()}")
    print(table(["storage", "mode", "images/s", "worker peak RSS MiB", "launch to first call s", "stream / memory"],
                rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=["memory", "throughput"], required=True)
    parser.add_argument("--sizes", default="20000,200000", help="memory part: dataset sizes, comma-separated")
    parser.add_argument("--count", type=int, default=20000, help="throughput part: dataset size")
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch (2 epochs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genai-ray-bench-") as tmp:
        if args.part == "memory":
            memory_part([int(s) for s in args.sizes.split(",")], args.steps, tmp)
        else:
            throughput_part(args.count, args.steps, tmp)


if __name__ == "__main__":
    main()
