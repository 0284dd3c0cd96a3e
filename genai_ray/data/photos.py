"""The ``photos`` source: seeded square crops of the colour photographs that ship inside installed wheels.

Eight photographs come with scikit-image (``skimage.data``, the ``photos`` extra) and two with scikit-learn
(``load_sample_images``), so a labelled colour dataset needs no download: one class per photograph, class names
the photo names, sorted. Each crop takes a random square window (a random side between ``MIN_WINDOW`` of the
photo's shorter side and all of it, at a random place), flips it horizontally half the time and shrinks it with
PIL's LANCZOS filter, so small crops are antialiased instead of aliased. Labels cycle through the photos, so the
classes are balanced to within one image.

Crops are cut chunk by chunk from a generator seeded with (seed, chunk start): the same seed and count give the
same images, and memory stays one chunk plus the ten photographs (about 20 MB).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from genai_ray.errors import UserError

# scikit-image and scikit-learn are imported inside the functions that read their photos: the CLI loads this module
# at start-up (through data/sources.py), `genai-ray --help` and config errors stay fast, and scikit-image is an
# optional extra.

MIN_WINDOW = 0.3  # smallest crop window, as a fraction of the photo's shorter side
DEFAULT_SIZE = 32  # --image-size when none is given


def _skimage_photos() -> dict[str, Callable[[], np.ndarray]]:
    """The colour photographs bundled in scikit-image's wheel (those that need no pooch download)."""
    try:
        from skimage import data
    except ImportError:
        raise UserError("source 'photos' needs the scikit-image package; install the extra: "
                        "pip install 'genai-ray[photos]'") from None
    return {
        "astronaut": data.astronaut, "chelsea": data.chelsea, "coffee": data.coffee, "rocket": data.rocket,
        "hubble": data.hubble_deep_field, "ihc": data.immunohistochemistry, "retina": data.retina,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
    }


def _sklearn_photos() -> dict[str, Callable[[], np.ndarray]]:
    from sklearn.datasets import load_sample_images

    images = load_sample_images()
    return {name.rsplit("/", 1)[-1].split(".")[0]: (lambda img=img: img)
            for name, img in zip(images.filenames, images.images, strict=True)}


def load_photos() -> dict[str, np.ndarray]:
    """Name -> (H, W, 3) uint8 photograph, sorted by name (the class order)."""
    loaders = {**_skimage_photos(), **_sklearn_photos()}
    return {name: np.ascontiguousarray(loaders[name]()[..., :3], np.uint8) for name in sorted(loaders)}


def crop_photos(photos: list[np.ndarray], n: int, size: int, seed: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` crops (n, size, size, 3) and their labels, determined by (seed, start, n)."""
    rng = np.random.default_rng([seed, start])
    labels = (np.arange(start, start + n) % len(photos)).astype(np.int64)
    frac, ux, uy = rng.uniform(MIN_WINDOW, 1.0, n), rng.random(n), rng.random(n)
    flips = rng.random(n) < 0.5
    out = np.empty((n, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        photo = photos[label]
        h, w = photo.shape[:2]
        side = max(min(size, h, w), round(frac[i] * min(h, w)))  # never smaller than the output, if it can be
        top, left = round(uy[i] * (h - side)), round(ux[i] * (w - side))
        window = Image.fromarray(photo[top : top + side, left : left + side])
        if flips[i]:
            window = window.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        # reducing_gap: a box pre-shrink to within 3x the target, then LANCZOS; as sharp, several times faster
        out[i] = np.asarray(window.resize((size, size), Image.LANCZOS, reducing_gap=3.0))
    return out, labels
