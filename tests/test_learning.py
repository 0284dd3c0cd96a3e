"""Training learns: the exported generator of a short fixed-seed run on digits beats the untrained generator and
the KDE baseline on genai-ray's own evaluator (FD, the default eval config: 2,000 samples, seed 0).

The run is the fitted default preset (a conditional hinge MLP GAN, EMA, ADA translation) at 128 kimg with Adam's
rates raised from 2e-4 to 1e-3, the cheapest setting found that clears the KDE by a wide margin: at the preset's
own rates the FD crosses the KDE's only near 256 kimg; at 2e-3 it is no better than at 1e-3. It trains with the
same loop as Ray Train's workers and Tune's inline trials (``train/loop.py``), in this process and without Ray,
and is exported from its last checkpoint as ``genai-ray train`` exports one.

Measured through this file's ``train_and_score`` on the shared 2-core machine at ``28912fd``, training seeds 0-4
(the evaluator's seed stays 0, so the KDE's FD is the same for every training seed):

    training seed | trained (128 kimg) | untrained | KDE
    0             | 10.87              | 556.19    | 17.35
    1             | 11.11              | 560.63    | 17.35
    2             | 10.99              | 572.92    | 17.35
    3             | 11.65              | 535.38    | 17.35
    4             | 11.38              | 555.37    | 17.35

The trained FD sits at 0.63-0.67 of the KDE's and under 1/45 of the untrained generator's. The margins asserted,
trained < 0.8 x KDE and trained < untrained / 10, leave room for another machine's float rounding (in effect
another training seed) and for the KDE's own spread over sample seeds (BENCHMARKS.md: FD's feature part moves
by about 1 in 8), while a run that learned nothing, or stopped at 64 kimg (FD 21.7-25.8), fails. At 96 kimg the
trained FD was 13.9-14.9 (0.80-0.86 of the KDE's): too close to clear a margin, hence 128. Under pytest, whose
evaluator trained its feature model with other TensorFlow thread settings than the table's, seed 0 scored 10.79 /
555.24 / 17.25: about 1% apart. The test takes 100-190 s on the loaded machine, most of it training.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genai_ray.config import EvalConfig, build_config
from genai_ray.data.reader import open_dataset

pytestmark = pytest.mark.slow  # a whole (short) training run

KIMG = 128
RATES = 1e-3
KDE_MARGIN = 0.8  # trained FD < KDE_MARGIN x the KDE's FD
UNTRAINED_FACTOR = 10  # trained FD < the untrained generator's / UNTRAINED_FACTOR


def train_and_score(digits_uri: str, root: Path, seed: int) -> dict[str, float]:
    """Train the short run at ``seed``, export it, and return the FD of the exported package, of the same
    generator before its first step, and of the KDE baseline."""
    import ray.train

    from genai_ray.evaluation.baselines import kde_sampler
    from genai_ray.evaluation.evaluate import Sampler, evaluate, evaluate_package, keras_generate
    from genai_ray.package.export import export_checkpoint
    from genai_ray.package.format import load_package
    from genai_ray.train.defaults import fit_to_data
    from genai_ray.train.loop import MemoryInput, make_strategy, set_up, train
    from genai_ray.train.run import plan_run

    ds = open_dataset(digits_uri)
    fitted, _ = fit_to_data(ds.manifest)
    cfg = build_config(None, {"train": {"kimg": KIMG, "g_lr": RATES, "d_lr": RATES, "seed": seed}}, fitted=fitted)
    plan = plan_run(cfg, ds, str(root / "run"))
    session = set_up(cfg, plan, make_strategy(1), 0, None, exploit=False)
    untrained = Sampler(keras_generate(session.trainer.sampler, cfg.model.latent_dim, cfg.model.conditional),
                        plan.class_probs)
    scores = {"untrained": evaluate(untrained, ds, cfg=EvalConfig(), metrics=["fd"])["eval/fd"]}

    last = root / "last-checkpoint"

    def keep_last(metrics: dict, folder: str | None) -> None:
        if folder is not None:  # the loop deletes its folder after the sink: keep a copy of the latest
            shutil.rmtree(last, ignore_errors=True)
            shutil.copytree(folder, last)

    train(session, MemoryInput(ds.read_numpy("train"), cfg.train.seed, 0), keep_last, progress=False)
    assert int(session.trainer.step.numpy()) == plan.total_steps
    uri = export_checkpoint(ray.train.Checkpoint.from_directory(str(last)), cfg, ds, "learns", str(root / "store"),
                            {"kimg": KIMG})
    assert load_package(uri).meta.config["train"]["kimg"] == KIMG
    scores["trained"] = evaluate_package(uri, ds, EvalConfig(), write=False)["eval/fd"]
    scores["kde"] = evaluate(kde_sampler(ds), ds, cfg=EvalConfig(), metrics=["fd"])["eval/fd"]
    return scores


def test_short_training_beats_the_untrained_generator_and_the_kde(digits_uri: str, tmp_path: Path) -> None:
    fd = train_and_score(digits_uri, tmp_path, seed=0)
    print(f"FD: trained {fd['trained']:.2f}, untrained {fd['untrained']:.2f}, KDE {fd['kde']:.2f}")
    assert fd["trained"] < KDE_MARGIN * fd["kde"], fd
    assert fd["trained"] < fd["untrained"] / UNTRAINED_FACTOR, fd
