"""Stream a source into Parquet shards, then write the manifest last.

Memory is bounded by one shard per split (plus one source chunk), never by the dataset size: the default
shard holds at most 8,192 images and at most 64 MiB of pixels. Each shard is encoded in memory, hashed, and
written as one object, so a reader can trust its sha256 in the manifest. The holdout split is systematic
sampling within each class, with a seeded offset per class: deterministic, streaming and stratified (each
class holds out f * n_k images, rounded up or down).

A failed or interrupted prepare deletes the shards it wrote, and an overwrite deletes the old manifest
first, so no half-written dataset ever looks complete.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genai_ray import storage
from genai_ray.data.manifest import FEATURES_DIR, MANIFEST_NAME, Manifest, ShardInfo, Split, now_iso, write_manifest
from genai_ray.data.sources import Chunk, Source
from genai_ray.errors import UserError
from genai_ray.names import check_name

ROW_GROUP_ROWS = 1024
DEFAULT_SHARD_ROWS = 8192
DEFAULT_SHARD_BYTES = 64 << 20  # uncompressed pixels per default shard, so large images make smaller shards
# What a dataset folder may hold (and the evaluator's feature cache, stale once the shards change);
# --overwrite refuses to delete a folder with anything else in it.
DATASET_FILE = re.compile(rf"(manifest\.json|(train|holdout)-\d{{5}}\.parquet)(\.tmp-[0-9a-f]{{8}})?|{FEATURES_DIR}")


def image_table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
    """The on-disk schema: a fixed-shape uint8 tensor column and an int64 label column."""
    return pa.table({
        "image": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(images)),
        "label": pa.array(labels, pa.int64()),
    })


def encode_shard(images: np.ndarray, labels: np.ndarray) -> bytes:
    sink = pa.BufferOutputStream()
    # No dictionary for pixels: it cannot shrink uint8 values and triples the encoding time.
    pq.write_table(image_table(images, labels), sink, row_group_size=ROW_GROUP_ROWS, compression="zstd",
                   use_dictionary=["label"])
    return sink.getvalue().to_pybytes()


class HoldoutSplitter:
    """Deterministic, streaming, per-class systematic holdout assignment.

    Within each class, the k-th image is held out when floor((k + 1) * f + u) > floor(k * f + u), where u
    is a seeded per-class offset. Every class therefore holds out f * n_k images rounded up or down, spread
    evenly through the source order.
    """

    def __init__(self, fraction: float, seed: int):
        self.fraction = fraction
        self.rng = np.random.default_rng(seed)
        self.seen: Counter[int] = Counter()
        self.offsets: dict[int, float] = {}

    def assign(self, labels: np.ndarray) -> np.ndarray:
        """A boolean mask over ``labels``: True for rows that go to the holdout split."""
        out = np.zeros(len(labels), bool)
        if self.fraction <= 0:
            return out
        _, first = np.unique(labels, return_index=True)
        for label in labels[np.sort(first)].tolist():  # offsets are drawn in order of first appearance
            rows = np.flatnonzero(labels == label)
            if label not in self.offsets:
                self.offsets[label] = float(self.rng.uniform())
            k = self.seen[label] + np.arange(len(rows))
            off = self.offsets[label]
            out[rows] = np.floor((k + 1) * self.fraction + off) > np.floor(k * self.fraction + off)
            self.seen[label] += len(rows)
        return out


@dataclass
class ShardWriter:
    """Buffers rows of one split and flushes full shards to the store."""

    dataset_uri: str
    split: Split
    shard_rows: int
    shards: list[ShardInfo] = field(default_factory=list)
    _images: list[np.ndarray] = field(default_factory=list)
    _labels: list[np.ndarray] = field(default_factory=list)
    _buffered: int = 0

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        start = 0
        while start < len(images):
            take = min(self.shard_rows - self._buffered, len(images) - start)
            self._images.append(images[start : start + take])
            self._labels.append(labels[start : start + take])
            self._buffered += take
            start += take
            if self._buffered == self.shard_rows:
                self.flush()

    def flush(self) -> None:
        if not self._buffered:
            return
        images, labels = np.concatenate(self._images), np.concatenate(self._labels)
        self._images, self._labels, self._buffered = [], [], 0
        data = encode_shard(images, labels)
        name = f"{self.split}-{len(self.shards):05d}.parquet"
        storage.write_bytes(storage.join(self.dataset_uri, name), data)
        self.shards.append(ShardInfo(path=name, split=self.split, rows=len(images), bytes=len(data),
                                     sha256=storage.sha256_bytes(data)))

    def discard(self) -> None:
        """Delete the shards written so far (after a failure)."""
        for shard in self.shards:
            storage.delete(storage.join(self.dataset_uri, shard.path))
        self.shards, self._images, self._labels, self._buffered = [], [], [], 0


class Progress:
    """Counts and rates on stderr: a live line on a terminal, a line every few seconds in a log."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done = total, what, 0
        self.start = self.last = time.monotonic()
        self.live = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= (0.5 if self.live else 5.0) or self.done >= self.total:
            self.last = now
            self._print(now)

    def _print(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        left = max(self.total - self.done, 0) / rate if rate > 0 else float("inf")
        eta = f", ETA {fmt_seconds(left)}" if self.done < self.total else f", {fmt_seconds(now - self.start)}"
        line = (f"{self.what}: {self.done:,}/{self.total:,} images ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:,.0f} images/s{eta}")
        print(f"\r{line}" if self.live else line, end="" if self.live else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            print(file=sys.stderr, flush=True)


def fmt_seconds(seconds: float) -> str:
    """12s, 3m05s, 2h07m: short enough for a progress line."""
    if seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def default_shard_rows(shape: tuple[int, int, int]) -> int:
    """8,192 images per shard, fewer when that would exceed DEFAULT_SHARD_BYTES of pixels."""
    return max(1, min(DEFAULT_SHARD_ROWS, DEFAULT_SHARD_BYTES // int(np.prod(shape))))


def check_options(holdout: float, shards: int | None, shard_rows: int | None) -> None:
    """Validate prepare's options; cheap, so the CLI calls it before opening a source."""
    if not 0.0 <= holdout < 1.0:
        raise UserError(f"--holdout {holdout}: must be in [0, 1)")
    if shards is not None and shard_rows is not None:
        raise UserError("pass either --shards or --shard-size, not both")
    if shards is not None and shards < 1 or shard_rows is not None and shard_rows < 1:
        raise UserError("--shards and --shard-size must be at least 1")


def prepare(source: Source, out_uri: str, *, name: str, holdout: float = 0.1, seed: int = 0,
            shards: int | None = None, shard_rows: int | None = None, overwrite: bool = False,
            progress: bool = True, provenance: dict | None = None) -> Manifest:
    """Write ``source`` as a dataset at ``out_uri``. Returns the manifest (written last).

    ``shards`` asks for at most that many training shards; ``shard_rows`` fixes the rows per shard.
    ``provenance`` marks the dataset synthetic and records the model that made it.
    """
    check_options(holdout, shards, shard_rows)
    check_name(name, "dataset name")
    storage.check_writable(out_uri)
    clear_output(out_uri, overwrite)
    if shards:
        # Per-class rounding can put up to one extra image per class into train; leave room for it.
        most_train = round(source.count * (1 - holdout)) + max(len(source.class_names or []), 1)
        shard_rows = -(-most_train // shards)
    shard_rows = shard_rows or default_shard_rows(source.shape)
    writers = {s: ShardWriter(out_uri, s, shard_rows) for s in ("train", "holdout")}
    try:
        label_counts = _stream(source, writers, HoldoutSplitter(holdout, seed),
                               Progress(source.count, f"preparing {name}") if progress else None)
        train_rows = sum(s.rows for s in writers["train"].shards)
        holdout_rows = sum(s.rows for s in writers["holdout"].shards)
        if train_rows == 0:
            raise UserError(f"{name}: the training split is empty; lower --holdout or add images")
        manifest = Manifest(
            name=name, shape=source.shape, channels=source.shape[2], count=train_rows + holdout_rows,
            train_count=train_rows, holdout_count=holdout_rows, holdout_fraction=holdout,
            class_names=source.class_names,
            label_counts={str(k): v for k, v in sorted(label_counts.items())} if source.class_names else {},
            seed=seed, shards=writers["train"].shards + writers["holdout"].shards, source=source.description,
            created_at=now_iso(), synthetic=provenance is not None, provenance=provenance,
        )
        write_manifest(out_uri, manifest)
    except BaseException:
        for writer in writers.values():
            discard_quietly(writer)
        raise
    return manifest


def _stream(source: Source, writers: dict[str, ShardWriter], splitter: HoldoutSplitter,
            meter: Progress | None) -> Counter[int]:
    """Route every chunk to its split's writer; returns the train split's label counts."""
    label_counts: Counter[int] = Counter()
    for chunk in source.chunks():
        _check_chunk(chunk, source)
        held = splitter.assign(chunk.labels)
        writers["train"].add(chunk.images[~held], chunk.labels[~held])
        writers["holdout"].add(chunk.images[held], chunk.labels[held])
        label_counts.update(chunk.labels[~held].tolist())
        if meter:
            meter.update(len(chunk.images))
    for writer in writers.values():
        writer.flush()
    if meter:
        meter.close()
    return label_counts


def clear_output(out_uri: str, overwrite: bool) -> None:
    """Refuse to touch existing data unless asked; with --overwrite, make the old dataset incomplete first."""
    names = storage.list_dir(out_uri)
    if not names:
        return
    if not overwrite:
        raise UserError(f"{out_uri} already holds data; pass --overwrite to replace it or choose another --out")
    strangers = [n for n in names if not DATASET_FILE.fullmatch(n)]
    if strangers:
        raise UserError(f"{out_uri} holds {strangers[0]!r}, which is not part of a genai-ray dataset; "
                        "refusing to delete it with --overwrite; choose another --out")
    storage.delete(storage.join(out_uri, MANIFEST_NAME))  # first, so an interrupted overwrite never looks complete
    for n in names:
        storage.delete(storage.join(out_uri, n))


def discard_quietly(writer: ShardWriter) -> None:
    """Best-effort cleanup after a failure; the original error matters more than a cleanup error."""
    try:
        writer.discard()
    except UserError as err:
        print(f"warning: could not delete partial shards under {writer.dataset_uri}: {err}", file=sys.stderr)


def _check_chunk(chunk: Chunk, source: Source) -> None:
    assert chunk.images.dtype == np.uint8, f"source {source.kind} yielded {chunk.images.dtype}, not uint8"
    if chunk.images.shape[1:] != tuple(source.shape):
        raise UserError(
            f"{source.description.get('path', source.kind)}: an image of shape {chunk.images.shape[1:]} does not "
            f"match {tuple(source.shape)}; pass --image-size to resize"
        )
