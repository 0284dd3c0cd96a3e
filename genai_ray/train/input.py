"""The training input: each worker's batches, either from its shard held in memory or streamed from Parquet.

Two paths feed the same ``tf.data`` pipeline of (uint8 images, int64 labels) batches:

- **memory**: the worker reads its Ray Data shard once (``streaming_split(equal=True)``, large batches) and
  shuffles it in memory. Fastest per step; costs the whole shard of memory and a read before the first step.
- **stream**: the worker reads its own Parquet row groups with pyarrow, batch by batch, through a local
  shuffle buffer. Memory is the shuffle buffer plus a few row groups in flight, whatever the dataset's size.

Why stream mode does not iterate a Ray Data shard: ``streaming_split`` hands blocks to ranks dynamically, so
which rows a rank sees, and in what order, changes from run to run; and on a small machine Ray Data's read
tasks compete with the training workers for CPUs. Stream mode instead assigns row groups to ranks with a
seeded per-epoch permutation that every rank computes alike, so the order is a pure function of
(train.seed, epoch, rank, workers): the same seed gives the same batches. Data epochs are whole passes of the
training split and the loop's ticks are cut from that sequence, so a run resumed at any tick sees exactly the
batches an uninterrupted run would have. Memory mode reseeds its order at the resumed tick instead.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from genai_ray import storage
from genai_ray.errors import IntegrityError, UserError

# TensorFlow is imported inside the functions that build a worker's pipeline: Ray Train's controller loads this
# module when it unpickles the worker's loop (train/worker.py), and TensorFlow there cost every run about 3 s of
# start-up.

READ_BATCH = 4096  # rows per Ray Data batch when loading a shard into memory
READ_AHEAD = 2  # stream mode: row groups read ahead of the one being shuffled (overlaps storage with steps)
PREFETCH = 2  # batches tf.data prepares ahead of the step
MEMORY_SHARE = 0.25  # data_mode=auto: a worker may hold its shard when it needs at most this share of its memory
SHARD_COPIES = 2  # an in-memory shard is held twice at its peak: the numpy arrays and TensorFlow's copy

DataMode = str  # "memory" | "stream": what a run resolved train.data_mode ("auto" included) to


# ---- memory ---------------------------------------------------------------------------------------------------

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
    vectorised gather: much cheaper than shuffling and batching row by row, which on a small machine
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
    ds = ds.map(lambda rows: (tf.gather(images, rows), tf.gather(labels, rows))).prefetch(PREFETCH)
    # Declared endless: otherwise MultiWorkerMirroredStrategy all-reduces an "any worker out of data?" flag
    # on every next(), a third collective per step that slows a small model's step noticeably.
    return without_autotune(ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)))


def without_autotune(ds):
    """``ds`` without tf.data's autotuning thread. Deleting an iterator waits for that thread's next wake-up,
    which grows with the iterator's age: seconds at the end of a run, during which a campaign's slot sits idle
    before its next trial (docs/tuning.md). Both pipelines are short fixed chains with nothing to tune."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


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


def memory_iterator(trainer, x: np.ndarray, y: np.ndarray, seed: int):
    """A distributed iterator over this worker's rows, held in memory."""
    return iter(trainer.distribute(lambda batch: make_dataset(x, y, batch, seed)))


