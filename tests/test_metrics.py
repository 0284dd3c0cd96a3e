"""The metric functions on synthetic features: each behaves as its definition says."""

from __future__ import annotations

import numpy as np
import pytest

from genai_ray.config import EvalConfig
from genai_ray.evaluation.metrics import METRICS, EvalInputs, compute
from genai_ray.evaluation.metrics.classifier_score import classifier_score
from genai_ray.evaluation.metrics.frechet import frechet_distance
from genai_ray.evaluation.metrics.memorisation import memorisation
from genai_ray.evaluation.metrics.prdc import coverage, density, kth_radius_sq, precision, recall


def blobs(n: int, centres: np.ndarray, seed: int, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, centres.shape[1]))


CENTRES = np.random.default_rng(42).standard_normal((10, 16)) * 4


def test_registry_names_every_metric() -> None:
    assert {"fd", "precision_recall", "density_coverage", "classifier_score", "class_coverage",
            "conditional_accuracy", "memorisation"} <= set(METRICS)


def test_frechet_zero_for_same_set_and_exact_for_a_shift() -> None:
    # float64 throughout: eigh of 8x8 covariances of size ~1 is exact to ~1e-15 (observed: 0, 7e-16 relative),
    # so 1e-8 leaves a huge margin, while a wrong formula (a missing trace or factor 2) is off by O(1).
    x = np.random.default_rng(0).standard_normal((500, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(8, dtype=np.float64)
    assert frechet_distance(x, x + shift) == pytest.approx(float((shift**2).sum()), rel=1e-8)
    y = np.random.default_rng(1).standard_normal((400, 8)) * 2
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-8)


def test_frechet_is_finite_with_dead_feature_units() -> None:
    x = np.random.default_rng(0).standard_normal((200, 6))
    x[:, :3] = 0.0  # dead ReLU units: singular covariance
    y = x + 0.01
    # The mean term alone, no NaN: the covariances are equal, so the trace terms cancel to float64 round-off
    # (observed 4e-16); 1e-10 is 1e-6 of the answer, and a sqrt of a negative round-off eigenvalue would be ~1e-8.
    assert frechet_distance(x, y) == pytest.approx(6 * 0.01**2, abs=1e-10)
    assert np.isfinite(frechet_distance(x, np.random.default_rng(2).standard_normal((300, 6))))


def pr(fake: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    return precision(fake, real, kth_radius_sq(real, k)), recall(fake, real, k)


def dc(fake: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    radii = kth_radius_sq(real, k)
    return density(fake, real, radii, k), coverage(fake, real, radii)


def test_precision_recall_separate_quality_from_variety() -> None:
    real = blobs(300, CENTRES, 0)
    p_same, r_same = pr(blobs(1000, CENTRES, 1), real)
    p_few, r_few = pr(blobs(1000, CENTRES[:3], 2), real)
    assert p_same > 0.7 and r_same > 0.7
    assert p_few > 0.7 and r_few < 0.4 * r_same  # realistic but collapsed: precision stays, recall drops
    assert pr(blobs(1000, CENTRES + 20.0, 3), real) == (0.0, 0.0)
    blurry = blobs(1000, CENTRES, 4, spread=1.5)  # right modes, too much noise
    p_blur, r_blur = pr(blurry, real)
    assert p_blur < 0.5 * p_same and r_blur > 0.7  # noise costs precision, not recall


def test_density_coverage() -> None:
    real = blobs(300, CENTRES, 0)
    d_same, c_same = dc(blobs(1000, CENTRES, 1), real)
    d_few, c_few = dc(blobs(1000, CENTRES[:3], 2), real)
    assert 0.7 < d_same < 1.3 and c_same > 0.95
    assert c_few < 0.4
    assert dc(blobs(500, CENTRES + 20.0, 3), real) == (0.0, 0.0)


def test_radii_are_blockwise_exact() -> None:
    x = np.random.default_rng(0).standard_normal((1300, 5))  # more rows than one distance block
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    # Default rtol 1e-5: the two differ only by float64 round-off of |a|^2 + |b|^2 - 2ab (~1e-15); a block
    # mistake (wrong rows, k off by one) changes radii by tens of percent.
    assert np.allclose(kth_radius_sq(x, 3), np.sort(d, axis=1)[:, 3])


def test_classifier_score_bounds() -> None:
    # rel=1e-6: the EPS=1e-12 inside the logs shifts the score by ~1e-11 relative; nothing else is inexact.
    k = 10
    confident_varied = np.eye(k)[np.arange(1000) % k]
    assert classifier_score(confident_varied) == pytest.approx(k, rel=1e-6)
    assert classifier_score(np.eye(k)[np.zeros(1000, int)]) == pytest.approx(1.0, rel=1e-6)
    assert classifier_score(np.full((100, k), 1.0 / k)) == pytest.approx(1.0, rel=1e-6)


def test_memorisation_calibrated_on_held_out() -> None:
    rng = np.random.default_rng(0)
    train, holdout, fresh = rng.uniform(size=(3, 500, 64))
    near_copies = train[:200] + rng.normal(0, 0.01, (200, 64))
    assert memorisation(train[:200], train, holdout, 0.05, 0.5)["memorisation"] == 1.0
    assert memorisation(near_copies, train, holdout, 0.05, 0.5)["memorisation"] == 1.0
    novel = memorisation(fresh, train, holdout, 0.05, 0.5)
    assert novel["memorisation"] <= 0.01
    # Fresh and held-out rows are draws of one distribution, so the ratio of their median NN distances is 1 up to
    # the sampling noise of two medians of 500 distances (about 1%; 1.004 with these seeds); copying gives ~0.
    assert novel["nn_train_ratio"] == pytest.approx(1.0, abs=0.05)


def _inputs(shares: np.ndarray, cond: np.ndarray | None, pred: np.ndarray) -> EvalInputs:
    k = len(shares)
    feats = np.random.default_rng(0).standard_normal((len(pred), 4))
    pixels = np.random.default_rng(1).uniform(size=(len(pred), 16))
    radii = np.ones(len(feats))
    return EvalInputs(fake=feats, real=feats, real_radii_sq=radii, manifold=feats, manifold_radii_sq=radii,
                      fake_probs=np.eye(k)[pred], cond_labels=cond,
                      fake_pixels=pixels, train_pixels=pixels + 1, holdout_pixels=pixels + 2,
                      class_names=[f"c{i}" for i in range(k)], train_class_probs=shares, cfg=EvalConfig())


def test_class_coverage_balance_and_conditional_accuracy() -> None:
    uniform = np.full(4, 0.25)
    balanced = _inputs(uniform, None, np.arange(400) % 4)
    out = compute(["class_coverage", "conditional_accuracy"], balanced)
    # Shares and accuracies are ratios of small counts: exact but for one float rounding, hence approx's default
    # rel=1e-6; a wrong count is off by at least 1/400.
    assert out["eval/class_coverage"] == 1.0 and out["eval/class_balance"] == pytest.approx(1.0)
    assert "eval/cond_acc" not in out  # unconditional samples: nothing to check
    collapsed = compute(["class_coverage"], _inputs(uniform, None, np.zeros(400, int)))
    assert collapsed["eval/class_coverage"] == 0.25
    assert collapsed["eval/class_balance"] == pytest.approx(0.25)
    assert collapsed["eval/class_share/c0"] == 1.0
    cond = np.arange(400) % 4
    pred = np.where(cond == 3, 0, cond)  # class 3 is drawn as class 0
    acc = compute(["conditional_accuracy"], _inputs(uniform, cond, pred))
    assert acc["eval/cond_acc"] == pytest.approx(0.75)
    assert acc["eval/cond_acc/c3"] == 0.0 and acc["eval/cond_acc/c1"] == 1.0


def test_nearest_training_image_is_exact_across_blocks_and_dtypes() -> None:
    from genai_ray.evaluation.metrics.memorisation import SUPPORT_BLOCK, nn_distance

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (SUPPORT_BLOCK + 700, 12), dtype=np.uint8)  # two support blocks, uint8
    queries = rng.uniform(size=(600, 12))
    exact = np.sqrt(((queries[:, None, :] - train[None, :, :] / 255.0) ** 2).sum(-1).min(axis=1))
    # Default rtol 1e-5: both are float64; the blocked |a|^2 + |b|^2 - 2ab form loses ~1e-15 to cancellation.
    assert np.allclose(nn_distance(queries, train), exact)
    # A copy's squared distance cancels to ~1e-15, whose sqrt is ~5e-8: atol=1e-6 is 20x that, and the nearest
    # other row is > 0.1 away.
    assert np.allclose(nn_distance(train[-5:] / 255.0, train), 0.0, atol=1e-6)  # a copy from the last block
