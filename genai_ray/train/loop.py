"""The training loop without Ray: set-up, one epoch, and rank 0's reporting.

Ray Train's ``train_loop_per_worker`` (``worker.py``) and Tune's single-worker trials, which train inside
the trial's own actor, call these same functions; only the glue around them differs:

- where the rows come from: an *input* object whose ``iterator(trainer, epoch)`` gives the distributed
  iterator for an epoch (``input.py``: ``MemoryInput`` holds arrays in memory, ``StreamInput`` streams Parquet);
- where a report goes: a *sink* ``sink(metrics, folder)``, called with a filled checkpoint folder (rank 0, at a
  checkpoint epoch) or ``None``. Ray Train's sink is ``ray.train.report`` (a barrier every rank calls);
  Tune's is ``ray.tune.report``.

Rank 0 alone evaluates, prints, writes TensorBoard and fills the checkpoint folder. Progress is one line
every few epochs (about 30 lines a run, always the first and the last epoch), with the ETA.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from genai_ray import storage
from genai_ray.config import DEFAULT_KIMG, Config
from genai_ray.evaluation.evaluate import cheap_metrics, keras_generate
from genai_ray.images import grid, grid_png
from genai_ray.package.format import SAMPLES_FILE, latents
from genai_ray.train.input import MemoryInput  # noqa: F401 - the memory input, where the loop's users look for it

# TensorFlow and the GAN modules are imported inside the functions that build and train the model: Ray Train's
# controller loads this module when it unpickles the worker's loop (train/worker.py), and TensorFlow there cost every
# run about 3 s of start-up.

STATE_DIR = "state"  # tf.train.Checkpoint files inside a checkpoint folder
STATE_PREFIX = "ckpt"
DIGESTS_DIR = "digests"  # <run>/digests/NNNNN.json: the weight digests of the checkpoint at tick NNNNN
GRID_SEEDS = 64
# A run's time to its first step, as its first report tells it, in order: launch (a Ray Train run's controller
# and workers), set-up (TensorFlow, data, model, restore), the shard read's wait, then the first traced call.
STARTUP = ("startup/launch_s", "startup/setup_s", "startup/shard_read_s", "startup/first_call_s")
PROGRESS_LINES = 30  # progress lines a run prints, about


@dataclass
class RunPlan:
    """What the driver decided before any worker started; identical on every rank."""

    run_uri: str
    image_shape: tuple[int, int, int]
    num_classes: int
    steps_per_epoch: int
    dataset_name: str
    dataset_uri: str = ""  # for in-training evaluation (train.eval_every)
    class_probs: list[float] | None = None  # training-set class proportions, for conditional evaluation
    init_checkpoint: str | None = None  # checkpoint URI to start from when the run has none (Tune's PBT)
    launched_at: float = 0.0  # driver's wall clock when it started the run (a restarted attempt's launch includes
    # the attempts before it)
    ticks: int = 0  # the loop's units ("epoch" in reports): about 1 kimg each with train.kimg, else epochs
    total_steps: int = 0  # optimiser steps in the whole run (the last tick may be short)
    in_kimg: bool = False  # the run's length was given in kimg (progress lines count kimg)
    data_mode: str = ""  # train.data_mode as the driver resolved it: "memory" or "stream" ("": not yet)
    stream: dict | None = None  # stream mode: the StreamSpec as JSON (row groups, steps, shuffle buffer)


@dataclass(frozen=True)
class RunLength:
    steps_per_tick: int
    ticks: int
    total_steps: int


def run_length(kimg: float | None, epochs: int | None, train_count: int, global_batch: int) -> RunLength:
    """A run's steps. With ``kimg``: ceil(kimg * 1000 / global_batch) steps, i.e. kimg * 1000 images shown (less
    than one global batch more), whatever the dataset size, worker count and batch; a tick is about 1 kimg (at
    least one step), the unit of checkpoint and evaluation intervals. With ``epochs``: whole passes."""
    if epochs is not None:
        per = train_count // global_batch
        return RunLength(per, epochs, per * epochs)

    total = math.ceil((kimg or DEFAULT_KIMG) * 1000 / global_batch)
    per = max(1, round(1000 / global_batch))
    return RunLength(per, math.ceil(total / per), total)


class Input(Protocol):
    """Where an epoch's batches come from: a distributed iterator of (uint8 images, labels) per replica."""

    def iterator(self, trainer, epoch: int): ...


