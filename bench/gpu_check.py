"""GPU path check: DCGAN at 64x64 on procedural shapes, float32 vs mixed precision, on one GPU.

Prints images/s and peak GPU memory for each. Exits 1 with a clear message when no GPU is visible
(install the GPU extra: pip install -e '.[gpu]').

    python -m bench.gpu_check [--steps 200] [--batch 256]
"""

from __future__ import annotations

import argparse
import sys
import time


def run(mixed: bool, steps: int, batch: int) -> tuple[float, float]:
    """(images/s, peak GPU MiB) for one configuration, tracing excluded."""
    import tensorflow as tf

    from genai_ray.config import build_config
    from genai_ray.data.sources import render_shapes
    from genai_ray.gan.trainer import GanTrainer
    from genai_ray.train.input import make_dataset

    cfg = build_config("gpu", {"train": {"global_batch": batch, "mixed_precision": mixed, "workers": 1,
                                         "steps_per_call": 20}})
    data = render_shapes(4096, 64, seed=0)
    trainer = GanTrainer(cfg, (64, 64, 3), 4)
    it = iter(trainer.distribute(lambda b: make_dataset(data.images, data.labels, b, 0)))
    trainer.train_steps(it, cfg.train.steps_per_call)  # trace and warm up
    tf.config.experimental.reset_memory_stats("GPU:0")
    began = time.perf_counter()
    done = 0
    while done < steps:
        losses = trainer.train_steps(it, cfg.train.steps_per_call)
        done += cfg.train.steps_per_call
    seconds = time.perf_counter() - began
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    assert losses.d == losses.d, "the discriminator loss is NaN"
    return done * batch / seconds, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("gpu_check: no GPU visible to TensorFlow (tensorflow-cpu or no CUDA driver); run it on a GPU node "
              "with pip install -e '.[gpu]'", file=sys.stderr)
        return 1
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    print(f"device: {name}; tensorflow {tf.__version__}; dcgan 64x64x3, global batch {args.batch}, {args.steps} steps")
    print(f"{'precision':<16}{'images/s':>12}{'peak MiB':>12}")
    for mixed in (False, True):
        rate, peak = run(mixed, args.steps, args.batch)
        print(f"{'mixed_float16' if mixed else 'float32':<16}{rate:>12,.0f}{peak:>12,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
