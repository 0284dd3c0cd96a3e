"""``train_loop_per_worker``: what each Ray Train worker runs. The Ray glue is marked ``# Ray:``.

The loop itself (set-up, one epoch, rank 0's reporting) is Ray-free in ``loop.py``, shared with Tune's
single-worker trials. Here: each worker's batches come from ``input.py``, its Ray Data shard read once into
memory or its own Parquet row groups streamed (``train.data_mode``), as a seeded tf.data pipeline under
``MultiWorkerMirroredStrategy``. Every rank runs the same
number of steps per epoch (computed by the driver), because a rank that stops early hangs the collectives.
Every rank calls ``ray.train.report``, a barrier, only at epochs that checkpoint or evaluate: a report waits
until Ray Train's controller has collected the previous one, so reporting every epoch would hold short epochs
to the controller's poll interval (docs/ray-notes.md).
"""

from __future__ import annotations

import logging
import os
import time

import ray.train
from ray.train.v2._internal.execution import context as train_context  # Ray:

from genai_ray import storage
from genai_ray.config import Config, TrainConfig
from genai_ray.train.input import MemoryInput, ShardReader, StreamInput, StreamSpec, read_shard
from genai_ray.train.loop import RunPlan, configure_tensorflow, local_folder, make_strategy, set_up, train

# TensorFlow is imported inside the functions that need it, here and in train/loop.py and train/input.py: Ray Train's
# controller unpickles train_loop_per_worker, and TensorFlow there cost every run about 3 s of start-up
# (tests/test_train.py checks that it stays out).

# The last run's distributed iterator, kept alive until the process ends. Under MultiWorkerMirroredStrategy,
# destroying it can block for many seconds (its destructor waits for a tf.data background thread),
# and Ray Train ends a run only when every worker's function has returned. Ray kills the worker process after
# the run, so nothing is lost by not destroying it first.
_PARKED_ITERATOR: list = []
# Fault injection for tests: the last rank dies once at this epoch. Not a config key: users never set it. The
# driver forwards it to the workers when it is set (train/run.py); only the worker reads it.
FAULT_ENV = "GENAI_RAY_FAULT_FAIL_AT_EPOCH"


def quiet_worker_logs() -> None:
    """Keep a run's output to its progress lines and warnings. Ray Train 2.60 logs every ``ray.train.report``
    at INFO with the report's whole repr (its logger is named after its source file, so no ``ray`` logger
    setting reaches it), and TensorFlow logs every collective it builds at INFO."""
    import tensorflow as tf

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    tf.get_logger().setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)  # TensorFlow's checkpoint saver logs through absl


def maybe_fail(t: TrainConfig, epoch: int, rank: int, world: int, run_uri: str) -> None:
    """Test hook: the last rank (rank 1 with two workers) dies once at epoch ``$GENAI_RAY_FAULT_FAIL_AT_EPOCH``.

    It first waits until Ray Train's controller has registered the previous checkpoint (it polls workers
    every few seconds, and a report still unpolled when a worker dies is lost), so the crash always tests
    resuming from a checkpoint rather than that race.
    """
    if os.environ.get(FAULT_ENV) != str(epoch) or rank != min(1, world - 1):
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


def external_checkpoint(uri: str | None):
    """A checkpoint folder from another run (a Tune trial's winner) as a Ray checkpoint, or None."""
    if not uri:
        return None

    fs, path = storage.resolve(uri)
    return ray.train.Checkpoint(path, filesystem=fs)


def report_to_train(metrics: dict, folder: str | None) -> None:
    """The loop's sink: every rank reports (a barrier); rank 0 hands over the checkpoint folder it filled."""
    checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
    ray.train.report(metrics, checkpoint=checkpoint,  # Ray:
                     checkpoint_dir_name=f"checkpoint-epoch-{metrics['epoch']:05d}" if checkpoint else None)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point. ``loop_config`` = {"config": Config as JSON, "plan": RunPlan as dict}."""
    entered = time.time()
    cfg = Config.model_validate(loop_config["config"])
    plan = RunPlan(**{**loop_config["plan"], "image_shape": tuple(loop_config["plan"]["image_shape"])})

    streaming = plan.data_mode == "stream"
    shard = None if streaming else ray.train.get_dataset_shard("train")  # Ray: this worker's share of the split
    reader = None if streaming else ShardReader(shard)  # read while TensorFlow starts
    ctx = ray.train.get_context()  # Ray:
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    configure_tensorflow(cfg)
    quiet_worker_logs()
    strategy = make_strategy(world)  # the first TF op: collectives are configured here
    own = ray.train.get_checkpoint()  # Ray: resume after a failure or a re-run
    exploit = own is None and bool(plan.init_checkpoint)  # a PBT exploit: the perturbed rates win over the restored
    with local_folder(own or external_checkpoint(plan.init_checkpoint)) as folder:
        session = set_up(cfg, plan, strategy, rank, folder, exploit, loop_config["config"])
    if session.start >= plan.ticks:  # a re-run of a finished run (the driver normally answers it without workers)
        if rank == 0:
            print(f"{plan.run_uri} already finished at epoch {session.start}; nothing to train", flush=True)
        return
    set_up_done = time.time()
    if streaming:  # nothing to read before the first step: the stream starts with it
        data = StreamInput(StreamSpec.from_json(plan.stream), plan.image_shape, cfg.train.seed, rank, world,
                           steps_per_tick=plan.steps_per_epoch)
    else:
        data = MemoryInput(reader.arrays(), cfg.train.seed, rank,
                           None if cfg.train.cache_in_memory else lambda: read_shard(shard))
    session.startup.update({"startup/launch_s": entered - plan.launched_at, "startup/setup_s": set_up_done - entered,
                            "startup/shard_read_s": time.time() - set_up_done})  # the read's wait beyond the setup
    faults = lambda epoch: maybe_fail(cfg.train, epoch, rank, world, plan.run_uri)  # noqa: E731 - test hook
    iterator = train(session, data, report_to_train, before_epoch=faults)
    _PARKED_ITERATOR[:] = [iterator]
