"""The evaluation suite on real digits: the metrics rank real data, baselines, noise, collapse and copies
the way they must, and the same seed gives the same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genai_ray import storage
from genai_ray.data.reader import open_dataset
from genai_ray.evaluation.baselines import kde_sampler, real_floor
from genai_ray.evaluation.evaluate import Sampler, cheap_metrics, evaluate, reference, to_float
from genai_ray.evaluation.metrics import features
from tests.helpers import EVAL_CFG as CFG
from tests.helpers import prepare_digits


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory):
    """Prepared digits (1618 train / 179 holdout) with its feature classifier trained once."""
    ds = open_dataset(prepare_digits(str(tmp_path_factory.mktemp("eval") / "digits")))
    reference(ds, "holdout", CFG)
    return ds


@pytest.fixture(scope="session")
def train_xy(digits):
    return digits.read_numpy("train")


def test_feature_classifier_is_cached_beside_the_manifest(digits) -> None:
    folder = features.cache_folder(digits, CFG)
    assert folder.startswith(storage.join(digits.uri, "features"))
    info = json.loads(storage.read_bytes(storage.join(folder, features.INFO_FILE)))
    assert info["kind"] == "classifier"
    assert info["manifest_sha256"] == digits.manifest.sha256()
    assert info["holdout_accuracy"] > 0.9
    assert info["epochs"] == CFG.classifier_epochs
    blob = storage.read_bytes(storage.join(folder, features.MODEL_FILE))
    assert storage.sha256_bytes(blob) == info["model_sha256"]


def test_real_is_far_better_than_noise(digits) -> None:
    real = evaluate(real_floor(digits, 400), digits, cfg=CFG)
    noise = evaluate(np.random.default_rng(0).uniform(size=(400, 8, 8, 1)), digits, cfg=CFG)
    assert real["eval/fd"] * 10 < noise["eval/fd"]
    assert real["eval/precision"] > noise["eval/precision"] + 0.3
    assert real["eval/recall"] > noise["eval/recall"] + 0.4
    assert real["eval/coverage"] > 0.95 > noise["eval/coverage"]
    assert real["eval/classifier_score"] > 9.0 > noise["eval/classifier_score"]
    x_hold, _ = digits.read_numpy("holdout")
    unseen = evaluate(to_float(x_hold), digits, cfg=CFG)  # realism of real images the model never saw
    assert unseen["eval/precision"] > 0.8 and unseen["eval/density"] > 0.7
    assert noise["eval/precision"] < 0.25 and noise["eval/density"] < 0.1


def salt(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Speckles a person sees at once: 15% of the pixels lit by up to +0.4."""
    rng = np.random.default_rng(seed)
    lit = rng.uniform(size=images.shape) < 0.15
    return np.clip(images + lit * rng.uniform(0.0, 0.4, images.shape), 0.0, 1.0).astype(np.float32)


def test_salt_noise_on_real_images_clearly_worsens_fd(digits) -> None:
    """The classifier's features barely see speckles (FD alone rose about 5%); FD's pixel-residual part must.

    Held-out images are scored against the training split, so the clean FD is the finite-sample floor, not 0.
    """
    x_hold = to_float(digits.read_numpy("holdout")[0])
    clean = evaluate(x_hold, digits, split="train", cfg=CFG)
    noisy = evaluate(salt(x_hold), digits, split="train", cfg=CFG)
    # The margin: speckled real digits must score at least twice the clean FD (they score about 4x); the
    # features-only FD, which the speckles barely move, is reported beside it.
    assert noisy["eval/fd"] > 2.0 * clean["eval/fd"], (clean, noisy)
    assert noisy["eval/fd_features"] < 1.5 * clean["eval/fd_features"]  # why the pixel part is needed
    off = evaluate(x_hold, digits, split="train", cfg=CFG.model_copy(update={"fd_pixel_weight": 0.0}))
    assert off["eval/fd"] == pytest.approx(clean["eval/fd_features"]) and "eval/fd_pixels" not in off


def test_mode_collapse_lowers_recall_and_class_coverage(digits, train_xy) -> None:
    x, y = train_xy
    full = evaluate(to_float(x[:600]), digits, cfg=CFG)
    collapsed = evaluate(to_float(x[y < 3][:600]), digits, cfg=CFG)  # three of ten classes
    assert collapsed["eval/recall"] < 0.5 * full["eval/recall"]
    assert collapsed["eval/class_coverage"] == pytest.approx(0.3)  # 3 of 10 classes: exact but for float rounding
    assert full["eval/class_coverage"] == 1.0
    assert collapsed["eval/class_balance"] < 0.4 < 0.9 < full["eval/class_balance"]
    assert collapsed["eval/precision"] > 0.8  # each image is still realistic