Sink = Callable[[dict[str, Any], "str | None"], None]  # (metrics, filled checkpoint folder or None)


def thread_counts(cfg: Config) -> tuple[int, int]:
    """(intra-op, inter-op) threads: as configured, else from the CPUs the worker reserved, so that 2 workers on
    2 cores don't oversubscribe them. An MLP's dense ops are too small to split: it gets one thread per op and
    runs ops side by side, which is faster on few CPUs; the DCGAN's convolutions want every thread
    (BENCHMARKS.md)."""
    t = cfg.train
    cpus = max(1, int(t.cpus_per_worker))
    return t.intra_op_threads or (1 if cfg.model.family == "mlp" else cpus), t.inter_op_threads or cpus


def configure_tensorflow(cfg: Config) -> None:
    """Threads and GPU memory growth. Must run before any TensorFlow op (the strategy comes next)."""
    import tensorflow as tf

    intra, inter = thread_counts(cfg)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def make_strategy(world: int):
    """MultiWorkerMirroredStrategy across workers (Ray Train set TF_CONFIG); one worker needs no collectives."""
    import tensorflow as tf

    if world > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def grid_inputs(latent_dim: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed latents (the package's per-seed latents) and labels cycling over classes, for sample grids."""
    return latents(list(range(GRID_SEEDS)), latent_dim), np.arange(GRID_SEEDS) % max(num_classes, 1)


@dataclass
class Session:
    """One attempt of a run on one rank: the trainer and what the epochs share."""

    cfg: Config
    plan: RunPlan
    trainer: Any  # GanTrainer
    rank: int
    start: int  # epochs completed before this attempt
    exploit: bool  # started from another run's checkpoint (a PBT exploit)
    config_json: dict  # the config as the run saved it (into every checkpoint's meta.json)
    startup: dict[str, float] = field(default_factory=dict)
    board: Any = None  # rank 0's TensorBoard
    grid: tuple[np.ndarray, np.ndarray] | None = None
    progress: Progress | None = None
    started_from: dict | None = None  # the restored checkpoint's epoch and weight digests (meta.json)


@contextlib.contextmanager
def local_folder(checkpoint) -> Iterator[str | None]:
    """A Ray Train or Tune checkpoint as a local folder (downloaded when remote), or None."""
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as folder:
        yield folder


def restore(trainer, folder: str | None) -> int:
    """Load a checkpoint folder into the trainer; returns the epochs already completed."""
    if folder is None:
        return 0
    trainer.checkpoint.read(os.path.join(folder, STATE_DIR, STATE_PREFIX)).assert_existing_objects_matched()
    return int(trainer.epoch.numpy())


def set_up(cfg: Config, plan: RunPlan, strategy, rank: int, checkpoint_folder: str | None, exploit: bool,
           config_json: dict | None = None) -> Session:
    """Build the trainer and restore it from ``checkpoint_folder`` (the run's own, or the winner's in a PBT
    exploit, whose perturbed learning rates then replace the restored ones)."""
    from genai_ray.gan.trainer import GanTrainer

    t = cfg.train
    trainer = GanTrainer(cfg, plan.image_shape, plan.num_classes, strategy)
    start = restore(trainer, checkpoint_folder)
    if exploit:
        trainer.set_learning_rates(t.g_lr, t.d_lr)
    session = Session(cfg, plan, trainer, rank, start, exploit, config_json or cfg.model_dump(mode="json"))
    if checkpoint_folder is not None and rank == 0:
        session.started_from = {"epoch": start, "weights_sha256": weights_digest(trainer)}
    return session


def weights_digest(trainer) -> dict[str, str]:
    """sha256 of each network's weights: proves which checkpoint a run started from (a PBT exploit's winner)."""
    nets = {"g": trainer.g, "d": trainer.d, **({"ema": trainer.ema} if trainer.ema is not None else {})}
    return {name: hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in net.get_weights())).hexdigest()
            for name, net in nets.items()}


