"""``data prepare`` for images where they are: a folder (local or ``s3://``) or a Parquet table of encoded images.

The driver lists the source once (class names, count, the first image's size and mode) and then runs a
streaming Ray Data pipeline: ``read_binary_files`` or ``read_parquet`` reads the bytes where they are, and the
decode stage (``genai_ray/data/decode.py``) decodes, converts and resizes them in parallel, on the private local
Ray or on a cluster. The driver takes the decoded batches as they stream in and writes genai-ray's own shards
and, last, the manifest, exactly as the single-process path does (``genai_ray/data/prepare.py``).

What bounds memory: Ray Data's backpressure holds a few blocks per operator in the object store, the driver
holds at most one shard per split, and each decode task one batch (at most DECODE_BATCH images and about
DECODE_TASK_BYTES of encoded bytes). The listing (one path per image) is the only thing on the driver that
grows with the source. What may differ between runs at different parallelism: the order of images within and
across shards, and so the shards' bytes and checksums; never which images are in which split, nor their labels
or pixels.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from genai_ray import ray_runtime, storage
from genai_ray.data import decode, image_table
from genai_ray.data.manifest import Manifest, now_iso, write_manifest
from genai_ray.data.prepare import (
    Progress,
    ShardWriter,
    check_options,
    clear_output,
    default_shard_rows,
    discard_quietly,
)
from genai_ray.data.sources import IMAGE_SUFFIXES
from genai_ray.errors import UserError

# Ray is imported inside the functions that need it: the CLI loads this module at start-up, and `genai-ray --help`
# and config errors stay fast.

DECODE_BATCH = 512  # images per decode task at most: Ray Data leaves gaps between short tasks, so a task should
# run for a good fraction of a second (512 small JPEGs take about 0.2 s)
DECODE_TASK_BYTES = 32 << 20  # encoded bytes per decode task at most, so that large photos make smaller tasks
SKIPPED_LISTED = 100  # skipped images named in the manifest and on stderr, at most


@dataclass
class StoreSource:
    """A folder or table of encoded images, listed but not read."""

    kind: str  # "folder" or "table"
    uri: str
    count: int
    spec: decode.DecodeSpec
    class_names: list[str] | None
    image_column: str | None = None
    label_column: str | None = None
    first: str = ""  # the image that fixed the size and mode, named in a mixed-size error
    mean_bytes: float = 0.0  # an encoded image's mean size, which sizes the decode tasks
    paths: list[str] = field(default_factory=list, repr=False)  # what Ray Data reads: the folder, or the tables

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.spec.height, self.spec.width, self.spec.channels

    @property
    def description(self) -> dict:
        desc = {"kind": self.kind, "uri": self.uri, "reader": "ray-data"}
        if self.kind == "table":
            desc |= {"image_column": self.image_column, "label_column": self.label_column}
        return desc


@dataclass
class Report:
    """What the pipeline saw besides the images: where they were decoded and what was skipped."""

    nodes: Counter[str] = field(default_factory=Counter)  # Ray node id -> images decoded there
    skipped: list[str] = field(default_factory=list)  # the first SKIPPED_LISTED unreadable images
    skipped_count: int = 0
    seconds: float = 0.0


def is_store_source(spec: str) -> bool:
    """An ``s3://`` URI, a local folder, or a local ``.parquet`` file: sources this module reads."""
    if storage.is_s3(spec):
        return True
    path = Path(spec.removeprefix("file://")).expanduser()
    return path.is_dir() or path.is_file() and path.suffix == ".parquet"


