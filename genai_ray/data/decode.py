"""The decode stage of the Ray Data prepare pipeline: encoded images in, fixed-shape uint8 arrays out.

It runs inside Ray Data tasks, on whichever node holds a CPU, so it is a pure function of its batch and a
``DecodeSpec``. Every row gets its split from a hash of a stable key (the image's path relative to the source,
or its bytes for a table), never from the order in which tasks finish: the same source and seed give the
same split at 1, 2 or N CPUs. A row that cannot be decoded is kept, flagged with its reason, so the driver
can name it or skip it; an exception here would lose the file's name in Ray's wrapping.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from genai_ray.data.sources import centre_box

# Ray is imported inside the functions that need it: the CLI loads this module at start-up (through data/ingest.py),
# and `genai-ray --help` and config errors stay fast.

# With --image-size, a JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) while it stays at least
# this many times the target on each side; the resize does the rest. Pillow's thumbnail() uses the same gap by
# default: at 2 the result matches a full decode to about 40 dB PSNR and decodes faster (docs/data.md).
REDUCING_GAP = 2

BAD_IMAGE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class DecodeSpec:
    """What every decode task needs to know; small, so Ray ships it with each task."""

    height: int
    width: int
    mode: str  # PIL mode of every output image: "L" or "RGB"
    resize: int | None  # --image-size; None keeps the size, which every image must then share
    crop: bool
    seed: int
    holdout: float
    base: str = ""  # folder sources: the listing root, stripped from each path to make its key
    class_index: dict[str, int] = field(default_factory=dict)  # label value (subfolder or string) -> index

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


def holdout_of(keys: list[bytes], seed: int, fraction: float) -> np.ndarray:
    """True where a key's seeded hash, read as a number in [0, 1), falls below ``fraction``."""
    salt = str(seed).encode() + b"\0"
    u = np.array([int.from_bytes(hashlib.blake2b(salt + k, digest_size=8).digest(), "big") for k in keys],
                 np.float64) / 2.0**64
    return u < fraction


def decode_image(data: bytes, spec: DecodeSpec) -> np.ndarray:
    """One encoded image as (H, W, C) uint8, converted to the spec's mode and resized; raises BAD_IMAGE."""
    with Image.open(io.BytesIO(data)) as im:
        if spec.resize:
            im.draft(spec.mode, (REDUCING_GAP * spec.resize,) * 2)  # a no-op for formats other than JPEG
        pil = im.convert(spec.mode)
    if spec.resize:
        if spec.crop:  # crop first: resizing with a box would let the filter reach pixels outside it
            pil = pil.crop(centre_box(*pil.size))
        if pil.size != (spec.resize, spec.resize):
            pil = pil.resize((spec.resize, spec.resize), Image.BILINEAR)
    elif pil.size != (spec.width, spec.height):
        raise WrongSize(f"image is {pil.size[0]}x{pil.size[1]}")
    return np.asarray(pil).reshape(spec.height, spec.width, spec.channels)


class WrongSize(ValueError):
    """An image whose size differs from the first one, without --image-size to reconcile them."""


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _decode_rows(blobs: list[bytes | None], uris: list[str], labels: np.ndarray, keys: list[bytes],
                 spec: DecodeSpec) -> dict[str, np.ndarray]:
    """Decode each blob; the output columns the driver routes into shards."""
    n = len(blobs)
    images = np.zeros((n, spec.height, spec.width, spec.channels), np.uint8)
    errors = np.full(n, "", dtype=object)
    for i, data in enumerate(blobs):
        try:
            if data is None:
                raise ValueError("no image bytes (null)")
            images[i] = decode_image(data, spec)
        except WrongSize as err:
            errors[i] = f"size:{err}"
        except BAD_IMAGE as err:
            errors[i] = f"bad:{type(err).__name__}"
    return {
        "image": images,
        "label": labels.astype(np.int64),
        "holdout": holdout_of(keys, spec.seed, spec.holdout),
        "uri": np.array(uris, dtype=object),
        "error": errors,
        "node": np.full(n, _node_id(), dtype=object),
    }


def is_hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def decode_files(batch: pa.Table, spec: DecodeSpec, scheme: str) -> dict[str, np.ndarray]:
    """A batch of ``read_binary_files`` rows (bytes, path): the label is the first subfolder, the key the path."""
    paths = batch.column("path").to_pylist()
    keep = [i for i, p in enumerate(paths) if not is_hidden(p[len(spec.base):].lstrip("/"))]
    blobs = batch.column("bytes").take(pa.array(keep, pa.int64())).to_pylist() if keep else []
    relative = [paths[i][len(spec.base):].lstrip("/") for i in keep]
    labels = np.array([spec.class_index[r.split("/", 1)[0]] if spec.class_index else -1 for r in relative],
                      np.int64)
    uris = [scheme + paths[i] for i in keep]
    return _decode_rows(blobs, uris, labels, [r.encode() for r in relative], spec)


def decode_table(batch: pa.Table, spec: DecodeSpec, image_column: str, label_column: str | None,
                 file_column: str | None, scheme: str) -> dict[str, np.ndarray]:
    """A batch of Parquet rows: the image from a binary or ``{bytes, path}`` column, the key its content."""
    col = batch.column(image_column).combine_chunks()
    names: list[str | None] = [None] * len(col)
    if pa.types.is_struct(col.type):
        if col.type.get_field_index("path") >= 0:
            names = col.field("path").to_pylist()
        col = col.field("bytes")
    blobs = col.to_pylist()
    if label_column is None:
        labels = np.full(len(blobs), -1, np.int64)
    else:
        labels = np.array([spec.class_index[str(v)] for v in batch.column(label_column).to_pylist()], np.int64)
    keys = [hashlib.sha256(b or b"").digest() for b in blobs]
    files = batch.column(file_column).to_pylist() if file_column else [""] * len(blobs)
    uris = [f"{scheme}{f} (image {name!r})" if name else f"{scheme}{f} (image sha256 {k.hex()[:12]})"
            for f, name, k in zip(files, names, keys, strict=True)]
    return _decode_rows(blobs, uris, labels, keys, spec)