def test_copies_of_training_images_are_memorised_held_out_images_are_not(digits, train_xy) -> None:
    x, _ = train_xy
    copies = evaluate(to_float(x[:300]), digits, cfg=CFG)
    assert copies["eval/memorisation"] == 1.0 and copies["eval/nn_train_ratio"] < 1e-6
    x_hold, _ = digits.read_numpy("holdout")
    held = evaluate(to_float(x_hold), digits, cfg=CFG)
    assert held["eval/memorisation"] <= 0.02
    noisy = to_float(x[:300]) + np.random.default_rng(0).normal(0, 0.01, (300, 8, 8, 1))
    assert evaluate(noisy.astype(np.float32), digits, cfg=CFG)["eval/memorisation"] > 0.95


def test_kde_baseline_sits_between_real_and_noise_and_is_deterministic(digits) -> None:
    kde = kde_sampler(digits, seed=0)
    first = evaluate(kde, digits, n=400, seed=7, cfg=CFG)
    assert evaluate(kde, digits, n=400, seed=7, cfg=CFG) == first
    assert evaluate(kde_sampler(digits, seed=0), digits, n=400, seed=7, cfg=CFG) == first  # refit: same
    assert evaluate(kde, digits, n=400, seed=8, cfg=CFG)["eval/fd"] != first["eval/fd"]
    real = evaluate(real_floor(digits, 400), digits, cfg=CFG)
    assert real["eval/fd"] < first["eval/fd"] < 20
    assert first["eval/memorisation"] <= 0.02  # smoothed in PCA space: no copies


def test_features_reload_from_the_cache_identically(digits, train_xy) -> None:
    x, _ = train_xy
    before = evaluate(to_float(x[:300]), digits, cfg=CFG)
    features._LOADED.clear()  # force the safe_mode load from the dataset folder
    from genai_ray.evaluation import evaluate as evaluate_module

    evaluate_module._REFERENCES.clear()
    assert evaluate(to_float(x[:300]), digits, cfg=CFG) == before


def test_cheap_metrics_and_conditional_accuracy(digits, train_xy) -> None:
    x, y = train_xy
    by_class = [np.flatnonzero(y == c) for c in range(10)]

    def obeys(seeds: list[int], labels: np.ndarray | None) -> np.ndarray:
        """A 'generator' that returns a training image of the requested class."""
        assert labels is not None
        return to_float(x[[by_class[c][s % len(by_class[c])] for s, c in zip(seeds, labels, strict=True)]])

    def ignores(seeds: list[int], labels: np.ndarray | None) -> np.ndarray:
        return to_float(x[[s % len(x) for s in seeds]])

    def diverged(seeds: list[int], labels: np.ndarray | None) -> np.ndarray:
        return np.full((len(seeds), 8, 8, 1), np.nan, np.float32)

    probs = [0.1] * 10
    broken = cheap_metrics(diverged, digits.uri, n=100, cfg=CFG)
    assert all(np.isfinite(v) for v in broken.values()) and broken["eval/fd"] > 50  # bad, but comparable
    cheap = cheap_metrics(obeys, digits.uri, n=200, seed=0, class_probs=probs, cfg=CFG)
    assert set(cheap) == {"eval/fd", "eval/precision", "eval/recall"}
    assert cheap == cheap_metrics(obeys, digits.uri, n=200, seed=0, class_probs=probs, cfg=CFG)
    good = evaluate(Sampler(obeys, probs), digits, n=300, cfg=CFG)
    bad = evaluate(Sampler(ignores, probs), digits, n=300, cfg=CFG)
    assert good["eval/cond_acc"] > 0.95 and good["eval/cond_acc/3"] > 0.9
    assert bad["eval/cond_acc"] < 0.3


