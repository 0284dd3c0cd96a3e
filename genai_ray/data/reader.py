"""Read prepared datasets: as a Ray Dataset for training, or as numpy for evaluation.

Both validate against the manifest first: every shard exists with the recorded size and row count, and,
on request, the recorded sha256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genai_ray import storage
from genai_ray.data.manifest import Manifest, ShardInfo, Split, read_manifest
from genai_ray.errors import IntegrityError, UserError
from genai_ray.names import check_name

# Ray Data is imported inside to_ray(): the CLI loads this module at start-up, and `genai-ray --help` and config
# errors stay fast.


@dataclass
class Dataset:
    uri: str
    manifest: Manifest

    def shard_uris(self, split: Split) -> list[str]:
        return [storage.join(self.uri, s.path) for s in self.manifest.shards_of(split)]

    def verify(self, checksums: bool = False) -> None:
        """Raise ``IntegrityError`` naming the first shard that disagrees with the manifest.

        Checks each shard's presence, size, row count and image shape (from the Parquet footer), the split
        totals, and, with ``checksums``, each shard's sha256 (which reads every byte).
        """
        m = self.manifest
        for split, expected in (("train", m.train_count), ("holdout", m.holdout_count)):
            listed = sum(s.rows for s in m.shards_of(split))
            if listed != expected:
                raise IntegrityError(f"{storage.join(self.uri, 'manifest.json')}: its {split} shards hold {listed} "
                                     f"rows but it says {expected}; the manifest is damaged, re-run data prepare")
        for shard in m.shards:
            _verify_shard(self.uri, shard, tuple(m.shape), checksums)

    def to_ray(self, split: Split = "train"):
        """A Ray Dataset of {"image": uint8 (H, W, C), "label": int64} rows for one split."""
        import ray.data

        uris = self.shard_uris(split)
        if not uris:
            raise UserError(f"{self.uri}: the {split} split is empty; re-prepare with a larger --holdout")
        fs, _ = storage.resolve(self.uri)
        paths = [storage.resolve(u)[1] for u in uris]
        # Ray Data 2.60's default Parquet path (DataSourceV2) starts a FooterReader actor, a new process, for every
        # read: seconds of start-up per training run that the V1 path doesn't pay (docs/ray-notes.md).
        ray.data.DataContext.get_current().use_datasource_v2 = False
        return ray.data.read_parquet(paths, filesystem=fs, columns=["image", "label"])

    def read_numpy(self, split: Split = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The split as (images uint8 NHWC, labels int64), optionally only the first ``limit`` rows."""
        images, labels, total = [], [], 0
        for uri in self.shard_uris(split):
            if limit is not None and total >= limit:
                break
            table = read_shard(uri)
            x = table_images(table)
            if x.shape[1:] != tuple(self.manifest.shape):
                raise IntegrityError(f"{uri}: images are {x.shape[1:]}, the manifest says "
                                     f"{tuple(self.manifest.shape)}; re-run data prepare")
            images.append(x)
            labels.append(table.column("label").to_numpy())
            total += table.num_rows
        if not images:
            h, w, c = self.manifest.shape
            return np.zeros((0, h, w, c), np.uint8), np.zeros((0,), np.int64)
        x, y = np.concatenate(images), np.concatenate(labels)
        return (x[:limit], y[:limit]) if limit is not None else (x, y)


def table_images(table: pa.Table) -> np.ndarray:
    """The image column as one (N, H, W, C) uint8 array."""
    column = table.column("image").combine_chunks()
    return column.to_numpy_ndarray()


def read_shard(uri: str) -> pa.Table:
    fs, path = storage.resolve(uri)
    try:
        return pq.read_table(path, filesystem=fs)
    except FileNotFoundError:
        raise IntegrityError(f"{uri}: shard listed in the manifest is missing; re-run data prepare") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise IntegrityError(f"{uri}: shard is unreadable or corrupt ({str(err)[:120]}); re-run data prepare") from None


def _verify_shard(dataset_uri: str, shard: ShardInfo, shape: tuple[int, int, int], checksums: bool) -> None:
    uri = storage.join(dataset_uri, shard.path)
    size = storage.size(uri)
    if size is None:
        raise IntegrityError(f"{uri}: shard listed in the manifest is missing; re-run data prepare")
    if size != shard.bytes:
        raise IntegrityError(f"{uri}: shard is {size} bytes, manifest says {shard.bytes}; re-run data prepare")
    if checksums:
        digest = storage.sha256_bytes(storage.read_bytes(uri))
        if digest != shard.sha256:
            raise IntegrityError(f"{uri}: sha256 {digest[:12]}... does not match the manifest's "
                                 f"{shard.sha256[:12]}...; the shard is corrupt, re-run data prepare")
    fs, path = storage.resolve(uri)
    try:
        footer = pq.ParquetFile(path, filesystem=fs)
        rows, image_type = footer.metadata.num_rows, footer.schema_arrow.field("image").type
    except (pa.ArrowInvalid, OSError, KeyError) as err:
        raise IntegrityError(f"{uri}: shard is unreadable or corrupt ({str(err)[:120]}); re-run data prepare") from None
    if rows != shard.rows:
        raise IntegrityError(f"{uri}: shard has {rows} rows, manifest says {shard.rows}; re-run data prepare")
    if tuple(getattr(image_type, "shape", ())) != shape:
        raise IntegrityError(f"{uri}: images are {image_type}, the manifest says shape {shape}; re-run data prepare")


def open_dataset(uri: str, verify: bool = True, checksums: bool = False) -> Dataset:
    """Open a prepared dataset at any URI, validated against its manifest."""
    ds = Dataset(uri, read_manifest(uri))
    if verify:
        ds.verify(checksums=checksums)
    return ds


def resolve_dataset_uri(ref: str, store: str | None = None) -> str:
    """A dataset URI, or a bare name looked up under ``<store>/datasets/``."""
    if "/" in ref or "://" in ref or ref.startswith("."):
        return ref  # a path or URI the user chose, not a name in the store
    return storage.join(store or storage.default_store(), "datasets", check_name(ref, "dataset name"))
