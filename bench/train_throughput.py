"""Images/s of (a) a plain single-process TensorFlow loop, (b) 1 Ray Train worker, (c) 2 workers.

Same GAN modules, same model, same global batch, data in memory. The plain loop uses every core; the
Ray runs split the same cores over their workers (``train.cpus_per_worker``), so the comparison is fair.
The plain loop also runs as 2 processes on a MultiWorkerMirroredStrategy cluster without Ray: what data
parallelism itself costs on this machine, so the ceiling for (c), and (c) against it is what Ray costs.
For each Ray run it charges the machine's CPU over the epochs after the first to the training workers and to
everything else (Ray's daemons and actors, the driver): where the step saturates the cores, the second is the
CPU the workers lose.
Every path's rate is the median over its epochs after the first (tracing). A shared machine's speed can drift
by 10-20% within an hour, so ``--rounds N`` repeats every path N times, reversing their order every other round,
and each ratio is taken against the plain loop of its own round; the verdict is the median ratio. The plain
loop always runs with no Ray on the machine (each round starts its own local Ray and shuts it down).

    python -m bench.train_throughput [--data digits|shapes] [--epochs 60] [--rounds 3] [--set key=value ...]

``--variants W,INTRA,INTER,XLA,STEPS ...`` instead compares step variants of the default preset fitted to a
labelled 32x32x3 dataset of ``--images`` images (``bench.step_variants``), interleaved, without Ray:

    python -m bench.train_throughput --variants 2,1,1,0,8 1,2,2,0,8 1,2,2,1,8 --rounds 8 --images 3000

``--reference-set key=value ...`` runs the first variant with those overrides on top, e.g. an earlier default's
network, so the current default's variants are measured against it in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

from bench import step_variants
from bench.common import free_port, machine, table
from bench.process_cpu import CpuSampler
from genai_ray.train.loop import STARTUP

PLAIN = r"""
import json, os, sys, time, numpy as np
cfg_json, uri, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
threads, ports, rank = map(json.loads, sys.argv[4:7])
if ports:  # a MultiWorkerMirroredStrategy cluster on loopback, the one Ray Train's backend would set up
    from genai_ray.train.tf_cluster import loopback_addresses, set_tf_config
    set_tf_config(loopback_addresses(ports), rank)
import tensorflow as tf
from genai_ray.config import Config
from genai_ray.data.reader import open_dataset
from genai_ray.gan.trainer import GanTrainer
from genai_ray.train.loop import make_strategy
from genai_ray.train.input import make_dataset
cfg = Config.model_validate_json(cfg_json); ds = open_dataset(uri); world = max(1, len(ports))
if threads:  # intra- and inter-op threads; without them, TensorFlow's defaults, as a user's loop has
    tf.config.threading.set_intra_op_parallelism_threads(threads[0])
    tf.config.threading.set_inter_op_parallelism_threads(threads[1])
x, y = ds.read_numpy("train")
steps = len(x) // cfg.train.global_batch
x, y = x[rank::world], y[rank::world]  # this process's shard
tr = GanTrainer(cfg, tuple(ds.manifest.shape), max(ds.manifest.num_classes, 1), make_strategy(world))
it = iter(tr.distribute(lambda b: make_dataset(x, y, b, rank)))
rates = []
for epoch in range(epochs):
    t = time.perf_counter(); left = steps
    while left:
        n = min(cfg.train.steps_per_call, left); tr.train_steps(it, n); left -= n
    rates.append(steps * cfg.train.global_batch / (time.perf_counter() - t))
