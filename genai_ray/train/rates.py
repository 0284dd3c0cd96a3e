"""Measured training rates of the fitted defaults: what the fitted run length and its time estimate come from.

Each row is the steady images/s of one fitted config (family, hardware class, image side and channels) and the
seconds a run spends outside its steady steps (Ray and worker start-up, tracing, checkpoints, export), on the
cores or GPUs named. ``python -m bench.fit_rates`` trains each fitted config briefly and prints rows in this
format: paste them over the measured rows to update (after a faster step, say). Other sides are interpolated
between the rows of the same family and hardware, or scaled by pixel count beyond them; other core or GPU
counts scale linearly, an assumption the docs state. Rows with ``measured=False`` are estimates from public
numbers, not runs here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from genai_ray.config import DEFAULT_KIMG, Config
from genai_ray.data.manifest import Manifest
from genai_ray.train.hardware import Hardware


@dataclass(frozen=True)
class Rate:
    family: str  # model.family
    hardware: str  # "cpu" or "gpu"
    side: int  # image side, pixels
    channels: int  # 1 or 3
    images_per_s: float  # steady rate of the whole run (all workers), tracing excluded
    overhead_s: float  # the run's seconds outside its steady steps
    units: int  # CPU cores or GPUs it was measured on
    measured: bool = True  # False: an estimate from public numbers, no run here
    precision: str = "off"  # train.mixed_precision it was measured with


# CPU rows: python -m bench.fit_rates --wall on a quiet 2-core Xeon (load average about 2), 1 worker with both cores
# as fitted: the residual rows at 1e8bbc5, fitted global batch 16, --kimg 3 (docs/training.md); the MLP rows at
# 1b25f1a; the DCGAN rows (fitted for greyscale images above 32 px, or chosen with model.family) at 8de5e30 under
# load, per training-worker CPU-second on the cores the workers get alone (docs/training.md)
RATES: tuple[Rate, ...] = (
    Rate("resnet", "cpu", 32, 3, 135.8, 16, 2),
    Rate("resnet", "cpu", 64, 3, 92.7, 16, 2),
    Rate("resnet", "cpu", 32, 3, 197.5, 16, 2, precision="bfloat16"),  # CPUs with AMX units, fitted in mixed
    Rate("resnet", "cpu", 64, 3, 136.4, 14, 2, precision="bfloat16"),  # bfloat16 (at 5b72dec, load average 2.9)
    Rate("mlp", "cpu", 8, 1, 15480.9, 10, 2),
    Rate("mlp", "cpu", 28, 1, 6797.6, 10, 2),
    Rate("dcgan", "cpu", 32, 3, 64.9, 30, 2),
    Rate("dcgan", "cpu", 64, 3, 53.5, 47, 2),
    # GPU rows: estimates for one H100-class GPU with mixed precision at the fitted batch (256 per worker), from
    # public DCGAN throughputs (thousands of 64x64 images/s on one data-centre GPU); bench.fit_rates on a GPU
    # node replaces them
    Rate("dcgan", "gpu", 32, 3, 12000.0, 90.0, 1, measured=False, precision="float16"),
    Rate("dcgan", "gpu", 64, 3, 4000.0, 90.0, 1, measured=False, precision="float16"),
    Rate("dcgan", "gpu", 128, 3, 1000.0, 90.0, 1, measured=False, precision="float16"),
    Rate("mlp", "gpu", 8, 1, 20000.0, 60.0, 1, measured=False),
    Rate("mlp", "gpu", 28, 1, 10000.0, 60.0, 1, measured=False),
)


@dataclass(frozen=True)
class Speed:
    images_per_s: float
    overhead_s: float
    measured: bool

    def seconds(self, kimg: float) -> float:
        """Estimated wall-clock seconds of a run of ``kimg`` thousand images."""
        return self.overhead_s + kimg * 1000.0 / self.images_per_s

    def kimg_within(self, seconds: float) -> float:
        """The run length that fits ``seconds`` of wall clock, overhead included (0 when it doesn't fit)."""
        return max(0.0, (seconds - self.overhead_s) * self.images_per_s / 1000.0)


def speed(family: str, shape: tuple[int, int, int], hw: Hardware, precision: str = "off") -> Speed | None:
    """The rate table's speed for ``family`` at ``shape`` (H, W, C) on ``hw`` in ``precision``
    (train.mixed_precision; rows of another precision where it has none); None without a row for them.

    Between two rows the rate is interpolated on log-log axes of rate against pixels (a dense GAN slows far less
    than its pixel count grows); beyond the rows it scales as 1 / pixels from the nearest. Channels are ignored:
    they change only a convolutional net's first and last layers.
    """
    rows = [r for r in RATES if r.family == family and r.hardware == hw.kind]
    rows = sorted([r for r in rows if r.precision == precision] or rows, key=lambda r: r.side)
    if not rows:
        return None
    side = max(shape[:2])
    below = [r for r in rows if r.side <= side]
    above = [r for r in rows if r.side >= side]
    if below and above:
        lo, hi = below[-1], above[0]
        t = 0.0 if lo.side == hi.side else math.log(side / lo.side) / math.log(hi.side / lo.side)
        rate = math.exp((1 - t) * math.log(lo.images_per_s) + t * math.log(hi.images_per_s))
        overhead, measured, units = (1 - t) * lo.overhead_s + t * hi.overhead_s, lo.measured and hi.measured, lo.units
    else:
        near = below[-1] if below else above[0]
        rate, overhead, measured, units = (near.images_per_s * (near.side / side) ** 2, near.overhead_s,
                                           near.measured, near.units)
    scale = (hw.gpus if hw.kind == "gpu" else hw.cpus) / units
    return Speed(rate * scale, overhead, measured)


def duration(seconds: float) -> str:
    """``'about 14 min'``, ``'about 2.5 h'``, ``'about 40 s'``."""
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Estimate:
    seconds: float
    text: str  # "about 14 min on 2 CPUs"


def run_hardware(cfg: Config, hw: Hardware) -> Hardware:
    """The part of ``hw`` a run with ``cfg`` uses: its GPU workers' GPUs, or the machine's cores."""
    t = cfg.train
    if t.gpus_per_worker:
        return replace(hw, gpus=max(1, math.ceil(t.workers * t.gpus_per_worker)), gpus_per_worker=t.gpus_per_worker)
    return replace(hw, gpus=0, gpus_per_worker=0.0)


def estimate(cfg: Config, manifest: Manifest, hw: Hardware) -> Estimate | None:
    """The wall-clock time of a run of ``cfg`` on ``manifest``'s data on ``hw``; None without a rate row."""
    t = cfg.train
    used = run_hardware(cfg, hw)
    fast = speed(cfg.model.family, tuple(manifest.shape), used, t.mixed_precision)
    if fast is None:
        return None
    if t.epochs:
        kimg = t.epochs * (manifest.train_count // t.global_batch) * t.global_batch / 1000
    else:
        kimg = t.kimg or DEFAULT_KIMG
    seconds = fast.seconds(kimg)
    basis = "" if fast.measured else " (an unmeasured GPU rate)"
    return Estimate(seconds, f"{duration(seconds)} on {used.describe()}{basis}")


def estimate_report(took: float, expected: Estimate | None) -> str:
    """The run's last line: how long it took against the estimate, so every run checks the rate table."""
    if expected is None:
        return f"took {took / 60:.1f} min (no rate for this family and hardware in train/rates.py: no estimate)"
    return (f"took {took / 60:.1f} min; estimated {expected.text}: {took / expected.seconds:.2f}x the estimate "
            f"({expected.seconds / 60:.1f} min)")
