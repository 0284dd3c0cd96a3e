"""``train_loop_per_worker``: what each Ray Train worker runs. The Ray glue is marked ``# Ray:``.

Each worker's batches come from ``genai_ray.train.input`` (its shard held in memory, or streamed from Parquet) as
a seeded tf.data pipeline, and it runs the GAN step under ``MultiWorkerMirroredStrategy``. Every rank runs the same
number of steps per epoch (computed by the driver), because a rank that stops early hangs the collectives.
Rank 0 alone writes TensorBoard, sample grids and the checkpoint. Every rank calls ``ray.train.report``, a
barrier, only at epochs that checkpoint or evaluate: a report waits until Ray Train's controller has collected
the previous one (it polls every 0.2 s), which held every 0.14 s digits epoch to 0.2 s when each epoch reported.
Progress goes to stdout and TensorBoard every epoch.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from genai_ray import storage
from genai_ray.config import Config, TrainConfig
from genai_ray.train.input import MemoryInput, StreamInput, StreamSpec

STATE_DIR = "state"  # tf.train.Checkpoint files inside a checkpoint folder
STATE_PREFIX = "ckpt"
SAMPLES_FILE = "samples.png"
GRID_SEEDS = 64
# The last run's distributed iterator, kept alive until the process ends. Under MultiWorkerMirroredStrategy,
# destroying it can block for up to ~16 s (its destructor waits for a tf.data background thread; seen with gdb),
# and Ray Train ends a run only when every worker's function has returned. Ray kills the worker process after
# the run, so nothing is lost by not destroying it first.
_PARKED_ITERATOR: list = []


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
    data_mode: str = ""  # train.data_mode as the driver resolved it: "memory" or "stream" ("": not yet)
    stream: dict | None = None  # stream mode: the StreamSpec as JSON (row groups, steps, shuffle buffer)


def thread_counts(cfg: Config) -> tuple[int, int]:
    """(intra-op, inter-op) threads: as configured, else from the CPUs the worker reserved, so that 2 workers on
    2 cores don't oversubscribe them. An MLP's dense ops are too small to split: it gets one thread per op and
    runs ops side by side, about 1.5x faster on 2 CPUs; the DCGAN's convolutions want every thread
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


def quiet_worker_logs() -> None:
    """Keep a run's output to its progress lines and warnings. Ray Train 2.60 logs every ``ray.train.report``
    at INFO with the report's whole repr (its logger is named after its source file, so no ``ray`` logger
    setting reaches it), and TensorFlow logs every collective it builds at INFO."""
    import logging

    import tensorflow as tf
    from ray.train.v2._internal.execution import context as train_context  # Ray:

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    tf.get_logger().setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)  # TensorFlow's checkpoint saver logs through absl


def make_strategy(world: int):
    """MultiWorkerMirroredStrategy across workers (Ray Train set TF_CONFIG); one worker needs no collectives."""
    import tensorflow as tf

    if world > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def startup_line(startup: dict[str, float]) -> str:
    """Where this attempt's time before its first epoch went: people wait on it, and tuning pays it per trial."""
    return (f"start-up: launch {startup['startup/launch_s']:.1f} s (controller, worker group), "
            f"setup {startup['startup/setup_s']:.1f} s (TensorFlow, model, restore), "
            f"shard read {startup['startup/shard_read_s']:.1f} s, "
            f"first call {startup['startup/first_call_s']:.1f} s (tracing)")