print("RATE", float(np.median(rates[1:])), flush=True)
os._exit(0)  # a multi-worker strategy's teardown can block or report the other process gone
"""


def plain_rate(cfg, dataset_uri: str, epochs: int, threads: tuple[int, int] | None = None,
               processes: int = 1) -> float:
    """Images/s of the plain loop: one process, or ``processes`` on a hand-made MultiWorkerMirroredStrategy
    cluster on loopback (no Ray anywhere), each with its own shard, as Ray Train's workers are."""
    ports = [free_port() for _ in range(processes)] if processes > 1 else []
    runs = [subprocess.Popen([sys.executable, "-c", PLAIN, cfg.model_dump_json(), dataset_uri, str(epochs),
                              json.dumps(threads), json.dumps(ports), str(rank)], stdout=subprocess.PIPE, text=True)
            for rank in range(processes)]
    while any(run.poll() is None for run in runs):  # the output is one line: no pipe fills up meanwhile
        if any(run.returncode for run in runs):  # the others would wait for it at their next all-reduce
            for run in runs:
                run.kill()
        time.sleep(0.5)
    outs = [run.stdout.read() for run in runs]
    if any(run.returncode for run in runs):
        raise RuntimeError(f"plain loop failed (exit codes {[run.returncode for run in runs]})")
    return float(next(line.split()[1] for line in outs[0].splitlines() if line.startswith("RATE")))  # rank 0's


WORKER_PROCESS = "ray::RayTrainWorker"  # how bench.process_cpu names a Ray Train worker


def epoch_rates(run_uri: str) -> list[tuple[float, float]]:
    """Rank 0's (wall-clock time, ``perf/images_per_s``) of every epoch, in epoch order, from the run's
    TensorBoard events (written as each epoch ends)."""
    import tensorflow as tf

    from genai_ray import storage

    folder = storage.resolve(storage.join(run_uri, "tensorboard"))[1]
    rates = {}
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                if value.tag == "perf/images_per_s":
                    rates[event.step] = (event.wall_time, float(tf.make_ndarray(value.tensor)))
    return [rates[step] for step in sorted(rates)]


class RayRun(NamedTuple):
    rate: float  # median images/s over epochs 2..
    outside_s: float  # the run's seconds outside its steps at that rate: worker start-up, the shard's first read,
    # tracing, per-epoch logging and reports, the checkpoint and shutdown
    peak_rss_mib: float  # rank 0's
    startup: dict[str, float]  # rank 0's start-up phases
    worker_cores: float  # the training workers' CPU over epochs 2.., in cores
    other_cores: float  # every other process's on the machine (Ray's daemons and actors, the driver), likewise


