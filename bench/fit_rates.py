"""The rate table's rows (genai_ray/train/rates.py): each fitted default trained briefly on this machine.

For every case, the dataset is prepared, the default preset is fitted to it and to this machine's hardware exactly
as ``genai-ray train`` fits it, and the fitted config trains ``--kimg`` through the real ``fit`` (Ray Train, export
included). Over the ticks after the first (tracing) it measures the steady wall-clock rate and the CPU seconds the
training workers used; the overhead is the wall clock the run spent outside its steady steps.

A shared machine slows the wall clock by however much else runs. On CPUs the row's rate is therefore the rate per
worker CPU-second times the cores the workers get on an otherwise idle machine (ALONE_SHARE of them, measured in
BENCHMARKS.md's train_throughput runs), and the overhead shrinks by the same factor; ``--wall`` keeps the wall-clock
numbers instead (right on a quiet machine). The output ends with ``Rate(...)`` rows to paste over RATES.

    python -m bench.fit_rates [--cases photos32,photos64,mlp8,mlp28] [--kimg 1.0] [--wall]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from typing import NamedTuple

from bench.common import machine, table

# name: (source, image size, count, kimg on CPUs); kimg covers a few ticks after the first at the CPU rate
CASES = {
    "mlp8": ("digits", None, 0, 30.0),
    "mlp28": ("mnist", None, 0, 20.0),
    "photos32": ("photos", 32, 3000, 5.0),
    "photos64": ("photos", 64, 3000, 5.0),
    "photos128": ("photos", 128, 3000, 3.0),
}
GPU_KIMG_FACTOR = 20  # GPUs run this many times the CPU kimg, so the ticks after tracing still take seconds
# Share of a 2-core machine the training workers get when nothing else runs: 1.56-1.75 cores of 2 for the DCGAN on
# 1 or 2 workers in BENCHMARKS.md (train_throughput); Ray's own processes take most of the rest.
ALONE_SHARE = 0.8


class Measured(NamedTuple):
    row: object  # the Rate row for RATES
    kimg: float  # trained
    wall_rate: float  # steady images/s by the wall clock
    worker_cores: float  # the training workers' CPU over the steady ticks, in cores
    wall_overhead: float  # s outside the steady steps, by the wall clock
    load: float  # the machine's 1-minute load average at the end


def measure(name: str, store: str, hw, kimg_factor: float, wall: bool) -> Measured:
    """Train one case's fitted config briefly and measure it."""
    from bench.process_cpu import CpuSampler
    from bench.train_throughput import WORKER_PROCESS, epoch_rates
    from genai_ray.config import build_config
    from genai_ray.data.prepare import prepare
    from genai_ray.data.sources import open_source
    from genai_ray.train.defaults import fit_to_data
    from genai_ray.train.loop import run_length
    from genai_ray.train.rates import Rate
    from genai_ray.train.run import fit

    spec, size, count, kimg = CASES[name]
    kimg *= kimg_factor * (GPU_KIMG_FACTOR if hw.gpus else 1)
    uri = os.path.join(store, "datasets", name)
    manifest = prepare(open_source(spec, image_size=size, count=count or 20000, seed=0), uri, name=name,
                       progress=False)
    fitted, _ = fit_to_data(manifest, hw)
    cfg = build_config(None, {"train": {"kimg": kimg}}, fitted=fitted)
    began = time.perf_counter()
    with CpuSampler() as sampler:
        result = fit(cfg, name, name=f"{name}-{time.time_ns()}", store=store)
    took = time.perf_counter() - began
    ticks = epoch_rates(result.run_uri)  # (wall time at the tick's end, images/s)
    assert len(ticks) >= 3, f"{name}: {len(ticks)} ticks; raise --kimg for a steady rate"
    window = ticks[-1][0] - ticks[0][0]
    batch = cfg.train.global_batch
    images = result.metrics["kimg"] * 1000 - run_length(kimg, None, manifest.train_count, batch).steps_per_tick * batch
    wall_rate = images / window
    used = sampler.cores(ticks[0][0], ticks[-1][0])
    worker_cores = sum(c for proc, c in used.items() if proc == WORKER_PROCESS)
    wall_overhead = took - result.metrics["kimg"] * 1000 / wall_rate
    units = hw.gpus if hw.gpus else hw.cpus
    rate, overhead = wall_rate, wall_overhead
    if not (wall or hw.gpus) and worker_cores > 0:
        rate = wall_rate / worker_cores * ALONE_SHARE * hw.cpus  # per worker CPU-second, on idle cores
        overhead = wall_overhead * wall_rate / rate
    h, _, c = manifest.shape
    row = Rate(cfg.model.family, hw.kind, h, c, round(rate, 1), round(overhead), units,
               precision=cfg.train.mixed_precision)
    return Measured(row, kimg, wall_rate, worker_cores, wall_overhead, os.getloadavg()[0])


def main() -> None:
    from genai_ray.ray_runtime import ensure_ray
    from genai_ray.train.hardware import detect

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="photos32,photos64,mlp8,mlp28", help=f"comma-separated: {', '.join(CASES)}")
    ap.add_argument("--kimg", type=float, default=1.0, help="scale every case's run length by this factor")
    ap.add_argument("--wall", action="store_true", help="rows from the wall clock, not per CPU-second (quiet machines)")
    ap.add_argument("--float32", action="store_true", help="fit as for CPUs without AMX bfloat16 units")
    args = ap.parse_args()
    store = tempfile.mkdtemp(prefix="genai-ray-fit-rates-")
    os.environ["GENAI_RAY_STORE"] = store
    hw = detect()
    if args.float32:
        hw = dataclasses.replace(hw, bf16=False)
    ensure_ray()
    rows, out = [], []
    for name in args.cases.split(","):
        m = measure(name, store, hw, args.kimg, args.wall)
        r = m.row
        rows.append([name, r.family, f"{r.side}x{r.side}x{r.channels}", f"{m.kimg:g}", f"{m.wall_rate:,.1f}",
                     f"{m.worker_cores:.2f}", f"{m.wall_overhead:.0f}", f"{m.load:.1f}", f"{r.images_per_s:,.1f}",
                     f"{r.overhead_s:.0f}"])
        out.append(f'    Rate("{r.family}", "{r.hardware}", {r.side}, {r.channels}, {r.images_per_s}, {r.overhead_s}, '
                   f'{r.units}{"" if r.precision == "off" else f", precision={r.precision!r}"}),')
        print(rows[-1], flush=True)
    print(f"\n{machine()}; fitted to {hw.describe()} ({hw.where})")
    print(table(["case", "family", "shape", "kimg", "wall images/s", "worker cores", "wall overhead s", "load (1 min)",
                 "row images/s", "row overhead s"], rows))
    print("\nrows for genai_ray/train/rates.py RATES:")
    print("\n".join(out))


if __name__ == "__main__":
    main()
