"""The default preset fitted to the dataset and the hardware: family, widths, batch, workers, mixed precision,
augmentation and run length chosen from the image size, channels, labels and training-image count, and from where
the run will execute (CPU cores or GPUs: train/hardware.py), each with the reason it is printed with.

Applies when the user names no preset (``--preset`` or a YAML ``preset:``); every key the user sets still wins
over it, key by key. The default preset itself was tuned on 8x8 digits (docs/training.md). Convolutional run
lengths come from the measured rate table (train/rates.py) and a wall-clock budget per image size.
"""

from __future__ import annotations

import os
from typing import Any

from genai_ray.data.manifest import Manifest
from genai_ray.data.reader import open_dataset, resolve_dataset_uri
from genai_ray.train.hardware import Hardware
from genai_ray.train.rates import duration, speed

SMALL_DATA = 2000  # training images below which D overfits without augmentation (the limited-data regime)
MLP_MAX_SIDE = 32  # images up to this side (grayscale) train well as dense GANs on CPUs
GPU_CONV_MIN_SIDE = 16  # on GPUs, square power-of-two grayscale images from this side train as convolutional GANs
DIGITS_PIXELS = 256  # up to 16x16 grayscale the default preset applies as tuned on 8x8 digits

# The network family for colour images, by hardware class: the one place that choice lives. On CPUs the residual
# family won the equal-CPU-minutes comparison against the DCGAN (BENCHMARKS.md, colour family); on GPUs, where
# nothing has been compared, the DCGAN stays.
COLOUR_FAMILY = {"cpu": "resnet", "gpu": "dcgan"}
# What the residual family trains with: R3GAN's loss, both penalties at one gamma (its CIFAR-10 value) and its Adam
# betas, as compared. At half the DCGAN's base width its step costs about the DCGAN's.
RESNET_TRAIN = {"loss": "rpgan", "r1_gamma": 0.05, "r2_gamma": 0.05, "beta1": 0.0, "beta2": 0.99}

CPU_MINUTES_AT_32 = 20.0  # wall-clock budget of a fitted convolutional run on CPUs at 32 px; 40 at 64, linear in
CPU_MINUTES = (10.0, 60.0)  # the side, within these bounds
GPU_MINUTES = 60.0  # wall-clock budget of a fitted convolutional run on GPUs
GPU_KIMG = (500.0, 5000.0)  # a fitted GPU run's length stays within these kimg (StyleGAN2-ADA runs thousands)
BUDGET_SHARE = 0.85  # aim at this share of a budget: a shared machine's speed drifts by 10-20%
FALLBACK_CONV_KIMG = 200.0  # a convolutional family with no row in the rate table
ONE_WORKER_MAX_CPUS = 2  # up to this many cores a convolutional net trains faster on 1 worker than on 2 (measured
# at 2 cores: BENCHMARKS.md, train_throughput); above, 2 workers as before (not measured)
GPU_BATCH = {64: 256, 128: 128}  # per GPU worker, by largest side it applies to; 64 above
# Global batch on CPUs, by family. In the same wall clock the residual net learned more per minute at smaller
# batches: 32 beat 64 on every seed compared, and 16 beat 32 on two seeds of three and tied on the third
# (docs/training.md, "Run length on photos"), more steps at about the same images/s. The DCGAN's 64 was not compared.
CPU_BATCH = {"resnet": 16, "dcgan": 64}


def fit_to_data(m: Manifest, hw: Hardware | None = None) -> tuple[dict[str, Any], list[str]]:
    """(overrides on top of the default preset, one reason per choice) for a dataset's manifest on ``hw``
    (default: this machine's cores, without AMX: float32 on any machine, as the learning tests need)."""
    hw = hw or Hardware(os.cpu_count() or 1, 0)
    h, w, c = m.shape
    side = max(h, w)
    model: dict[str, Any] = {"conditional": m.labelled}
    train: dict[str, Any] = {}
    why = [f"conditional={str(m.labelled).lower()} ({'labelled' if m.labelled else 'no labels'})"]
    pow2 = h == w and h >= 8 and not h & (h - 1)
    dense = (c == 1 and side <= MLP_MAX_SIDE and not (hw.gpus and side >= GPU_CONV_MIN_SIDE)) or not pow2
    if dense:
        model["family"] = "mlp"
        train["workers"] = 1
        why.append(f"mlp with the preset's widths ({h}x{w}x{c}: small grayscale images train fastest as dense GANs "
                   "on CPUs), 1 worker (a dense GAN's step is shorter than its gradient all-reduce: a second worker "
                   "slows it down)")
        if hw.gpus:
            train["gpus_per_worker"] = hw.gpus_per_worker or 1.0
            why.append(f"on 1 GPU of {hw.describe()} (a dense GAN this small cannot fill more)")
        if h * w * c > DIGITS_PIXELS:
            train["mode_seeking"] = 0.0
            why.append(f"mode seeking off (above {DIGITS_PIXELS} pixel values it costs precision and adds no recall)")
        if not pow2 and side > MLP_MAX_SIDE:
            size = 1 << (side.bit_length() - 1)
            why.append(f"(a DCGAN needs square power-of-two images: re-prepare with --image-size {size} for one)")
    else:
        why.append(_fit_conv(model, train, (h, w, c), hw))
    n = m.train_count
    if n < SMALL_DATA:
        policy = "translation,cutout,color" if c == 3 else "translation"  # DiffAugment's policy; on digits: translation
        train.update(augment=policy, ada_target=0.6)
        why.append(f"ADA augmentation ({policy}) of D's inputs ({n:,} training images < {SMALL_DATA:,})")
    train["kimg"], reason = run_kimg(model["family"], (h, w, c), hw)
    why.append(f"{train['kimg']:g} kimg ({reason}; whatever the dataset size: the same images shown)")
    return {"model": model, "train": train}, why


