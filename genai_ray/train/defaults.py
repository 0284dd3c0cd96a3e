"""The default preset fitted to the dataset: family, widths, batch, augmentation and run length chosen from its
image size, channels, labels and training-image count, each with the reason it is printed with.

Applies when the user names no preset (``--preset`` or a YAML ``preset:``); every key the user sets still wins
over it, key by key. The default preset itself was tuned on 8x8 digits (docs/training.md).
"""

from __future__ import annotations

from typing import Any

from genai_ray.data.manifest import Manifest

SMALL_DATA = 2000  # training images below which D overfits without augmentation (the limited-data regime)
MLP_MAX_SIDE = 32  # images up to this side (grayscale) train well as dense GANs on CPUs
DIGITS_PIXELS = 256  # up to 16x16 grayscale the default preset applies as tuned on 8x8 digits


def fit_to_data(m: Manifest) -> tuple[dict[str, Any], list[str]]:
    """(overrides on top of the default preset, one reason per choice) for a dataset's manifest."""
    h, w, c = m.shape
    side = max(h, w)
    model: dict[str, Any] = {"conditional": m.labelled}
    train: dict[str, Any] = {}
    why = [f"conditional={str(m.labelled).lower()} ({'labelled' if m.labelled else 'no labels'})"]
    pow2 = h == w and h >= 8 and not h & (h - 1)
    if (c == 1 and side <= MLP_MAX_SIDE) or not pow2:
        model["family"] = "mlp"
        train["workers"] = 1
        why.append(f"mlp with the preset's widths ({h}x{w}x{c}: small grayscale images train fastest as dense GANs "
                   "on CPUs), 1 worker (a dense GAN's step is shorter than its gradient all-reduce: a second worker "
                   "slows it down)")
        if h * w * c > DIGITS_PIXELS:
            train["mode_seeking"] = 0.0
            why.append(f"mode seeking off (above {DIGITS_PIXELS} pixel values it costs precision and adds no recall)")
        if not pow2 and side > MLP_MAX_SIDE:
            size = 1 << (side.bit_length() - 1)
            why.append(f"(a DCGAN needs square power-of-two images: re-prepare with --image-size {size} for one)")
    else:
        base = 64 if side <= 32 else 32
        model.update(family="dcgan", base_channels=base)
        train["global_batch"] = 64
        why.append(f"dcgan with base_channels={base} ({h}x{w}x{c}: {'colour' if c == 3 else 'large'} images)")
    n = m.train_count
    if n < SMALL_DATA:
        policy = "translation,cutout,color" if c == 3 else "translation"  # DiffAugment's policy; on digits: translation
        train.update(augment=policy, ada_target=0.6)
        why.append(f"ADA augmentation ({policy}) of D's inputs ({n:,} training images < {SMALL_DATA:,})")
    train["kimg"] = kimg_for(model.get("family", "mlp"), h * w * c)
    why.append(f"{train['kimg']:g} kimg (whatever the dataset size: the same images shown)")
    return {"model": model, "train": train}, why


def kimg_for(family: str, pixels: int) -> float:
    """Run length that fits about 10 minutes on 2 CPU cores for the chosen network."""
    if family == "dcgan":
        return 200.0
    return 768.0 if pixels <= DIGITS_PIXELS else 1600.0


def fitted_for(data: str, store: str, turn_off: str = "--preset default") -> tuple[dict[str, Any], str]:
    """(the fitted overrides, the line that says what was chosen, why, and how to ``turn_off`` the fitting)
    for a dataset URI or store name."""
    from genai_ray.data.reader import open_dataset, resolve_dataset_uri

    manifest = open_dataset(resolve_dataset_uri(data, store)).manifest
    fitted, why = fit_to_data(manifest)
    return fitted, (f"default preset fitted to {manifest.name}: {'; '.join(why)}. Keys you set win; "
                    f"{turn_off} turns the fitting off")
