"""The ``photos`` source: seeded crops of the bundled colour photographs, prepared through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genai_ray.data.reader import open_dataset
from genai_ray.data.sources import open_source
from genai_ray.errors import UserError

PHOTOS = ["astronaut", "chelsea", "china", "coffee", "flower", "hubble", "ihc", "motorcycle", "retina", "rocket"]
CLI = [sys.executable, "-m", "genai_ray"]


def crops(count: int, seed: int, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(open_source("photos", image_size=size, count=count, seed=seed).chunks())
    return np.concatenate([c.images for c in chunks]), np.concatenate([c.labels for c in chunks])


@pytest.mark.parametrize("size", [32, 64])
def test_prepare_makes_the_requested_count_of_colour_crops_at_each_size(size: int, store: str):
    out = subprocess.run([*CLI, "data", "prepare", "photos", "--count", "60", "--image-size", str(size),
                          "--holdout", "0.5"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"prepared photos: 60 images {size}x{size}x3, 30 train / 30 holdout")
    ds = open_dataset(f"{store}/datasets/photos")
    assert ds.manifest.class_names == PHOTOS
    assert ds.manifest.label_counts == {str(k): 3 for k in range(10)}, "6 crops per photo, half held out"
    x, y = ds.read_numpy("train")
    assert x.shape == (30, size, size, 3) and x.dtype == np.uint8 and sorted(set(y.tolist())) == list(range(10))
    assert x.std(axis=(1, 2, 3)).min() > 5, "every crop shows part of a photo, not a flat fill"


def test_default_size_is_32_and_labels_name_the_photo_each_crop_came_from():
    x, y = crops(20, seed=0)
    assert x.shape == (20, 32, 32, 3) and np.bincount(y).tolist() == [2] * 10
    src = open_source("photos", count=1)
    assert src.class_names == PHOTOS and src.shape == (32, 32, 3)
    by_class = [x[y == k].astype(float).mean(axis=(0, 1, 2)) for k in range(10)]
    hubble, flower = by_class[PHOTOS.index("hubble")], by_class[PHOTOS.index("flower")]
    assert hubble.sum() < flower.sum(), "the deep-field crops are darker than the flower's"


def test_same_seed_same_images_other_seed_other_images():
    a, ya = crops(1100, seed=3)  # two chunks at 32 px (1,024 + 76)
    b, yb = crops(1100, seed=3)
    c, _ = crops(1100, seed=4)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert (a != c).mean() > 0.5, "another seed cuts other windows"
    assert len({img.tobytes() for img in a}) == 1100, "no two crops alike"


def test_crop_is_refused_in_one_line_because_the_crops_are_already_square():
    with pytest.raises(UserError, match=r"^--crop does not apply to the photos source: it already cuts square "
                                        r"windows; drop --crop$"):
        open_source("photos", image_size=32, crop=True)


def test_large_counts_stream_in_bounded_chunks():
    src = open_source("photos", image_size=256, count=300, seed=0)
    sizes = [len(c.images) for c in src.chunks()]
    assert sum(sizes) == 300 and max(sizes) < 300, "256 px crops come in chunks of at most 32 MiB"


def test_without_scikit_image_the_cli_names_the_extra_in_one_line_and_exits_2(store: str):
    # A child process in which `import skimage` fails, as on an install without the extra; the CLI itself is real.
    child = "import sys; sys.modules['skimage'] = None; from genai_ray.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", child, "data", "prepare", "photos", "--count", "10"],
                         capture_output=True, text=True, timeout=300)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == ("error: source 'photos' needs the scikit-image package; install the extra: "
                          "pip install 'genai-ray[photos]'\n")
    assert not Path(store, "datasets", "photos").exists()