def open_reporting(session: Session, progress: bool = True) -> None:
    """Rank 0's TensorBoard writer, sample-grid inputs and progress printer, opened once before the first epoch.
    Without ``progress`` (a Tune trial, whose campaign prints its reports) nothing is printed."""
    if session.rank != 0:
        return
    from genai_ray.train.tensorboard import TensorBoard

    session.board = TensorBoard(session.plan.run_uri)
    session.grid = grid_inputs(session.cfg.model.latent_dim, session.plan.num_classes)
    plan = session.plan
    total_kimg = plan.total_steps * session.cfg.train.global_batch / 1000 if plan.in_kimg else None
    session.progress = Progress(session.start, plan.ticks, total_kimg) if progress else None
    if session.start and progress:
        print(f"resumed {session.plan.run_uri} at epoch {session.start}", flush=True)


def run_epoch(session: Session, iterator, epoch: int) -> dict[str, Any]:
    """Train one tick (the plan's steps, ``train.steps_per_call`` per call; the last tick may be short); returns
    its metrics."""
    t, plan, trainer = session.cfg.train, session.plan, session.trainer
    began = time.perf_counter()
    steps = min(plan.steps_per_epoch, plan.total_steps - (epoch - 1) * plan.steps_per_epoch)
    trainer.schedule((epoch - 1) * plan.steps_per_epoch / plan.total_steps)
    losses, left = [], steps
    while left:
        n = min(t.steps_per_call, left)
        losses.append(trainer.train_steps(iterator, n))
        left -= n
        session.startup.setdefault("startup/first_call_s", time.perf_counter() - began)  # tracing, then n steps
    seconds = time.perf_counter() - began
    trainer.epoch.assign(epoch)
    metrics = {
        "epoch": epoch,
        "loss/d": float(np.mean([s.d for s in losses])),
        "loss/g": float(np.mean([s.g for s in losses])),
        "perf/images_per_s": steps * t.global_batch / seconds,
        "perf/epoch_s": seconds,
        "perf/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # this process (Linux: KiB)
        "step": int(trainer.step.numpy()),
        "kimg": int(trainer.step.numpy()) * t.global_batch / 1000,  # real images shown to D so far, thousands
        **trainer.learning_rates(),
        **trainer.augment_stats(),
        **session.startup,  # this attempt's, in every report: a run's result holds only its last reports
    }
    if session.exploit:
        metrics["init/epoch"] = session.start  # this run continues another run's checkpoint (a PBT exploit)
    return metrics


def evaluate_now(session: Session) -> dict[str, float]:
    """The cheap held-out metrics of the sampling generator (rank 0): what Tune optimises."""
    cfg, plan = session.cfg, session.plan
    generate = keras_generate(session.trainer.sampler, cfg.model.latent_dim, cfg.model.conditional)
    probs = plan.class_probs if cfg.model.conditional else None
    return cheap_metrics(generate, plan.dataset_uri, n=cfg.train.eval_samples, class_probs=probs, cfg=cfg.eval)


def save(trainer, folder: str, grid_png: bytes, meta: dict) -> None:
    trainer.checkpoint.write(os.path.join(folder, STATE_DIR, STATE_PREFIX))
    with open(os.path.join(folder, SAMPLES_FILE), "wb") as f:
        f.write(grid_png)
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)


def report(session: Session, epoch: int, metrics: dict[str, Any], sink: Sink) -> None:
    """Rank 0 evaluates, prints, writes TensorBoard and fills the checkpoint folder; every rank then calls
    ``sink`` at epochs that checkpoint or evaluate (decided from the config alone, so all ranks agree)."""
    t = session.cfg.train
    last = session.plan.ticks
    want_checkpoint = epoch % t.checkpoint_every == 0 or epoch == last
    scored = want_checkpoint and t.keep_checkpoints_by != "latest"  # Ray ranks each checkpoint by its report
    evaluating = bool(t.eval_every) and (epoch % t.eval_every == 0 or epoch == last or scored)
    if session.rank == 0 and evaluating:
        metrics.update(evaluate_now(session))
    with tempfile.TemporaryDirectory(prefix="genai-ray-ckpt-") as folder:
        filled = None
        if session.rank == 0:
            first = epoch == session.start + 1
            if session.progress is not None:
                if first:
                    print(startup_line(session.startup), flush=True)
                session.progress.line(epoch, metrics)
            session.board.scalars(epoch, {k: v for k, v in metrics.items()
                                          if "/" in k and (first or not k.startswith("startup/"))})
            if want_checkpoint:
                filled = folder
                write_checkpoint(session, folder, epoch, metrics)
            session.board.flush()
        if want_checkpoint or evaluating:
            sink(metrics, filled)


