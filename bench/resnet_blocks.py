"""Train-step images/s of the resnet family's block options on this machine: plain blocks against R3GAN's inverted
bottleneck (``model.res_expansion``) and grouped convolutions (``model.res_group_channels``), with the DCGAN as
a reference. One process, the real ``GanTrainer`` with RpGAN + R1 + R2 (hinge for the DCGAN), random 32x32x3
images; the variants alternate within each round, so a shared machine's drift hits them alike.

Run: python -m bench.resnet_blocks [--side 32] [--base 32] [--batch 32] [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import machine, table

VARIANTS: dict[str, dict] = {
    "resnet plain": {"model": {"family": "resnet"}, "train": {"loss": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1}},
    "resnet expansion 2": {"model": {"family": "resnet", "res_expansion": 2},
                           "train": {"loss": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1}},
    "resnet groups of 16": {"model": {"family": "resnet", "res_group_channels": 16},
                            "train": {"loss": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1}},
    "resnet expansion 2 + groups of 16": {"model": {"family": "resnet", "res_expansion": 2, "res_group_channels": 16},
                                         "train": {"loss": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1}},
    "dcgan (hinge; no penalty)": {"model": {"family": "dcgan", "g_norm": "none", "d_norm": "spectral"},
                                  "train": {"loss": "hinge"}},
}


def build(name: str, side: int, base: int, batch: int):
    import numpy as np

    from genai_ray.config import build_config, deep_merge
    from genai_ray.gan.trainer import GanTrainer
    from genai_ray.train.input import make_dataset

    common = {"model": {"conditional": False, "base_channels": base, "latent_dim": 64},
              "train": {"global_batch": batch, "workers": 1, "ema_decay": 0.999, "mode_seeking": 0.0}}
    cfg = build_config("default", deep_merge(common, VARIANTS[name]))
    trainer = GanTrainer(cfg, (side, side, 3), 1)
    x = np.random.default_rng(0).integers(0, 256, (batch * 8, side, side, 3)).astype(np.uint8)
    it = iter(trainer.distribute(lambda b: make_dataset(x, np.zeros(len(x), np.int64), b, 0)))
    params = trainer.g.count_params() + trainer.d.count_params()
    return trainer, it, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--base", type=int, default=32, help="model.base_channels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="steps timed per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(VARIANTS)
    built = {}
    for name in names:  # build and trace every variant first: tracing is not a step
        began = time.perf_counter()
        trainer, it, params = build(name, args.side, args.base, args.batch)
        trainer.train_steps(it, args.steps)
        built[name] = (trainer, it, params, time.perf_counter() - began)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            trainer, it, _, _ = built[name]
            began = time.perf_counter()
            trainer.train_steps(it, args.steps)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - began))
    ref = statistics.median(rates[names[0]])
    rows = [[name, f"{built[name][2]:,}", f"{built[name][3]:.0f}", ", ".join(f"{r:.0f}" for r in rates[name]),
             f"{statistics.median(rates[name]):.0f}", f"{statistics.median(rates[name]) / ref:.2f}x"]
            for name in names]
    print(machine())
    print(f"{args.side}x{args.side}x3, base_channels {args.base}, batch {args.batch}, {args.steps} steps x "
          f"{args.rounds} rounds, interleaved")
    print(table(["variant", "G+D params", "build+trace s", "images/s per round", "median", f"vs {names[0]}"], rows))


if __name__ == "__main__":
    main()
