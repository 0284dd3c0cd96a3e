"""Stream a source into Parquet shards, then write the manifest last.

Memory is bounded by one shard per split (plus one source chunk), never by the dataset size. Each shard is
encoded in memory, hashed, and written as one object, so a reader can trust its sha256 in the manifest.
The holdout split is systematic sampling within each class, with a seeded offset per class: deterministic,
streaming and exactly stratified (each class holds out round(f * n_k) +- 1 images).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genai_ray import storage
from genai_ray.data.manifest import MANIFEST_NAME, Manifest, ShardInfo, Split, now_iso, write_manifest
from genai_ray.data.sources import Chunk, Source
from genai_ray.errors import UserError

ROW_GROUP_ROWS = 1024
DEFAULT_SHARD_ROWS = 8192


def image_table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
    """The on-disk schema: a fixed-shape uint8 tensor column and an int64 label column."""
    return pa.table({
        "image": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(images)),
        "label": pa.array(labels, pa.int64()),
    })


def encode_shard(images: np.ndarray, labels: np.ndarray) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(image_table(images, labels), sink, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    return sink.getvalue().to_pybytes()


class HoldoutSplitter:
    """Deterministic, streaming, per-class systematic holdout assignment."""

    def __init__(self, fraction: float, seed: int):
        self.fraction = fraction
        self.rng = np.random.default_rng(seed)
        self.seen: Counter[int] = Counter()
        self.offsets: dict[int, float] = {}

    def assign(self, labels: np.ndarray) -> np.ndarray:
        out = np.zeros(len(labels), bool)
        if self.fraction <= 0:
            return out
        for i, label in enumerate(labels.tolist()):
            if label not in self.offsets:
                self.offsets[label] = float(self.rng.uniform())
            k = self.seen[label]
            off = self.offsets[label]
            out[i] = np.floor((k + 1) * self.fraction + off) > np.floor(k * self.fraction + off)
            self.seen[label] = k + 1
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


class Progress:
    """Counts and rates on stderr, at most a few lines a second."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done = total, what, 0
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= 0.5 or self.done >= self.total:
            rate = self.done / max(now - self.start, 1e-9)
            print(f"\r{self.what}: {self.done}/{self.total} images ({rate:,.0f} images/s)", end="",
                  file=sys.stderr, flush=True)
            self.last = now

    def close(self) -> None:
        print(file=sys.stderr, flush=True)


def prepare(source: Source, out_uri: str, *, name: str, holdout: float = 0.1, seed: int = 0,
            shards: int | None = None, shard_rows: int | None = None, overwrite: bool = False,
            progress: bool = True, provenance: dict | None = None) -> Manifest:
    """Write ``source`` as a dataset at ``out_uri``. Returns the manifest (written last).

    ``provenance`` marks the dataset synthetic and records the model that made it.
    """
    if not 0.0 <= holdout < 1.0:
        raise UserError(f"--holdout {holdout}: must be in [0, 1)")
    if shards is not None and shard_rows is not None:
        raise UserError("pass either --shards or --shard-size, not both")
    if shards is not None and shards < 1 or shard_rows is not None and shard_rows < 1:
        raise UserError("--shards and --shard-size must be at least 1")
    storage.check_writable(out_uri)
    manifest_uri = storage.join(out_uri, MANIFEST_NAME)
    if storage.list_dir(out_uri):
        if not overwrite:
            raise UserError(f"{out_uri} already holds data; pass --overwrite to replace it or choose another --out")
        storage.delete(manifest_uri)  # first, so an interrupted overwrite never looks complete
        storage.delete(out_uri)
    expected_train = round(source.count * (1 - holdout))
    if shard_rows is None:
        shard_rows = -(-max(expected_train, 1) // shards) if shards else DEFAULT_SHARD_ROWS
    splitter = HoldoutSplitter(holdout, seed)
    writers = {s: ShardWriter(out_uri, s, shard_rows) for s in ("train", "holdout")}
    label_counts: Counter[int] = Counter()
    meter = Progress(source.count, f"preparing {name}") if progress else None
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
    return manifest


def _check_chunk(chunk: Chunk, source: Source) -> None:
    assert chunk.images.dtype == np.uint8, f"source {source.kind} yielded {chunk.images.dtype}, not uint8"
    if chunk.images.shape[1:] != tuple(source.shape):
        raise UserError(
            f"{source.description.get('path', source.kind)}: an image of shape {chunk.images.shape[1:]} does not "
            f"match {tuple(source.shape)}; pass --image-size to resize"
        )