def write_checkpoint(session: Session, folder: str, epoch: int, metrics: dict[str, Any]) -> None:
    samples = session.trainer.sample(*session.grid)
    session.board.image(epoch, "samples", grid(samples, scale=1))
    run_uri = session.plan.run_uri
    digests = weights_digest(session.trainer)
    save(session.trainer, folder, grid_png(samples, {"run": run_uri, "epoch": str(epoch)}),
         {"epoch": epoch, "resumed_from": session.start, "started_from": session.started_from, "metrics": metrics,
          "weights_sha256": digests, "plan": asdict(session.plan), "config": session.config_json})
    # The run's own record of what each checkpoint held: checkpoint folders can be pruned or replaced (Tune
    # reuses a folder it never registered in a synchronous PBT round, docs/tuning.md), this file is not.
    storage.write_bytes(storage.join(run_uri, DIGESTS_DIR, f"{epoch:05d}.json"),
                        json.dumps({"epoch": epoch, "weights_sha256": digests}).encode())


def train(session: Session, data: Input, sink: Sink, before_epoch: Callable[[int], None] | None = None,
          progress: bool = True):
    """The tick loop from the session's start to the plan's last tick; returns the last iterator (see worker.py)."""
    open_reporting(session, progress)
    iterator = None
    for epoch in range(session.start + 1, session.plan.ticks + 1):
        if before_epoch is not None:
            before_epoch(epoch)
        iterator = data.iterator(session.trainer, epoch)
        report(session, epoch, run_epoch(session, iterator, epoch), sink)
    return iterator


def startup_line(startup: dict[str, float]) -> str:
    """Where this attempt's time before its first epoch went: people wait on it, and tuning pays it per trial."""
    parts = {"startup/launch_s": "launch {:.1f} s (controller, worker group)",
             "startup/setup_s": "setup {:.1f} s (TensorFlow, model, restore)",
             "startup/shard_read_s": "shard read {:.1f} s",
             "startup/first_call_s": "first call {:.1f} s (tracing)"}
    return "start-up: " + ", ".join(text.format(startup[key]) for key, text in parts.items() if key in startup)


class Progress:
    """One progress line every ``every`` epochs, always the first and the last, with images/s and the ETA.

    The ETA extrapolates the wall time per epoch since the first epoch ended (the first one also traces).
    """

    def __init__(self, start: int, epochs: int, total_kimg: float | None = None, lines: int = PROGRESS_LINES) -> None:
        self.start, self.epochs, self.total_kimg = start, epochs, total_kimg  # total_kimg: the run counts in kimg
        self.every = max(1, math.ceil((epochs - start) / lines))
        self._first_done: float | None = None

    def due(self, epoch: int) -> bool:
        return epoch in (self.start + 1, self.epochs) or (epoch - self.start) % self.every == 0

    def eta_s(self, epoch: int, epoch_s: float) -> float:
        now = time.monotonic()
        if self._first_done is None:
            self._first_done = now
            return epoch_s * (self.epochs - epoch)
        done = epoch - self.start - 1
        return (now - self._first_done) / max(done, 1) * (self.epochs - epoch)

    def line(self, epoch: int, metrics: dict[str, Any]) -> None:
        eta = self.eta_s(epoch, metrics["perf/epoch_s"])
        if not self.due(epoch):
            return
        fd = f"  eval/fd {metrics['eval/fd']:.3f}" if "eval/fd" in metrics else ""
        kimg, unit = metrics["kimg"], "tick" if self.total_kimg else "epoch"
        where, done = ((f"kimg {kimg:.1f}/{self.total_kimg:.1f}", "") if self.total_kimg
                       else (f"epoch {epoch}/{self.epochs}", f"  kimg {kimg:.1f}"))
        print(f"{where}  loss/d {metrics['loss/d']:.4f}  loss/g {metrics['loss/g']:.4f}{fd}{done}  "
              f"{metrics['perf/images_per_s']:,.0f} images/s  {metrics['perf/epoch_s']:.2f} s/{unit}  "
              f"ETA {format_duration(eta)}", flush=True)


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