def open_store_source(uri: str, *, image_size: int | None = None, crop: bool = False, seed: int = 0,
                      holdout: float = 0.1, image_column: str | None = None,
                      label_column: str | None = None) -> StoreSource:
    """List ``uri`` and decide its kind, labels, count and output shape; reads one image, no more."""
    if image_size is not None and not 4 <= image_size <= 1024:
        raise UserError(f"--image-size {image_size}: must be between 4 and 1024 pixels")
    if crop and image_size is None:
        raise UserError("--crop centre-crops images before --image-size resizes them; pass --image-size too")
    storage.check_bucket(uri)
    fs, base = storage.resolve(uri)
    if storage.size(uri) is not None:  # one file: a table, or nothing this module reads
        if not base.endswith(".parquet"):
            raise UserError(f"{uri}: a single file that is not a .parquet table; point at a folder of images")
        infos, images, tables = [], [], [base]
    else:
        infos = [i for i in storage.walk(uri) if not decode.is_hidden(i.path[len(base):].lstrip("/"))]
        image_infos = [i for i in infos if Path(i.path).suffix.lower() in IMAGE_SUFFIXES]
        images = [i.path for i in image_infos]
        tables = sorted(i.path for i in infos if i.path.endswith(".parquet"))
    options = dict(image_size=image_size, crop=crop, seed=seed, holdout=holdout)
    if (image_column or label_column) and not tables:
        raise UserError("--image-column and --label-column apply to Parquet tables only")
    if images:
        mean_bytes = sum(i.size for i in image_infos) / len(image_infos)
        return _folder(uri, fs, base, sorted(images), mean_bytes=mean_bytes, **options)
    if tables:
        return _table(uri, fs, tables, image_column, label_column, **options)
    if not infos:
        raise UserError(f"{uri}: nothing there (no such folder or prefix); check the path")
    raise UserError(f"{uri}: holds no .png/.jpg/.jpeg images and no .parquet tables; point at a folder of images "
                    "or a table of encoded images")