def test_unlabelled_dataset_uses_an_autoencoder(tmp_path, train_xy) -> None:
    from genai_ray.data.prepare import prepare
    from genai_ray.data.sources import open_source

    x, _ = train_xy
    np.savez(tmp_path / "plain.npz", x=x[..., 0])  # images only: no labels
    prepare(open_source(str(tmp_path / "plain.npz")), str(tmp_path / "plain"), name="plain", holdout=0.2,
            progress=False)
    ds = open_dataset(str(tmp_path / "plain"))
    assert not ds.manifest.labelled
    info = features.feature_model(ds, CFG).info
    assert info["kind"] == "autoencoder" and info["holdout_mse"] < 0.05
    real = evaluate(real_floor(ds, 300), ds, cfg=CFG)
    noise = evaluate(np.random.default_rng(0).uniform(size=(300, 8, 8, 1)), ds, cfg=CFG)
    assert real["eval/fd"] * 5 < noise["eval/fd"]
    assert real["eval/recall"] > noise["eval/recall"] + 0.4
    assert not any(k.startswith(("eval/class", "eval/cond_acc")) for k in real)  # no classes to judge
    assert "eval/features_holdout_mse" in real


def test_a_damaged_cache_is_retrained_not_trusted(tmp_path, train_xy) -> None:
    from genai_ray.evaluation.evaluate import prepare_features

    x, y = train_xy
    np.savez(tmp_path / "small.npz", x=x[:400, ..., 0], y=y[:400])
    from genai_ray.data.prepare import prepare
    from genai_ray.data.sources import open_source

    prepare(open_source(str(tmp_path / "small.npz")), str(tmp_path / "small"), name="small", progress=False)
    ds = open_dataset(str(tmp_path / "small"))
    cfg = CFG.model_copy(update={"classifier_epochs": 2})
    first = prepare_features(ds, cfg)
    folder = features.cache_folder(ds, cfg)
    assert features.cache_folder(ds, CFG) != folder  # other settings keep their own cache
    storage.write_bytes(storage.join(folder, features.MODEL_FILE), b"not a keras file")
    features._LOADED.clear()
    again = prepare_features(ds, cfg)  # sha256 mismatch: retrained, not loaded
    assert again["created_at"] >= first["created_at"]
    blob = storage.read_bytes(storage.join(folder, features.MODEL_FILE))
    assert storage.sha256_bytes(blob) == again["model_sha256"]


def test_in_memory_keras_generator_matches_its_package(digits, tmp_path) -> None:
    from genai_ray.evaluation.evaluate import keras_generate, package_sampler
    from genai_ray.package.format import load_package
    from tests.helpers import LATENT, toy_generator, toy_package

    uri = toy_package(str(tmp_path / "store"), dataset=digits, conditional=True)
    from_package = package_sampler(load_package(uri)).draw(100, 5)
    generate = keras_generate(toy_generator(conditional=True), LATENT, conditional=True)
    in_memory = Sampler(generate, [0.1] * 10).draw(100, 5)
    assert np.array_equal(from_package[1], in_memory[1])  # the same labels per seed
    # The same images: the same float32 weights, but the loaded model may order its reductions differently, a few
    # ulps of pixels in [0, 1] (~1e-7); a different seed, label or weight changes pixels by > 1e-2.
    assert np.allclose(from_package[0], in_memory[0], atol=1e-5)
    cheap = cheap_metrics(generate, digits.uri, n=150, class_probs=[0.1] * 10, cfg=CFG)
    assert cheap["eval/fd"] > 50 and cheap["eval/recall"] < 0.2  # an untrained generator is far from digits


def test_cheap_metrics_in_a_ray_worker_match_the_driver(digits, ray_local) -> None:
    """What rank 0 of a training run does: load the cached feature model in another process, same numbers."""
    from genai_ray.evaluation.evaluate import keras_generate, prepare_features
    from tests.helpers import LATENT, toy_generator

    prepare_features(digits.uri, CFG)  # the driver's job before workers start

    @ray_local.remote(num_cpus=1)
    def in_worker(uri: str) -> dict[str, float]:
        from genai_ray.evaluation.evaluate import cheap_metrics, keras_generate
        from tests.helpers import EVAL_CFG as CFG
        from tests.helpers import LATENT, toy_generator

        return cheap_metrics(keras_generate(toy_generator(False), LATENT, False), uri, n=120, cfg=CFG)

    remote = ray_local.get(in_worker.remote(digits.uri), timeout=300)
    local = cheap_metrics(keras_generate(toy_generator(False), LATENT, False), digits.uri, n=120, cfg=CFG)
    assert remote.keys() == local.keys()
    for key, value in local.items():
        # The same seeds and feature model; the worker's thread count may reorder float32 sums in the networks
        # (~1e-7 relative on features), which the float64 metrics carry through: rel=1e-5 is 100x that. A worker
        # that loaded another feature model or drew other samples is off by percent.
        assert remote[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