def _fit_conv(model: dict[str, Any], train: dict[str, Any], shape: tuple[int, int, int], hw: Hardware) -> str:
    """Fill a convolutional family's model and train keys for ``hw``; returns the reason."""
    h, w, c = shape
    side = max(h, w)
    family = COLOUR_FAMILY[hw.kind] if c == 3 else "dcgan"
    what = f"{h}x{w}x{c}: {'colour' if c == 3 else 'large'} images"
    if hw.gpus:
        workers = hw.gpu_workers
        per_worker = next((b for top, b in sorted(GPU_BATCH.items()) if side <= top), 64)
        model.update(family=family, base_channels=64)
        train.update(workers=workers, gpus_per_worker=hw.gpus_per_worker or 1.0, global_batch=per_worker * workers,
                     mixed_precision="float16", steps_per_call=16)
        return (f"{family} with base_channels=64 ({what}) on {workers} GPU worker{'s' if workers > 1 else ''} "
                f"({hw.describe()} on {hw.where}), global batch {per_worker * workers} ({per_worker} per GPU), "
                "mixed precision (float16 convolutions on tensor cores)")
    base = (64 if side <= 32 else 32) // (2 if family == "resnet" else 1)
    model.update(family=family, base_channels=base)
    recipe = ""
    if family == "resnet":
        train.update(RESNET_TRAIN)
        recipe = ", R3GAN's RpGAN loss with R1 and R2 (gamma 0.05) and Adam betas (0, 0.99)"
    batch = CPU_BATCH[family]
    precision = cpu_precision(family, hw)
    if precision != "off":
        train["mixed_precision"] = precision
        recipe += ", mixed bfloat16 (this CPU's AMX units run it about 1.5x faster than float32: docs/training.md)"
    if hw.cpus <= ONE_WORKER_MAX_CPUS:
        train.update(workers=1, cpus_per_worker=float(hw.cpus), global_batch=batch)
        return (f"{family} with base_channels={base} ({what}) on 1 worker with all {hw.describe()} of {hw.where} "
                "(on a small node one worker's threads beat two workers' all-reduces: docs/training.md), "
                f"global batch {batch}{recipe}")
    train.update(workers=2, global_batch=batch)
    return (f"{family} with base_channels={base} ({what}) on 2 workers ({hw.describe()} on {hw.where}), "
            f"global batch {batch}{recipe}")


def cpu_precision(family: str, hw: Hardware) -> str:
    """train.mixed_precision for ``family`` on CPU workers: bfloat16 for the residual net where the CPUs have AMX
    bfloat16 units (its quality was compared there: docs/training.md), else off."""
    return "bfloat16" if hw.bf16 and not hw.gpus and family == "resnet" else "off"


def cpu_minutes(side: int) -> float:
    """Wall-clock budget of a fitted convolutional run on CPUs: 20 min at 32 px, 40 at 64, within CPU_MINUTES."""
    return min(max(CPU_MINUTES_AT_32 * side / 32, CPU_MINUTES[0]), CPU_MINUTES[1])


def run_kimg(family: str, shape: tuple[int, int, int], hw: Hardware) -> tuple[float, str]:
    """(run length in kimg, why) for ``family`` at ``shape`` on ``hw``. Dense GANs keep the lengths tuned on digits;
    convolutional ones take what fits a wall-clock budget at the rate table's speed."""
    if family == "mlp":
        return kimg_for(family, shape[0] * shape[1] * shape[2]), "the length tuned on digits"
    fast = speed(family, shape, hw, "float16" if hw.gpus else cpu_precision(family, hw))
    if fast is None:
        return FALLBACK_CONV_KIMG, f"no measured rate for {family} on {hw.kind.upper()}s in train/rates.py"
    if hw.gpus:
        minutes = GPU_MINUTES
        kimg = min(max(fast.kimg_within(BUDGET_SHARE * minutes * 60), GPU_KIMG[0]), GPU_KIMG[1])
        kimg = float(int(kimg // 100 * 100) or 100)
    else:
        minutes = cpu_minutes(max(shape[:2]))
        kimg = float(max(5, int(fast.kimg_within(BUDGET_SHARE * minutes * 60) // 5 * 5)))
    basis = "measured" if fast.measured else "estimated"
    return kimg, (f"{duration(fast.seconds(kimg))} on {hw.describe()} at the {basis} {fast.images_per_s:,.0f} "
                  f"images/s of train/rates.py, within a {minutes:g}-minute budget")


def kimg_for(family: str, pixels: int) -> float:
    """A dense GAN's run length, tuned on digits (768 kimg at 8x8) and MNIST-sized images."""
    assert family == "mlp", f"convolutional run lengths come from run_kimg, not {family}"
    return 768.0 if pixels <= DIGITS_PIXELS else 1600.0


def open_manifest(data: str, store: str) -> Manifest:
    return open_dataset(resolve_dataset_uri(data, store)).manifest


def fitted_for(data: str, store: str, turn_off: str = "--preset default",
               hw: Hardware | None = None) -> tuple[dict[str, Any], str]:
    """(the fitted overrides, the line that says what was chosen, why, and how to ``turn_off`` the fitting)
    for a dataset URI or store name, on ``hw`` (train/hardware.py's ``detect``)."""
    manifest = open_manifest(data, store)
    fitted, why = fit_to_data(manifest, hw)
    return fitted, (f"default preset fitted to {manifest.name}: {'; '.join(why)}. Keys you set win; "
                    f"{turn_off} turns the fitting off")
