"""Images/s of step variants (workers, threads, XLA, steps per call, precision) of one config, interleaved A, B,
A, B, ... The first variant (the reference) may run another config, such as an earlier default's network.

Each variant is one process, or 2 processes on a MultiWorkerMirroredStrategy cluster on loopback (what 2 Ray
Train workers run, without Ray), that builds the trainer, traces the step, then waits. The driver then asks
each variant in turn for a short burst of calls and times it. All variants stay traced and warm, so every
round measures all of them within seconds of each other: on a shared machine whose load moves by the minute,
the ratio of two variants within a round is far steadier than two runs minutes apart. Each ratio is taken
against the first variant of its own round; the verdict is the median over rounds.

    python -m bench.train_throughput --variants [--rounds 8] [--images 3000] [--set key=value ...]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from bench.common import free_port, machine, table

WORKER = r"""
import json, os, sys, time
import numpy as np
spec, cfg_json, ports, rank = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
if ports:
    from genai_ray.train.tf_cluster import loopback_addresses, set_tf_config
    set_tf_config(loopback_addresses(ports), rank)
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(spec["intra"])
tf.config.threading.set_inter_op_parallelism_threads(spec["inter"])
from genai_ray.config import Config
from genai_ray.gan.trainer import GanTrainer
from genai_ray.train.input import make_dataset
from genai_ray.train.loop import make_strategy
cfg = Config.model_validate_json(cfg_json)
cfg.train.jit_compile, cfg.train.steps_per_call = spec["jit"], spec["steps_per_call"]
cfg.train.mixed_precision = spec["precision"] or cfg.train.mixed_precision
shape, classes, count = tuple(spec["shape"]), spec["classes"], spec["images"]
rng = np.random.default_rng(rank)  # pixel values don't change the step's cost
x = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
y = rng.integers(0, max(classes, 1), count)
tr = GanTrainer(cfg, shape, max(classes, 1), make_strategy(max(1, len(ports))))
it = iter(tr.distribute(lambda b: make_dataset(x, y, b, rank)))
began = time.perf_counter()
tr.train_steps(it, cfg.train.steps_per_call)
print("READY", time.perf_counter() - began, flush=True)
for line in sys.stdin:  # "images N": train at least N images, in whole calls, and print the seconds it took
    calls = -(-int(line.split()[1]) // (cfg.train.steps_per_call * cfg.train.global_batch))
    began = time.perf_counter()
    for _ in range(calls):
        tr.train_steps(it, cfg.train.steps_per_call)
    print("DONE", calls * cfg.train.steps_per_call * cfg.train.global_batch, time.perf_counter() - began, flush=True)
os._exit(0)  # a multi-worker strategy's teardown can block or report the other process gone
"""


@dataclass(frozen=True)
class Variant:
    """How one step runs: processes (MultiWorkerMirroredStrategy when 2), threads per process, XLA, steps/call."""

    workers: int
    intra: int
    inter: int
    jit: bool
    steps_per_call: int
    precision: str = ""  # train.mixed_precision; "": the config's

    @property
    def label(self) -> str:
        return (f"{self.workers} worker{'s' if self.workers > 1 else ''}, threads {self.intra}/{self.inter}, "
                f"{'XLA' if self.jit else 'no XLA'}, {self.steps_per_call} steps/call"
                + (f", {self.precision}" if self.precision else ""))


def parse_variant(text: str) -> Variant:
    """``workers,intra,inter,jit,steps_per_call[,precision]``, e.g. ``2,1,1,0,8``: 2 workers of 1/1 threads, no
    XLA, 8 steps per call; ``1,2,2,0,8,bfloat16``: 1 worker of 2/2 threads in mixed bfloat16."""
    w, intra, inter, jit, spc, *precision = text.split(",")
    return Variant(int(w), int(intra), int(inter), bool(int(jit)), int(spc), *precision)


class Running:
    """One variant's processes, traced and waiting for bursts."""

    def __init__(self, variant: Variant, cfg, shape: tuple[int, int, int], classes: int, images: int) -> None:
        self.variant = variant
        ports = [free_port() for _ in range(variant.workers)] if variant.workers > 1 else []
        spec = json.dumps({**asdict(variant), "shape": shape, "classes": classes, "images": images // variant.workers})
        self.procs = [subprocess.Popen([sys.executable, "-c", WORKER, spec, cfg.model_dump_json(), json.dumps(ports),
                                        str(rank)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for rank in range(variant.workers)]
        self.first_call_s = 0.0

    def wait_ready(self) -> None:
        self.first_call_s = float(self._read_all("READY")[0][0])  # rank 0's trace and first call

    def _read_all(self, tag: str) -> list[list[str]]:
        out = []
        for proc in self.procs:
            line = proc.stdout.readline()
            while line and not line.startswith(tag):
                line = proc.stdout.readline()
            if not line:
                self.close()
                raise RuntimeError(f"{self.variant.label}: a process exited (code {proc.poll()})")
            out.append(line.split()[1:])
        return out

    def burst(self, images: int) -> float:
        """Images/s of rank 0 over one burst of at least ``images`` images (every process trains the same)."""
        for proc in self.procs:
            proc.stdin.write(f"images {images}\n")
            proc.stdin.flush()
        done, seconds = self._read_all("DONE")[0]
        return float(done) / float(seconds)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def compare(cfgs: list, variants: list[Variant], shape: tuple[int, int, int], classes: int, images: int,
            rounds: int, burst_images: int) -> tuple[list[list[float]], list[float]]:
    """(images/s per round per variant, each variant's first-call seconds); ``cfgs[i]`` is variant i's config.
    Variants trace side by side, before any measurement; each round visits them in turn, in reverse every other
    round."""
    running: list[Running] = []
    try:
        for variant, cfg in zip(variants, cfgs, strict=True):
            running.append(Running(variant, cfg, shape, classes, images))
        for run in running:
            run.wait_ready()
        for run in running:  # one unmeasured burst each: caches, the allocator, tf.data's first buffers
            run.burst(burst_images)
        rates = []
        for r in range(rounds):
            order = list(range(len(running)))[:: -1 if r % 2 else 1]
            got = {i: running[i].burst(burst_images) for i in order}
            rates.append([got[i] for i in range(len(running))])
            print(f"round {r + 1}: " + ", ".join(f"{rate:,.1f}" for rate in rates[-1]) + " images/s", flush=True)
        return rates, [run.first_call_s for run in running]
    finally:
        for run in running:
            run.close()


def report(variants: list[Variant], rates: list[list[float]], first_call_s: list[float], load: tuple) -> str:
    rows = []
    for i, variant in enumerate(variants):
        ratios = [r[i] / r[0] for r in rates]
        rows.append([variant.label, f"{statistics.median(r[i] for r in rates):,.1f}",
                     f"{min(r[i] for r in rates):,.1f}-{max(r[i] for r in rates):,.1f}",
                     f"{statistics.median(ratios):.2f}x", f"{min(ratios):.2f}-{max(ratios):.2f}",
                     f"{first_call_s[i]:.1f}"])
    head = ["variant", "images/s (median)", "images/s range", "vs first (median)", "ratio range",
            "first call s (tracing, side by side)"]
    return (table(head, rows) + f"\nload average before / after: {' / '.join(f'{a:.1f}' for a in load)}")


def run(cfg, variant_texts: list[str], rounds: int, images: int, shape: tuple[int, int, int], classes: int,
        burst_images: int, reference_cfg=None) -> None:
    """Compare the variants of ``cfg``; with ``reference_cfg`` the first variant (the reference) runs that config
    instead, e.g. an earlier default, so the others are measured against it in the same rounds."""
    variants = [parse_variant(v) for v in variant_texts]
    cfgs = [reference_cfg or cfg] + [cfg] * (len(variants) - 1)
    before = os.getloadavg()[0]
    started = time.perf_counter()
    rates, first = compare(cfgs, variants, shape, classes, images, rounds, burst_images)
    load = (before, os.getloadavg()[0])
    first_model = f"; the first variant's model {describe(reference_cfg)}" if reference_cfg else ""
    print(f"\n{machine()}\n{rounds} rounds of {burst_images} images per variant in "
          f"{time.perf_counter() - started:.0f} s; {shape[0]}x{shape[1]}x{shape[2]}, {classes} classes, "
          f"{images} images; model {describe(cfg)}{first_model}")
    print(report(variants, rates, first, load))


def describe(cfg) -> str:
    """The settings that set a step's cost and updates, in one line."""
    t = cfg.train
    return (f"{cfg.model.family} base {cfg.model.base_channels}, loss {t.loss}, r1/r2 gamma {t.r1_gamma}/{t.r2_gamma}, "
            f"mode seeking {t.mode_seeking}, global batch {t.global_batch}, augment {t.augment}")
