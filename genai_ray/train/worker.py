"""``train_loop_per_worker``: what each Ray Train worker runs. The Ray glue is marked ``# Ray:``.

The loop itself (set-up, one epoch, rank 0's reporting) is Ray-free in ``loop.py``, shared with Tune's
single-worker trials. Here: each worker reads its own shard of the training split once (large batches, into
memory) and feeds a seeded tf.data pipeline under ``MultiWorkerMirroredStrategy``. Every rank runs the same
number of steps per epoch (computed by the driver), because a rank that stops early hangs the collectives.
Every rank calls ``ray.train.report``, a barrier, only at epochs that checkpoint or evaluate: a report waits
until Ray Train's controller has collected the previous one, so reporting every epoch would hold short epochs
to the controller's poll interval (docs/ray-notes.md).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from genai_ray import storage
from genai_ray.config import Config, TrainConfig
from genai_ray.train.loop import MemoryInput, RunPlan, configure_tensorflow, local_folder, make_strategy, set_up, train

READ_BATCH = 4096  # rows per Ray Data batch when loading a shard
# The last run's distributed iterator, kept alive until the process ends. Under MultiWorkerMirroredStrategy,
# destroying it can block for many seconds (its destructor waits for a tf.data background thread),
# and Ray Train ends a run only when every worker's function has returned. Ray kills the worker process after
# the run, so nothing is lost by not destroying it first.
_PARKED_ITERATOR: list = []


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


def read_shard(shard) -> tuple[np.ndarray, np.ndarray]:
    """This worker's rows as (uint8 NHWC, int64 labels), read in large batches (no per-row Python)."""
    images, labels = [], []
    for batch in shard.iter_batches(batch_size=READ_BATCH, batch_format="numpy"):
        images.append(batch["image"])
        labels.append(batch["label"])
    assert images, "this worker's shard is empty; the driver should have refused a dataset this small"
    return np.concatenate(images), np.concatenate(labels)


def make_dataset(x: np.ndarray, y: np.ndarray, batch: int, seed: int):
    """An endless tf.data stream of (uint8 images, labels) batches from arrays held in memory.

    Each pass is a seeded permutation cut into whole batches (the tail is dropped), and each batch is one
    vectorised gather: about 5x faster than shuffling and batching row by row, which on a small machine
    competes with training for the same cores.
    """
    import tensorflow as tf

    assert len(x) >= batch, f"{len(x)} rows cannot fill a batch of {batch}"
    images, labels = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    per_pass = len(x) // batch

    def one_pass(index: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(x), dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), index]))
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order[: per_pass * batch], [per_pass, batch]))

    ds = tf.data.Dataset.counter().flat_map(one_pass)
    ds = ds.map(lambda rows: (tf.gather(images, rows), tf.gather(labels, rows))).prefetch(tf.data.AUTOTUNE)
    # Declared endless: otherwise MultiWorkerMirroredStrategy all-reduces an "any worker out of data?" flag
    # on every next(), a third collective per step (18 vs 15 ms a 2-worker digits step).
    return ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


class ShardReader:
    """Reads the shard on a thread, started before TensorFlow is imported and the model is built: the read
    mostly waits on Ray Data's processes, so the two overlap instead of adding up at every start-up."""

    def __init__(self, shard) -> None:
        self._result: dict[str, object] = {}
        self._thread = threading.Thread(target=self._read, args=(shard,), name="genai-ray-shard-read", daemon=True)
        self._thread.start()

    def _read(self, shard) -> None:
        try:
            self._result["arrays"] = read_shard(shard)
        except BaseException as err:  # noqa: BLE001 - re-raised in the training thread by arrays()
            self._result["error"] = err

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        self._thread.join()
        if "error" in self._result:
            raise self._result["error"]
        return self._result["arrays"]


def stream(trainer, x: np.ndarray, y: np.ndarray, seed: int):
    """A distributed iterator over this worker's rows, held in memory."""
    return iter(trainer.distribute(lambda batch: make_dataset(x, y, batch, seed)))


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


def external_checkpoint(uri: str | None):
    """A checkpoint folder from another run (a Tune trial's winner) as a Ray checkpoint, or None."""
    if not uri:
        return None
    import ray.train

    fs, path = storage.resolve(uri)
    return ray.train.Checkpoint(path, filesystem=fs)


def report_to_train(metrics: dict, folder: str | None) -> None:
    """The loop's sink: every rank reports (a barrier); rank 0 hands over the checkpoint folder it filled."""
    import ray.train

    checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
    ray.train.report(metrics, checkpoint=checkpoint,  # Ray:
                     checkpoint_dir_name=f"checkpoint-epoch-{metrics['epoch']:05d}" if checkpoint else None)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point. ``loop_config`` = {"config": Config as JSON, "plan": RunPlan as dict}."""
    entered = time.time()
    cfg = Config.model_validate(loop_config["config"])
    plan = RunPlan(**{**loop_config["plan"], "image_shape": tuple(loop_config["plan"]["image_shape"])})
    import ray.train

    shard = ray.train.get_dataset_shard("train")  # Ray: this worker's share of the training split
    reader = ShardReader(shard)
    ctx = ray.train.get_context()  # Ray:
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    configure_tensorflow(cfg)
    quiet_worker_logs()
    strategy = make_strategy(world)  # the first TF op: collectives are configured here
    own = ray.train.get_checkpoint()  # Ray: resume after a failure or a re-run
    exploit = own is None and bool(plan.init_checkpoint)  # a PBT exploit: the perturbed rates win over the restored
    with local_folder(own or external_checkpoint(plan.init_checkpoint)) as folder:
        session = set_up(cfg, plan, strategy, rank, folder, exploit, loop_config["config"])
    if session.start >= cfg.train.epochs:  # a re-run of a finished run (the driver normally answers it without workers)
        if rank == 0:
            print(f"{plan.run_uri} already finished at epoch {session.start}; nothing to train", flush=True)
        return
    set_up_done = time.time()
    arrays = reader.arrays()
    session.startup.update({"startup/launch_s": entered - plan.launched_at, "startup/setup_s": set_up_done - entered,
                            "startup/shard_read_s": time.time() - set_up_done})  # the read's wait beyond the setup
    data = MemoryInput(arrays, cfg.train.seed, rank, None if cfg.train.cache_in_memory else lambda: read_shard(shard))
    faults = lambda epoch: maybe_fail(cfg.train, epoch, rank, world, plan.run_uri)  # noqa: E731 - test hook
    iterator = train(session, data, report_to_train, before_epoch=faults)
    _PARKED_ITERATOR[:] = [iterator]
