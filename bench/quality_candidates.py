"""Screen training settings for quality: each candidate trains the real ``GanTrainer`` in this process (one
replica, no Ray) for a number of thousand images shown (kimg) and is scored by the real evaluator.

One process, so candidates are cheap to compare side by side; a 2-worker Ray run makes the same updates up to
float rounding (the replica-equivalence test), so what wins here transfers.
Run: python -m bench.quality_candidates DATASET_URI --kimg 200,400 --cand 'name={"train": {...}}' ...
"""

from __future__ import annotations

import argparse
import json
import time

ROWS = ["fd", "fd_pixels", "precision", "recall", "memorisation"]


def train_and_score(ds, overrides: dict, kimgs: list[float], preset: str | None, eval_n: int):
    """Train one candidate and score it each time it reaches one of ``kimgs``: yields (kimg, scores)."""
    from genai_ray.config import build_config
    from genai_ray.evaluation.evaluate import Sampler, evaluate, keras_generate
    from genai_ray.gan.trainer import GanTrainer
    from genai_ray.package.export import class_probs
    from genai_ray.train.input import make_dataset

    cfg = build_config(preset, overrides)
    t = cfg.train
    m = ds.manifest
    trainer = GanTrainer(cfg, tuple(m.shape), max(m.num_classes, 1))
    x, y = ds.read_numpy("train")
    it = iter(trainer.distribute(lambda b: make_dataset(x, y, b, t.seed)))
    gen = keras_generate(trainer.sampler, cfg.model.latent_dim, cfg.model.conditional)
    probs = class_probs(ds) if cfg.model.conditional else None
    seconds, done = 0.0, 0
    for kimg in sorted(kimgs):
        steps = max(1, round(kimg * 1000 / t.global_batch))
        began = time.perf_counter()
        while done < steps:
            n = min(200, steps - done)
            trainer.train_steps(it, n)
            done += n
        seconds += time.perf_counter() - began  # training only: scoring is left out
        out = evaluate(Sampler(gen, probs), ds, n=eval_n)
        out["train_s"] = seconds
        out.update({f"stat/{k}": v for k, v in trainer.augment_stats().items()})
        yield kimg, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--kimg", required=True, help="kimg to score at, comma-separated: one run, scored at each")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--n", type=int, default=2000, help="evaluation samples")
    parser.add_argument("--cand", action="append", default=[], metavar='NAME={"train": {...}}')
    args = parser.parse_args()

    from genai_ray.data.reader import open_dataset

    ds = open_dataset(args.dataset)
    for cand in args.cand:
        name, raw = cand.split("=", 1)
        kimgs = [float(k) for k in args.kimg.split(",")]
        for kimg, res in train_and_score(ds, json.loads(raw), kimgs, args.preset, args.n):
            cells = "  ".join(f"{k} {res[f'eval/{k}']:.4f}" for k in ROWS)
            extra = "  ".join(f"{k[5:]} {v:.3f}" for k, v in res.items() if k.startswith("stat/"))
            print(f"{name:24s} {kimg:6g} kimg  {cells}  {extra}  train {res['train_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