def ray_rate(cfg, store: str, workers: int, epochs: int) -> RayRun:
    """Train ``workers`` Ray Train workers for ``epochs`` and measure the run (see ``RayRun``)."""
    from genai_ray.train.run import fit

    cores = os.cpu_count() or 1
    run = cfg.model_copy(deep=True)
    run.train = run.train.model_copy(update={"workers": workers, "epochs": epochs, "kimg": None,  # epochs, not kimg
                                             "checkpoint_every": epochs, "cpus_per_worker": max(1, cores // workers)})
    started = time.perf_counter()
    with CpuSampler() as sampler:
        result = fit(run, "bench", name=f"bench-{workers}w-{time.time_ns()}", store=store, export=False)
    wall = time.perf_counter() - started
    events = epoch_rates(result.run_uri)
    assert len(events) == epochs, f"{len(events)} epochs in TensorBoard, {epochs} trained"
    rate = float(np.median([r for _, r in events[1:]]))
    m = result.metrics
    steady_s = m["step"] * run.train.global_batch / rate  # every epoch's steps at the steady rate
    used = sampler.cores(events[0][0], events[-1][0])  # from the end of epoch 1 to the end of the last
    worker_cores = sum(c for name, c in used.items() if name == WORKER_PROCESS)
    return RayRun(rate, wall - steady_s, float(m["perf/peak_rss_mib"]), {k: float(m[k]) for k in STARTUP},
                  worker_cores, sum(used.values()) - worker_cores)


PLAIN_LABEL, PLAIN_THREADS_LABEL = "plain TF, 1 process", "plain TF, the 1-worker run's threads"
PLAIN_2P_LABEL = "plain TF, 2 processes (MultiWorkerMirroredStrategy, no Ray)"


def worker_threads(cfg, workers: int = 1) -> tuple[int, int]:
    """(intra-op, inter-op) threads of each worker of a ``workers``-worker run, which splits the cores."""
    from genai_ray.train.loop import thread_counts

    run = cfg.model_copy(deep=True)
    run.train.cpus_per_worker = max(1, (os.cpu_count() or 1) // workers)
    return thread_counts(run)


def one_round(cfg, store: str, dataset: str, epochs: int, reverse: bool) -> dict[str, float | RayRun]:
    """Every path once, plain first or last: {path: images/s (plain) or a RayRun, "ray start": s}. Where
    the config sets the worker's thread pools apart from TensorFlow's defaults, the plain loop also runs with
    the 1-worker run's threads, which separates the thread setting's gain from Ray's cost."""
    import ray

    from genai_ray.ray_runtime import ensure_ray

    cores = os.cpu_count() or 1
    threads = worker_threads(cfg)

    def plain_paths() -> dict[str, float]:
        out = {PLAIN_LABEL: plain_rate(cfg, dataset, epochs)}
        if threads != (cores, cores):
            out[PLAIN_THREADS_LABEL] = plain_rate(cfg, dataset, epochs, threads)
        out[PLAIN_2P_LABEL] = plain_rate(cfg, dataset, epochs, worker_threads(cfg, 2), processes=2)
        return out

    def ray_paths() -> dict[str, float | RayRun]:
        started = time.perf_counter()
        ensure_ray()
        out = {"ray start": time.perf_counter() - started}
        for workers in (2, 1) if reverse else (1, 2):
            out[f"Ray Train, {workers} worker{'s' if workers > 1 else ''}"] = ray_rate(cfg, store, workers, epochs)
        ray.shutdown()
        return out

    if reverse:
        runs = ray_paths()
        return {**runs, **plain_paths()}
    return {**plain_paths(), **ray_paths()}


def main() -> None:
    from genai_ray.config import build_config, parse_set_option
    from genai_ray.data.prepare import prepare
    from genai_ray.data.reader import open_dataset
    from genai_ray.data.sources import digits_source, shapes_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--data", default="digits", choices=["digits", "shapes"])
    ap.add_argument("--epochs", type=int, default=60, help="epochs per measurement (the first is excluded)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every path, alternating their order")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. train.global_batch=256")
    ap.add_argument("--images", type=int, default=10000, help="shapes: how many 32x32 images to generate")
    ap.add_argument("--variants", nargs="+", help="workers,intra,inter,xla,steps_per_call[,precision] of each step "
                    "variant; the first is the reference (bench.step_variants)")
    ap.add_argument("--burst-images", type=int, default=1024, help="--variants: images per variant per round")
    ap.add_argument("--reference-set", nargs="+", default=[], help="--variants: config overrides for the first "
                    "variant only, e.g. model.family=dcgan model.base_channels=64")
    args = ap.parse_args()
    if args.variants:
        fitted_variants(args)
        return
    cfg = build_config(args.preset, {**parse_set_option(args.set), "train": {
        **parse_set_option(args.set).get("train", {}), "workers": 1}})
    store = tempfile.mkdtemp(prefix="genai-ray-bench-")
    os.environ["GENAI_RAY_STORE"] = store
    source = digits_source(None) if args.data == "digits" else shapes_source(args.images, 32, 0)
    prepare(source, os.path.join(store, "datasets", "bench"), name="bench", progress=False, shards=2)
    dataset = os.path.join(store, "datasets", "bench")
    rounds = [one_round(cfg, store, dataset, args.epochs, reverse=r % 2 == 1) for r in range(args.rounds)]

    print(f"\n{machine()}; preset {args.preset}, model {cfg.model.family}, global batch {cfg.train.global_batch}, "
          f"steps/call {cfg.train.steps_per_call}, data {args.data}, {args.epochs} epochs a run, {args.rounds} "
          "round(s), plain first in rounds 1, 3, ..., last in 2, 4, ...")
    manifest = open_dataset(dataset).manifest
    shard_mib = manifest.train_count * int(np.prod(manifest.shape)) / 2**20  # uint8 pixels, the whole split
    rows = []
    for label in [k for k in (PLAIN_LABEL, PLAIN_THREADS_LABEL, PLAIN_2P_LABEL) if k in rounds[0]]:
        ratios = [r[label] / r[PLAIN_LABEL] for r in rounds]
        rows.append([label, ", ".join(f"{r[label]:,.0f}" for r in rounds), f"{statistics.median(ratios):.2f}x",
                     ", ".join(f"{x:.2f}" for x in ratios), "", "", ""])
    labels = [k for k in rounds[0] if k.startswith("Ray Train")]
    for workers, label in enumerate(sorted(labels), start=1):
        ratios = [r[label].rate / r[PLAIN_LABEL] for r in rounds]
        rows.append([label, ", ".join(f"{r[label].rate:,.0f}" for r in rounds), f"{statistics.median(ratios):.2f}x",
                     ", ".join(f"{x:.2f}" for x in ratios), ", ".join(f"{r[label].outside_s:.1f}" for r in rounds),
                     f"{rounds[-1][label].peak_rss_mib:,.0f} ({shard_mib / workers:.1f})",
                     ", ".join(f"{r[label].worker_cores:.2f} / {r[label].other_cores:.2f}" for r in rounds)])
    print(table(["path", "images/s, each round", "vs plain (median)", "ratio, each round", "outside steady steps s",
                 "rank 0 peak RSS MiB (its shard MiB)", "cores, workers / all else, each round"], rows))
    if PLAIN_THREADS_LABEL in rounds[0]:
        same = [r["Ray Train, 1 worker"].rate / r[PLAIN_THREADS_LABEL] for r in rounds]
        print(f"Ray Train, 1 worker against the plain loop with the same threads (intra, inter = "
              f"{worker_threads(cfg)}): "
              f"{statistics.median(same):.2f}x (each round: {', '.join(f'{x:.2f}' for x in same)})")
    same = [r["Ray Train, 2 workers"].rate / r[PLAIN_2P_LABEL] for r in rounds]
    print(f"Ray Train, 2 workers against the same 2-process loop without Ray (threads {worker_threads(cfg, 2)} "
          f"each): {statistics.median(same):.2f}x (each round: {', '.join(f'{x:.2f}' for x in same)})")
    print("\nTime to first step, s (rank 0; each round starts its own local Ray before its Ray runs):")
    rows = [[f"{label}, round {i}", f"{r['ray start']:.1f}", *(f"{r[label].startup[k]:.1f}" for k in STARTUP),
             f"{sum(r[label].startup.values()):.1f}"]
            for label in sorted(labels) for i, r in enumerate(rounds, start=1)]
    print(table(["path", "local Ray start", "launch (controller, worker group)", "setup (TF, model)",
                 "shard read", "first call (tracing)", "run start to first step"], rows))


def fitted_variants(args) -> None:
    """``--variants``: the step variants of the default preset fitted to a labelled 32x32x3 dataset of
    ``--images`` images (10 classes), with ``--set`` on top."""
    from genai_ray.config import build_config, parse_set_option
    from genai_ray.data.manifest import Manifest
    from genai_ray.train.defaults import fit_to_data

    shape = (32, 32, 3)
    manifest = Manifest(name="bench", shape=shape, channels=3, count=args.images, train_count=args.images,
                        holdout_count=0, holdout_fraction=0.0, class_names=[str(i) for i in range(10)], seed=0,
                        shards=[], source={}, created_at="")
    fitted, why = fit_to_data(manifest)
    print("fitted: " + "; ".join(why))
    cfg = build_config("default", parse_set_option(args.set), fitted=fitted)
    reference = (build_config("default", parse_set_option(args.set + args.reference_set), fitted=fitted)
                 if args.reference_set else None)
    step_variants.run(cfg, args.variants, args.rounds, args.images, shape, 10, args.burst_images, reference)


if __name__ == "__main__":
    main()
