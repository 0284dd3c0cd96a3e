"""``make bench``: every CPU benchmark, one after another, each in its own process so none inherits another's
Ray or memory. Tables go to stdout; copy the new ones into BENCHMARKS.md with the machine line.
``bench/gpu_check.py`` is left out: it needs a GPU machine.
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHES = [
    ["bench.memory"],
    ["bench.data_pipeline"],
    ["bench.collective_latency"],
    ["bench.collective_latency", "--model", "dcgan"],
    ["bench.train_throughput", "--data", "digits", "--rounds", "2", "--epochs", "40"],
    ["bench.train_throughput", "--data", "shapes", "--images", "4000", "--epochs", "3", "--set", "model.family=dcgan",
     "--set", "model.base_channels=32", "--set", "model.conditional=false", "--set", "train.global_batch=128"],
    ["bench.serve_load", "--seconds", "6"],
    ["bench.serve_load", "--family", "dcgan", "--sizes", "1", "--soak", "0", "--seconds", "6"],
    ["bench.quality"],
    ["bench.search_efficiency", "--samples", "6"],
]


def main() -> int:
    failed = []
    for args in BENCHES:
        print(f"\n=== python -m {' '.join(args)}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", *args])
        print(f"=== {args[0]}: exit {code} in {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(args[0])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
