"""Screen training settings for quality: each candidate trains the real ``GanTrainer`` in this process (one
replica, no Ray) for a number of thousand images shown (kimg) and is scored by the real evaluator.

One process, so candidates are cheap to compare side by side; a 2-worker Ray run makes the same updates up to
float rounding (the replica-equivalence test), so what wins here transfers.
Run: python -m bench.quality_candidates DATASET_URI --kimg 200,400 --cand 'name={"train": {...}}' ...
or, at equal CPU time: taskset -c 0 python -m bench.quality_candidates DATASET_URI --cpu-minutes 4,8 --seed 0 ...
"""

from __future__ import annotations

import argparse
import json
import time

ROWS = ["fd", "fd_pixels", "precision", "recall", "memorisation"]
CPU_CHUNK = 10  # steps between looks at the CPU clock


def train_and_score(ds, overrides: dict, marks: list[float], preset: str | None, eval_n: int,
                    clock: str = "kimg", fitted: dict | None = None):
    """Train one candidate and score it each time it reaches one of ``marks``: kimg shown, or (``clock="cpu"``)
    minutes of this process's CPU time spent training, the fair budget between families whose steps cost
    differently. Yields (mark, scores)."""
    from genai_ray.config import build_config
    from genai_ray.evaluation.evaluate import Sampler, evaluate, keras_generate
    from genai_ray.gan.trainer import GanTrainer
    from genai_ray.package.export import class_probs
    from genai_ray.train.input import make_dataset

    cfg = build_config(preset, overrides, fitted=fitted)
    t = cfg.train
    m = ds.manifest
    trainer = GanTrainer(cfg, tuple(m.shape), max(m.num_classes, 1))
    x, y = ds.read_numpy("train")
    it = iter(trainer.distribute(lambda b: make_dataset(x, y, b, t.seed)))
    gen = keras_generate(trainer.sampler, cfg.model.latent_dim, cfg.model.conditional)
    probs = class_probs(ds) if cfg.model.conditional else None
    seconds, cpu, done = 0.0, 0.0, 0
    for mark in sorted(marks):
        began, began_cpu = time.perf_counter(), time.process_time()
        if clock == "kimg":
            steps = max(1, round(mark * 1000 / t.global_batch))
            while done < steps:
                n = min(200, steps - done)
                trainer.train_steps(it, n)
                done += n
        else:
            while cpu + time.process_time() - began_cpu < mark * 60:
                trainer.train_steps(it, CPU_CHUNK)
                done += CPU_CHUNK
        seconds += time.perf_counter() - began  # training only: scoring is left out
        cpu += time.process_time() - began_cpu
        out = evaluate(Sampler(gen, probs), ds, n=eval_n)
        out.update(train_s=seconds, cpu_s=cpu, kimg=done * t.global_batch / 1000)
        out.update({f"stat/{k}": v for k, v in trainer.augment_stats().items()})
        yield mark, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    marks = parser.add_mutually_exclusive_group(required=True)
    marks.add_argument("--kimg", help="kimg to score at, comma-separated: one run, scored at each")
    marks.add_argument("--cpu-minutes", help="minutes of CPU time spent training to score at, comma-separated (run "
                       "each candidate in its own process, e.g. pinned to one core with taskset)")
    parser.add_argument("--fitted", action="store_true", help="start from the default fitted to the dataset and this "
                        "machine (what `genai-ray train` picks without a preset), the candidate's keys on top")
    parser.add_argument("--seed", type=int, action="append", help="training seeds (repeatable; default: the config's)")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--n", type=int, default=2000, help="evaluation samples")
    parser.add_argument("--cand", action="append", default=[], metavar='NAME={"train": {...}}')
    args = parser.parse_args()

    from genai_ray.data.reader import open_dataset
    from genai_ray.train.defaults import fit_to_data

    ds = open_dataset(args.dataset)
    clock = "kimg" if args.kimg else "cpu"
    fitted = fit_to_data(ds.manifest)[0] if args.fitted else None
    marks = [float(k) for k in (args.kimg or args.cpu_minutes).split(",")]
    for cand in args.cand:
        name, raw = cand.split("=", 1)
        for seed in args.seed or [None]:
            overrides = json.loads(raw)
            if seed is not None:
                overrides.setdefault("train", {})["seed"] = seed
            label = name if seed is None else f"{name} s{seed}"
            for _, res in train_and_score(ds, overrides, marks, args.preset, args.n, clock, fitted):
                cells = "  ".join(f"{k} {res[f'eval/{k}']:.4f}" for k in ROWS)
                extra = "  ".join(f"{k[5:]} {v:.3f}" for k, v in res.items() if k.startswith("stat/"))
                print(f"{label:24s} {res['kimg']:7.1f} kimg  {cells}  {extra}  train {res['train_s']:.0f} s "
                      f"(cpu {res['cpu_s'] / 60:.1f} min)", flush=True)

if __name__ == "__main__":
    main()