class MemoryInput:
    """Rows held in memory as arrays: one endless seeded stream, reused across epochs (the loop's input).

    With ``reload`` (``train.cache_in_memory=false``), every later epoch reads the rows again and starts a new
    stream from them. A run resumed at tick t+1 seeds its stream from t, so it does not replay the order an
    uninterrupted run had, though it is drawn the same way (stream mode does replay it: docs/data.md).
    """

    def __init__(self, arrays: tuple[np.ndarray, np.ndarray], seed: int, rank: int,
                 reload: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self._arrays, self._reload = arrays, reload
        self._seed, self._rank = seed, rank
        self._iterator = None

    def _stream(self, trainer, arrays: tuple[np.ndarray, np.ndarray], salt: int):
        return memory_iterator(trainer, *arrays, self._seed * 1000 + self._rank + 7919 * salt)

    def iterator(self, trainer, epoch: int):
        if self._iterator is None:
            self._iterator = self._stream(trainer, self._arrays, epoch - 1)
        elif self._reload is not None:
            self._iterator = self._stream(trainer, self._reload(), epoch)
        return self._iterator


# ---- stream ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group of the training split: the unit stream mode assigns to ranks."""

    uri: str
    index: int
    rows: int


def row_groups(shard_uris: list[str]) -> list[RowGroup]:
    """Every row group of these shards, in shard order, from their Parquet footers (read on the driver)."""
    out = []
    for uri in shard_uris:
        fs, path = storage.resolve(uri)
        try:
            meta = pq.ParquetFile(path, filesystem=fs).metadata
        except (pa.ArrowInvalid, OSError) as err:
            raise IntegrityError(f"{uri}: shard is unreadable or corrupt ({str(err)[:120]}); re-run data prepare") \
                from None
        out.extend(RowGroup(uri, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups))
    return out


def epoch_slices(groups: list[RowGroup], seed: int, epoch: int, rank: int, world: int,
                 rows_per_rank: int) -> list[tuple[int, int, int]]:
    """Rank ``rank``'s rows in ``epoch`` as (row group, first row, end row) slices, in reading order.

    Every rank permutes the row groups with the same (seed, epoch) and lays them end to end; rank r takes
    rows [r * rows_per_rank, (r + 1) * rows_per_rank) of that sequence. So all ranks get exactly
    ``rows_per_rank`` rows, no row goes to two ranks, and the short tail (fewer than one global batch of rows
    at the end of the permuted sequence) is skipped this epoch. The permutation changes every epoch, so a
    different tail is skipped each time.
    """
    assert rows_per_rank * world <= sum(g.rows for g in groups), "the driver sized rows_per_rank from the split"
    order = np.random.default_rng([seed, epoch]).permutation(len(groups))
    lo, hi = rank * rows_per_rank, (rank + 1) * rows_per_rank
    out, at = [], 0
    for g in order.tolist():
        begin, end = at, at + groups[g].rows
        if end > lo and begin < hi:
            out.append((g, max(lo, begin) - begin, min(hi, end) - begin))
        at = end
        if at >= hi:
            break
    return out


class GroupReader:
    """Reads row groups in a given order on one background thread, ``READ_AHEAD`` ahead of the consumer.

    pyarrow releases the GIL while it fetches and decompresses, so reading overlaps with training steps.
    Open files are kept per shard: on S3 each open costs a request for the footer.
    """

    def __init__(self, groups: list[RowGroup]) -> None:
        self._groups = groups
        self._files: dict[str, object] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genai-ray-stream-read")

    def _read(self, g: int, begin: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        group = self._groups[g]
        try:
            if group.uri not in self._files:
                fs, path = storage.resolve(group.uri)
                self._files[group.uri] = pq.ParquetFile(path, filesystem=fs)
            table = self._files[group.uri].read_row_group(group.index, columns=["image", "label"])
        except (pa.ArrowInvalid, OSError, UserError) as err:
            raise IntegrityError(f"{group.uri}: shard became unreadable mid-stream (row group {group.index}: "
                                 f"{str(err)[:120]}); check the dataset and re-run data prepare") from None
        table = table.slice(begin, end - begin)
        images = table.column("image").combine_chunks().to_numpy_ndarray()
        return images, table.column("label").to_numpy()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def read(self, slices: list[tuple[int, int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The slices' rows, chunk by chunk, in order."""
        pending: deque[Future] = deque()
        todo = iter(slices)
        for s in todo:
            pending.append(self._pool.submit(self._read, *s))
            if len(pending) > READ_AHEAD:
                break
        while pending:
            chunk = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(self._pool.submit(self._read, *nxt))
            yield chunk


def shuffled_batches(chunks: Iterator[tuple[np.ndarray, np.ndarray]], total: int, batch: int, buffer_rows: int,
                     rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``total // batch`` batches drawn through a shuffle buffer of ``max(buffer_rows, batch)`` rows.

    A batched version of tf.data's shuffle buffer: each batch is ``batch`` rows picked at random from the
    buffer, and the freed slots are refilled with the next incoming rows; once the input runs dry the buffer
    drains. Memory: the buffer, plus the chunk being consumed.
    """
    capacity = min(max(buffer_rows, batch), total)
    pool_x: np.ndarray | None = None
    pool_y: np.ndarray | None = None
    fill = 0
    cx, cy, cat = None, None, 0  # the incoming chunk and the next row to take from it

    def take(n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to n incoming rows (fewer only when the input is exhausted)."""
        nonlocal cx, cy, cat
        xs, ys, got = [], [], 0
        while got < n:
            if cx is None or cat >= len(cx):
                nxt = next(chunks, None)
                if nxt is None:
                    break
                (cx, cy), cat = nxt, 0
            k = min(n - got, len(cx) - cat)
            xs.append(cx[cat : cat + k])
            ys.append(cy[cat : cat + k])
            cat += k
            got += k
        if not xs:
            return np.empty((0,)), np.empty((0,))
        return (np.concatenate(xs), np.concatenate(ys)) if len(xs) > 1 else (xs[0], ys[0])

    x0, y0 = take(capacity)
    pool_x, pool_y = np.array(x0), np.array(y0)  # owned copies: the buffer's slots get overwritten
    fill = len(pool_x)
    for _ in range(total // batch):
        picked = rng.choice(fill, batch, replace=False)
        out = pool_x[picked], pool_y[picked]  # fancy indexing copies
        nx, ny = take(batch)
        if len(nx):
            pool_x[picked[: len(nx)]], pool_y[picked[: len(nx)]] = nx, ny
        if len(nx) < batch:  # draining: move rows from the end into the holes that stay empty
            holes = np.sort(picked[len(nx):])
            new_fill = fill - len(holes)
            low = holes[holes < new_fill]
            movers = np.setdiff1d(np.arange(new_fill, fill), holes, assume_unique=True)
            pool_x[low], pool_y[low] = pool_x[movers], pool_y[movers]
            fill = new_fill
        yield out


@dataclass
class StreamSpec:
    """What a worker needs to stream its rows: decided once on the driver, identical on every rank."""

    groups: list[RowGroup]
    steps_per_epoch: int
    shuffle_rows: int

    def to_json(self) -> dict:
        return {"groups": [[g.uri, g.index, g.rows] for g in self.groups], "steps_per_epoch": self.steps_per_epoch,
                "shuffle_rows": self.shuffle_rows}

    @classmethod
    def from_json(cls, data: dict) -> StreamSpec:
        return cls([RowGroup(*g) for g in data["groups"]], data["steps_per_epoch"], data["shuffle_rows"])


def epoch_batches(spec: StreamSpec, seed: int, epoch: int, rank: int, world: int,
                  batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rank ``rank``'s ``spec.steps_per_epoch`` batches of ``epoch``: a pure function of its arguments."""
    rows = spec.steps_per_epoch * batch
    slices = epoch_slices(spec.groups, seed, epoch, rank, world, rows)
    reader = GroupReader(spec.groups)
    rng = np.random.default_rng([seed, epoch, rank, 1])
    try:
        yield from shuffled_batches(reader.read(slices), rows, batch, spec.shuffle_rows, rng)
    finally:
        reader.close()


def stream_dataset(spec: StreamSpec, image_shape: tuple[int, int, int], seed: int, first_epoch: int, rank: int,
                   world: int, batch: int, skip: int = 0):
    """An endless tf.data stream of this rank's batches, epoch ``first_epoch`` onwards (its first ``skip``
    batches left out), epoch after epoch.

    One dataset (and one distributed iterator) for the whole attempt, so the next epoch's first batches are
    read while the current epoch ends. Declared endless, as the memory path is (see ``make_dataset``).
    """
    import tensorflow as tf

    signature = (tf.TensorSpec((batch, *image_shape), tf.uint8), tf.TensorSpec((batch,), tf.int64))

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_generator(
            lambda e: epoch_batches(spec, seed, int(e), rank, world, batch), output_signature=signature,
            args=(epoch,))

    ds = tf.data.Dataset.counter(first_epoch).flat_map(one_epoch).skip(skip).prefetch(PREFETCH)
    return without_autotune(ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)))


class StreamInput:
    """The stream path behind the loop's ``iterator(trainer, tick)`` seam: one iterator from the attempt's
    first tick on. Batches follow data epochs (whole passes of ``spec.steps_per_epoch`` steps, each depending
    only on (seed, epoch, rank, workers)); a loop tick of ``steps_per_tick`` steps (about 1 kimg) is cut from
    that sequence, so an attempt starting at any tick continues exactly where an uninterrupted run would be."""

    def __init__(self, spec: StreamSpec, image_shape: tuple[int, int, int], seed: int, rank: int,
                 world: int, steps_per_tick: int | None = None) -> None:
        self._spec, self._shape, self._seed, self._rank, self._world = spec, image_shape, seed, rank, world
        self._steps_per_tick = steps_per_tick or spec.steps_per_epoch
        self._iterator = None
        self._next_tick: int | None = None

    def start(self, tick: int) -> tuple[int, int]:
        """(data epoch, batches of it already used) at the start of loop tick ``tick`` (1-based)."""
        done = (tick - 1) * self._steps_per_tick
        return done // self._spec.steps_per_epoch + 1, done % self._spec.steps_per_epoch

    def iterator(self, trainer, tick: int):
        if self._iterator is None:
            epoch, skip = self.start(tick)
            self._iterator = iter(trainer.distribute(lambda batch: stream_dataset(
                self._spec, self._shape, self._seed, epoch, self._rank, self._world, batch, skip)))
        else:
            assert tick == self._next_tick, f"stream ticks run in order: expected {self._next_tick}, got {tick}"
        self._next_tick = tick + 1
        return self._iterator


# ---- choosing the mode (driver) -------------------------------------------------------------------------------

def shard_bytes(train_count: int, image_shape: tuple[int, int, int], workers: int) -> int:
    """The memory one worker's in-memory shard takes at its peak: its pixels and labels, SHARD_COPIES times."""
    rows = math.ceil(train_count / workers)
    return SHARD_COPIES * rows * (math.prod(image_shape) + 8)


def worker_memory_budget(budget_mib: int, workers: int, cpus_per_worker: float) -> tuple[int, str]:
    """(bytes a worker may spend on its shard, how that was worked out).

    ``budget_mib`` > 0 is taken as given. Otherwise: MEMORY_SHARE of the smallest alive node's Ray memory
    (what Ray lets tasks and actors use there), split over the training workers that node can host by CPUs.
    """
    if budget_mib:
        return budget_mib << 20, f"train.memory_budget_mib={budget_mib}"
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    if not nodes:
        return 0, "no alive node with CPUs"
    node = min(nodes, key=lambda r: r.get("memory", 0.0))
    per_node = max(1, min(workers, int(node.get("CPU", 1) // max(cpus_per_worker, 1e-9)) or 1))
    budget = int(MEMORY_SHARE * node.get("memory", 0.0) / per_node)
    return budget, (f"{MEMORY_SHARE:.0%} of a node's {gib(node.get('memory', 0.0))} Ray memory over the "
                    f"{per_node} worker(s) it hosts")


def gib(n: float) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def choose_mode(requested: str, need: int, budget: int, why_budget: str) -> tuple[DataMode, str]:
    """Resolve train.data_mode to memory or stream; refuse ``memory`` over budget. Returns (mode, why)."""
    fits = need <= budget
    sizes = f"each worker's shard needs {gib(need)} in memory, its budget is {gib(budget)} ({why_budget})"
    if requested == "stream":
        return "stream", "train.data_mode=stream"
    if requested == "memory":
        if not fits:
            raise UserError(f"train.data_mode=memory: {sizes}; use train.data_mode=stream (or auto), more workers, "
                            "or raise train.memory_budget_mib")
        return "memory", "train.data_mode=memory"
    return ("memory", f"auto: {sizes}") if fits else ("stream", f"auto: {sizes}, so it streams")
