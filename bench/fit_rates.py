"""The rate table's rows (genai_ray/train/rates.py): each fitted default trained briefly on this machine.

For every case, the dataset is prepared, the default preset is fitted to it and to this machine's hardware exactly
as ``genai-ray train`` fits it, and the fitted config trains ``--kimg`` through the real ``fit`` (Ray Train, export
included). The steady rate is rank 0's median ``perf/images_per_s`` over the ticks after the first (tracing); the
overhead is the wall clock the run spent outside its steady steps. The output ends with ``Rate(...)`` rows to
paste over the measured rows of RATES.

    python -m bench.fit_rates [--cases dcgan32,dcgan64,mlp8,mlp28] [--kimg 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from bench.common import machine, table

# name: (source, image size, count, kimg on CPUs); kimg covers a few ticks after the first at the CPU rate
CASES = {
    "mlp8": ("digits", None, 0, 30.0),
    "mlp28": ("mnist", None, 0, 20.0),
    "dcgan32": ("photos", 32, 3000, 5.0),
    "dcgan64": ("photos", 64, 3000, 5.0),
    "dcgan128": ("photos", 128, 3000, 3.0),
}
GPU_KIMG_FACTOR = 20  # GPUs run this many times the CPU kimg, so the ticks after tracing still take seconds


def measure(name: str, store: str, hw, kimg_factor: float) -> tuple[object, float, float, float]:
    """(the fitted Rate row, steady images/s, overhead s, kimg trained) for one case."""
    from bench.train_throughput import epoch_rates
    from genai_ray.config import build_config
    from genai_ray.data.prepare import prepare
    from genai_ray.data.sources import open_source
    from genai_ray.train.defaults import fit_to_data
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
    result = fit(cfg, name, name=f"{name}-{time.time_ns()}", store=store)
    wall = time.perf_counter() - began
    rates = [r for _, r in epoch_rates(result.run_uri)]
    assert len(rates) >= 3, f"{name}: {len(rates)} ticks; raise --kimg for a steady rate"
    rate = statistics.median(rates[1:])
    overhead = wall - result.metrics["kimg"] * 1000 / rate
    h, _, c = manifest.shape
    units = hw.gpus if hw.gpus else hw.cpus
    return Rate(cfg.model.family, hw.kind, h, c, round(rate, 1), round(overhead, 1), units), rate, overhead, kimg


def main() -> None:
    from genai_ray.ray_runtime import ensure_ray
    from genai_ray.train.hardware import detect

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="dcgan32,dcgan64,mlp8,mlp28", help=f"comma-separated: {', '.join(CASES)}")
    ap.add_argument("--kimg", type=float, default=1.0, help="scale every case's run length by this factor")
    args = ap.parse_args()
    store = tempfile.mkdtemp(prefix="genai-ray-fit-rates-")
    os.environ["GENAI_RAY_STORE"] = store
    hw = detect()
    ensure_ray()
    rows, out = [], []
    for name in args.cases.split(","):
        row, rate, overhead, kimg = measure(name, store, hw, args.kimg)
        rows.append([name, row.family, f"{row.side}x{row.side}x{row.channels}", f"{kimg:g}", f"{rate:,.1f}",
                     f"{overhead:.0f}"])
        out.append(f"    {row!r},")
        print(rows[-1], flush=True)
    print(f"\n{machine()}; fitted to {hw.describe()} ({hw.where})")
    print(table(["case", "family", "shape", "kimg", "steady images/s", "overhead s"], rows))
    print("\nrows for genai_ray/train/rates.py RATES:")
    print("\n".join(out))


if __name__ == "__main__":
    main()