def _first_image(data: bytes, where: str, image_size: int | None) -> tuple[str, int, int]:
    """The mode every image is converted to (grey when the first one is) and the output (height, width)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = "L" if im.mode in ("L", "1", "I", "I;16", "LA") else "RGB"
            width, height = im.size
    except decode.BAD_IMAGE as err:
        raise UserError(f"{where}: unreadable or corrupt image ({type(err).__name__}); remove or replace it") from None
    return (mode, image_size, image_size) if image_size else (mode, height, width)


def _folder(uri: str, fs: pafs.FileSystem, base: str, images: list[str], *, mean_bytes: float,
            image_size: int | None, crop: bool, seed: int, holdout: float) -> StoreSource:
    relative = [p[len(base):].lstrip("/") for p in images]
    top = [r for r in relative if "/" not in r]
    if top and len(top) != len(relative):
        raise UserError(f"{uri}: {top[0]} sits beside class subfolders; move top-level images into a subfolder "
                        "(one per label) or flatten the folder for an unlabelled dataset")
    class_names = None if top else sorted({r.split("/", 1)[0] for r in relative})
    first = _scheme(uri) + images[0]
    mode, height, width = _first_image(storage.read_bytes(first), first, image_size)
    spec = decode.DecodeSpec(height, width, mode, image_size, crop, seed, holdout, base=base,
                             class_index={c: i for i, c in enumerate(class_names or [])})
    return StoreSource("folder", uri, len(images), spec, class_names, first=relative[0], paths=[base],
                       mean_bytes=mean_bytes)


def _table(uri: str, fs: pafs.FileSystem, tables: list[str], image_column: str | None, label_column: str | None,
           *, image_size: int | None, crop: bool, seed: int, holdout: float) -> StoreSource:
    try:
        with fs.open_input_file(tables[0]) as f:
            schema = pq.read_schema(f)
        image_col = image_table.pick_image_column(uri, schema, image_column)
        label_col = image_table.pick_label_column(uri, schema, label_column)
        count, image_bytes = 0, 0
        for path in tables:
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
            count += meta.num_rows
            image_bytes += _column_bytes(meta, image_col)
        class_names = image_table.scan_labels(uri, fs, tables, label_col) if label_col else None
        with fs.open_input_file(tables[0]) as f:
            head = next(pq.ParquetFile(f).iter_batches(batch_size=1, columns=[image_col]), None)
    except pa.ArrowInvalid as err:
        raise UserError(f"{uri}: not a readable Parquet table ({str(err).splitlines()[0][:160]})") from None
    if not count or head is None:
        raise UserError(f"{uri}: the table holds no rows")
    cell = head.column(0)[0].as_py()
    data = cell["bytes"] if isinstance(cell, dict) else cell
    mode, height, width = _first_image(data or b"", f"{uri} (first row)", image_size)
    spec = decode.DecodeSpec(height, width, mode, image_size, crop, seed, holdout,
                             class_index={c: i for i, c in enumerate(class_names or [])})
    return StoreSource("table", uri, count, spec, class_names, image_col, label_col, first="its first image",
                       paths=tables, mean_bytes=image_bytes / count)


def _column_bytes(meta: pq.FileMetaData, column: str) -> int:
    """A column's uncompressed bytes in a Parquet file (a struct column's leaves included), from its footer."""
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema.split(".", 1)[0] == column:
                total += chunk.total_uncompressed_size
    return total


def _scheme(uri: str) -> str:
    return "s3://" if storage.is_s3(uri) else ""


def decode_batch_rows(count: int, mean_bytes: float = 0.0) -> int:
    """Images per decode task: DECODE_BATCH, or fewer where they would hold over DECODE_TASK_BYTES of encoded
    images, and fewer for a small source so that every CPU in the cluster gets two tasks. Ray Data sizes reads by
    bytes and bundles rows up to the batch size, which would otherwise put a small folder into one task on one
    node."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    if len([n for n in ray.nodes() if n["Alive"]]) == 1:
        cpus = min(cpus, os.cpu_count() or 1)  # as cap_to_cores does
    by_bytes = int(DECODE_TASK_BYTES // mean_bytes) if mean_bytes else DECODE_BATCH
    return max(1, min(DECODE_BATCH, by_bytes, -(-count // (2 * cpus))))


def cap_to_cores(ds) -> None:
    """On one node that advertises more logical CPUs than it has cores (a private Ray does, for training's sake:
    genai_ray/ray_runtime.py), run at most one decode task per core: decoding is CPU-bound, and more tasks
    would only add worker processes and memory."""
    import ray

    cores = os.cpu_count() or 1
    if len([n for n in ray.nodes() if n["Alive"]]) == 1 and ray.cluster_resources().get("CPU", 0) > cores:
        options = ds.context.execution_options
        options.resource_limits = options.resource_limits.copy(cpu=cores)


def build_dataset(src: StoreSource):
    """The lazy Ray Dataset of decoded rows: image, label, holdout, uri, error, node."""
    ds = _decoded(src)
    cap_to_cores(ds)
    return ds


def _decoded(src: StoreSource):
    import ray.data

    fs, _ = storage.resolve(src.uri)
    rows = decode_batch_rows(src.count, src.mean_bytes)
    ray.data.DataContext.get_current().use_datasource_v2 = False  # V2 starts an actor per Parquet read
    if src.kind == "folder":
        ds = ray.data.read_binary_files(src.paths[0], filesystem=fs, include_paths=True,
                                        file_extensions=[s.lstrip(".") for s in IMAGE_SUFFIXES],
                                        override_num_blocks=-(-src.count // rows))
        # batch_size=None lets Ray fuse reading and decoding into one task (the raw bytes never reach the object
        # store); each read task's block is already about `rows` files.
        return ds.map_batches(decode.decode_files, batch_size=None, batch_format="pyarrow",
                              fn_kwargs={"spec": src.spec, "scheme": _scheme(src.uri)})
    columns = [src.image_column] + ([src.label_column] if src.label_column else [])
    file_column = None if "path" in columns else "path"
    ds = ray.data.read_parquet(src.paths, filesystem=fs, columns=columns, include_paths=file_column is not None)
    return ds.map_batches(decode.decode_table, batch_size=rows, batch_format="pyarrow",
                          fn_kwargs={"spec": src.spec, "image_column": src.image_column,
                                     "label_column": src.label_column, "file_column": file_column,
                                     "scheme": _scheme(src.uri)})


def prepare_store(src: StoreSource, out_uri: str, *, name: str, shards: int | None = None,
                  shard_rows: int | None = None, overwrite: bool = False, skip_bad: bool = False,
                  address: str | None = None, progress: bool = True) -> tuple[Manifest, Report]:
    """Decode ``src`` on Ray Data and write it as a dataset at ``out_uri``; the manifest is written last."""
    holdout, seed = src.spec.holdout, src.spec.seed
    check_options(holdout, shards, shard_rows)
    storage.check_writable(out_uri)
    clear_output(out_uri, overwrite)
    ray_runtime.ensure_ray(address)
    # Ray Data warns once that its progress bars are off (ensure_ray turns them off); our own line replaces them.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    if shards:
        shard_rows = -(-src.count // shards)  # the train split holds at most every image
    shard_rows = shard_rows or default_shard_rows(src.shape)
    writers = {s: ShardWriter(out_uri, s, shard_rows) for s in ("train", "holdout")}
    report = Report()
    start = time.monotonic()
    try:
        first = f"{src.first} is {src.spec.width}x{src.spec.height}"
        label_counts = _stream(build_dataset(src), writers, report, skip_bad, first,
                               Progress(src.count, f"preparing {name}") if progress else None)
        train_rows = sum(s.rows for s in writers["train"].shards)
        holdout_rows = sum(s.rows for s in writers["holdout"].shards)
        if train_rows == 0:
            raise UserError(f"{name}: the training split is empty; lower --holdout or add images")
        source = src.description
        if report.skipped_count:
            source["skipped"] = {"count": report.skipped_count, "uris": report.skipped}
        manifest = Manifest(
            name=name, shape=src.shape, channels=src.shape[2], count=train_rows + holdout_rows,
            train_count=train_rows, holdout_count=holdout_rows, holdout_fraction=holdout,
            class_names=src.class_names,
            label_counts={str(k): v for k, v in sorted(label_counts.items())} if src.class_names else {},
            seed=seed, shards=writers["train"].shards + writers["holdout"].shards, source=source,
            created_at=now_iso(),
        )
        write_manifest(out_uri, manifest)
    except BaseException:
        for writer in writers.values():
            discard_quietly(writer)
        raise
    report.seconds = time.monotonic() - start
    return manifest, report


def _stream(ds, writers: dict[str, ShardWriter], report: Report, skip_bad: bool, first: str,
            meter: Progress | None) -> Counter[int]:
    """Route decoded batches to their split's writer as they arrive; returns the train split's label counts."""
    label_counts: Counter[int] = Counter()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        errors = batch["error"]
        bad = errors != ""
        for i in np.flatnonzero(bad):
            _bad_image(str(batch["uri"][i]), str(errors[i]), skip_bad, first)
            report.skipped_count += 1
            if len(report.skipped) < SKIPPED_LISTED:
                report.skipped.append(str(batch["uri"][i]))
        good = ~bad
        images, labels, held = batch["image"][good], batch["label"][good], batch["holdout"][good].astype(bool)
        writers["train"].add(images[~held], labels[~held])
        writers["holdout"].add(images[held], labels[held])
        label_counts.update(labels[~held].tolist())
        report.nodes.update(batch["node"][good].tolist())
        if meter:
            meter.update(len(errors))
    for writer in writers.values():
        writer.flush()
    if meter:
        meter.close()
    return label_counts


def _bad_image(uri: str, error: str, skip_bad: bool, first: str) -> None:
    kind, _, detail = error.partition(":")
    if kind == "size":
        raise UserError(f"{uri}: {detail} but {first}; pass --image-size to resize all images")
    if not skip_bad:
        raise UserError(f"{uri}: unreadable or corrupt image ({detail}); remove or replace it, or pass --skip-bad")


def print_skipped(report: Report) -> None:
    """Name the skipped images on stderr, as the manifest does."""
    if not report.skipped_count:
        return
    print(f"skipped {report.skipped_count} unreadable images (--skip-bad); the first {len(report.skipped)}:",
          file=sys.stderr)
    for uri in report.skipped:
        print(f"  {uri}", file=sys.stderr)
