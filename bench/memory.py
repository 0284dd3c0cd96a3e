"""Peak RSS of ``data prepare`` for 20,000 vs 200,000 shapes images, each in its own process.

Target: bounded by the shard size, not the dataset size (within 1.3x of each other).
Run: python -m bench.memory
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

from bench.common import machine, table

CHILD = """
import resource, sys
from genai_ray.data.prepare import prepare
from genai_ray.data.sources import open_source
prepare(open_source("shapes", count=int(sys.argv[1]), seed=0), sys.argv[2], name="mem", progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def prepare_peak_mib(count: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(count), f"{tmp}/ds"], capture_output=True,
                             text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is KiB on Linux


def main() -> None:
    small, large = prepare_peak_mib(20_000), prepare_peak_mib(200_000)
    print(f"memory: data prepare peak RSS; machine: {machine()}")
    print(table(["images", "peak RSS (MiB)"], [[20_000, f"{small:.0f}"], [200_000, f"{large:.0f}"]]))
    print(f"ratio 200k/20k: {large / small:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
