"""Quality on digits: the real floor, unseen real images, the KDE baseline and any model packages.

Prepares digits (default 10% holdout) in a temporary store, trains the feature classifier with the default
eval config, and scores each column on the held-out split with 2000 samples, seed 0.
Run: python -m bench.quality [--model PACKAGE_URI ...]
The quality bar (issue 5): a model beats KDE on FD, precision and recall, with memorisation <= 0.02.
"""

from __future__ import annotations

import argparse
import tempfile

from bench.common import machine, table

ROWS = ["fd", "precision", "recall", "density", "coverage", "memorisation", "nn_train_ratio", "classifier_score",
        "class_coverage", "class_balance", "cond_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="model package URI to add as a column")
    args = parser.parse_args()

    from genai_ray.config import EvalConfig
    from genai_ray.data.prepare import prepare
    from genai_ray.data.reader import open_dataset
    from genai_ray.data.sources import open_source
    from genai_ray.evaluation.baselines import kde_sampler, real_floor
    from genai_ray.evaluation.evaluate import check_package_fits, evaluate, package_sampler, reference, to_float
    from genai_ray.package.format import load_package

    cfg = EvalConfig()
    with tempfile.TemporaryDirectory() as tmp:
        prepare(open_source("digits"), f"{tmp}/digits", name="digits", progress=False)
        ds = open_dataset(f"{tmp}/digits")
        accuracy = reference(ds, "holdout", cfg).features.info["holdout_accuracy"]
        columns = {
            "real (floor)": evaluate(real_floor(ds, cfg.n_samples, cfg.seed), ds, cfg=cfg),
            "held-out (self)": evaluate(to_float(ds.read_numpy("holdout")[0]), ds, cfg=cfg),
            "KDE (PCA 15)": evaluate(kde_sampler(ds, cfg.seed), ds, cfg=cfg),
        }
        for uri in args.model:
            pkg = load_package(uri)
            check_package_fits(pkg.meta, ds)
            columns[f"{pkg.meta.name}/{pkg.meta.version}"] = evaluate(package_sampler(pkg), ds, cfg=cfg)
    print(f"quality on digits ({ds.manifest.train_count} train / {ds.manifest.holdout_count} holdout, "
          f"n={cfg.n_samples}, k={cfg.knn_k}, feature classifier held-out accuracy {accuracy:.4f}); "
          f"machine: {machine()}")
    rows = [[key, *(f"{c[f'eval/{key}']:.4f}" if f"eval/{key}" in c else "-" for c in columns.values())]
            for key in ROWS]
    print(table(["metric", *columns], rows))


if __name__ == "__main__":
    main()