def grid_inputs(latent_dim: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed latents (the package's per-seed latents) and labels cycling over classes, for sample grids."""
    from genai_ray.package import latents

    return latents(list(range(GRID_SEEDS)), latent_dim), np.arange(GRID_SEEDS) % max(num_classes, 1)


def maybe_fail(t: TrainConfig, epoch: int, rank: int, world: int, run_uri: str) -> None:
    """Test hook: the last rank (rank 1 with two workers) dies once at ``train.fail_at_epoch``.

    It first waits until Ray Train's controller has registered the previous checkpoint (it polls workers
    every few seconds, and a report still unpolled when a worker dies is lost), so the crash always tests
    resuming from a checkpoint rather than that race.
    """
    if t.fail_at_epoch != epoch or rank != min(1, world - 1):
        return
    marker = storage.join(run_uri, "faults", f"epoch-{epoch}")
    if storage.exists(marker):
        return
    last = (epoch - 1) // t.checkpoint_every * t.checkpoint_every
    snapshot = storage.join(run_uri, "checkpoint_manager_snapshot.json")
    deadline = time.monotonic() + 300
    while last and time.monotonic() < deadline:
        if storage.exists(snapshot) and f"checkpoint-epoch-{last:05d}".encode() in storage.read_bytes(snapshot):
            break
        time.sleep(0.5)
    storage.write_bytes(marker, f"rank {rank} killed at epoch {epoch}\n".encode())
    print(f"fault injection: rank {rank} exits at epoch {epoch}", flush=True)
    os._exit(1)


def restore(trainer, checkpoint) -> int:
    """Load a Ray checkpoint into the trainer; returns the epochs already completed."""
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        trainer.checkpoint.read(os.path.join(folder, STATE_DIR, STATE_PREFIX)).assert_existing_objects_matched()
    return int(trainer.epoch.numpy())


def external_checkpoint(uri: str | None):
    """A checkpoint folder from another run (a Tune trial's winner) as a Ray checkpoint, or None."""
    if not uri:
        return None
    import ray.train

    fs, path = storage.resolve(uri)
    return ray.train.Checkpoint(path, filesystem=fs)


def evaluate_now(trainer, cfg: Config, plan: RunPlan) -> dict[str, float]:
    """The cheap held-out metrics of the sampling generator (rank 0): what Tune optimises."""
    from genai_ray.evaluate import cheap_metrics, keras_generate

    generate = keras_generate(trainer.sampler, cfg.model.latent_dim, cfg.model.conditional)
    probs = plan.class_probs if cfg.model.conditional else None
    return cheap_metrics(generate, plan.dataset_uri, n=cfg.train.eval_samples, class_probs=probs, cfg=cfg.eval)


def save(trainer, folder: str, grid_png: bytes, meta: dict) -> None:
    trainer.checkpoint.write(os.path.join(folder, STATE_DIR, STATE_PREFIX))
    with open(os.path.join(folder, SAMPLES_FILE), "wb") as f:
        f.write(grid_png)
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point. ``loop_config`` = {"config": Config as JSON, "plan": RunPlan as dict}."""
    entered = time.time()
    cfg = Config.model_validate(loop_config["config"])
    plan = RunPlan(**{**loop_config["plan"], "image_shape": tuple(loop_config["plan"]["image_shape"])})
    t = cfg.train
    import ray.train

    ctx = ray.train.get_context()  # Ray:
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if plan.data_mode == "stream":
        data = StreamInput(StreamSpec.from_json(plan.stream), plan.image_shape, t.seed, rank, world)
    else:  # Ray: this worker's share of the training split, read on a thread while TensorFlow starts
        data = MemoryInput(ray.train.get_dataset_shard("train"), t.seed, rank, t.cache_in_memory)
    configure_tensorflow(cfg)
    quiet_worker_logs()
    strategy = make_strategy(world)  # the first TF op: collectives are configured here

    from genai_ray.gan.trainer import GanTrainer
    from genai_ray.images import grid, grid_png
    from genai_ray.train.tensorboard import TensorBoard

    trainer = GanTrainer(cfg, plan.image_shape, plan.num_classes, strategy)
    own = ray.train.get_checkpoint()  # Ray: resume after a failure or a re-run
    start = restore(trainer, own or external_checkpoint(plan.init_checkpoint))
    if own is None and plan.init_checkpoint:
        trainer.set_learning_rates(t.g_lr, t.d_lr)  # a PBT exploit: the perturbed rates win over the restored
    if start >= t.epochs:  # a re-run of a finished run (the driver normally answers it without workers)
        if rank == 0:
            print(f"{plan.run_uri} already finished at epoch {start}; nothing to train", flush=True)
        return
    set_up = time.time()
    data.wait()
    startup = {"startup/launch_s": entered - plan.launched_at, "startup/setup_s": set_up - entered,
               "startup/shard_read_s": time.time() - set_up}  # the read's wait beyond the setup it overlaps
    board = TensorBoard(plan.run_uri) if rank == 0 else None
    z_grid, y_grid = grid_inputs(cfg.model.latent_dim, plan.num_classes)
    if rank == 0 and start:
        print(f"resumed {plan.run_uri} at epoch {start}", flush=True)
    for epoch in range(start + 1, t.epochs + 1):
        maybe_fail(t, epoch, rank, world, plan.run_uri)
        iterator = data.iterator(trainer, epoch)
        began = time.perf_counter()
        losses, left = [], plan.steps_per_epoch
        while left:
            n = min(t.steps_per_call, left)
            losses.append(trainer.train_steps(iterator, n))
            left -= n
            startup.setdefault("startup/first_call_s", time.perf_counter() - began)  # tracing, then n steps
        seconds = time.perf_counter() - began
        trainer.epoch.assign(epoch)
        metrics = {
            "epoch": epoch,
            "loss/d": float(np.mean([s.d for s in losses])),
            "loss/g": float(np.mean([s.g for s in losses])),
            "perf/images_per_s": plan.steps_per_epoch * t.global_batch / seconds,
            "perf/epoch_s": seconds,
            "perf/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # this worker (Linux: KiB)
            "step": int(trainer.step.numpy()),
            **trainer.learning_rates(),
            **startup,  # this attempt's, in every report: a run's result holds only its last reports
        }
        if own is None and plan.init_checkpoint:
            metrics["init/epoch"] = start  # this run continues another run's checkpoint (a PBT exploit)
        want_checkpoint = epoch % t.checkpoint_every == 0 or epoch == t.epochs
        scored = want_checkpoint and t.keep_checkpoints_by != "latest"  # Ray ranks each checkpoint by its report
        evaluating = bool(t.eval_every) and (epoch % t.eval_every == 0 or epoch == t.epochs or scored)
        if rank == 0 and evaluating:
            metrics.update(evaluate_now(trainer, cfg, plan))
        with tempfile.TemporaryDirectory(prefix="genai-ray-ckpt-") as folder:
            checkpoint = None
            if rank == 0:
                if epoch == start + 1:
                    print(startup_line(startup), flush=True)
                print(f"epoch {epoch}/{t.epochs}  loss/d {metrics['loss/d']:.4f}  loss/g {metrics['loss/g']:.4f}  "
                      f"{metrics['perf/images_per_s']:,.0f} images/s  {seconds:.2f} s", flush=True)
                board.scalars(epoch, {k: v for k, v in metrics.items()
                                      if "/" in k and (epoch == start + 1 or not k.startswith("startup/"))})
                if want_checkpoint:
                    samples = trainer.sample(z_grid, y_grid)
                    board.image(epoch, "samples", grid(samples, scale=1))
                    save(trainer, folder, grid_png(samples, {"run": plan.run_uri, "epoch": str(epoch)}),
                         {"epoch": epoch, "resumed_from": start, "metrics": metrics, "plan": asdict(plan),
                          "config": loop_config["config"]})
                    checkpoint = ray.train.Checkpoint.from_directory(folder)
                board.flush()
            if want_checkpoint or evaluating:  # decided from the config alone, so every rank reports alike
                ray.train.report(metrics, checkpoint=checkpoint,  # Ray: a barrier; every rank calls it
                                 checkpoint_dir_name=f"checkpoint-epoch-{epoch:05d}" if checkpoint else None)
    _PARKED_ITERATOR[:] = [iterator]
