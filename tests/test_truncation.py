"""Truncation at sampling: psi 0 gives each label's mean sample, psi 1 changes nothing, and psi outside [0, 1]
is one line and exit 2 in ``generate`` and ``evaluate``."""

from __future__ import annotations

import numpy as np
import pytest

from genai_ray import storage
from genai_ray.cli import main
from genai_ray.data.reader import open_dataset
from genai_ray.package.format import load_package, read_meta
from tests.helpers import prepare_digits, toy_package


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("truncation") / "store")
    ds = open_dataset(prepare_digits(storage.join(root, "datasets", "digits")))
    toy_package(root, dataset=ds, conditional=True)
    return root


def test_psi_zero_gives_the_mean_sample_per_label_and_psi_one_changes_nothing(store: str) -> None:
    pkg = load_package(storage.join(store, "models", "toy", "v0001"))
    seeds = list(range(12))
    labels = np.asarray([3] * 6 + [7] * 6)
    mean = pkg.generate(seeds, labels, truncation_psi=0.0)
    np.testing.assert_array_equal(mean[:6], np.repeat(mean[:1], 6, axis=0))  # every seed: label 3's mean sample
    np.testing.assert_array_equal(mean[6:], np.repeat(mean[6:7], 6, axis=0))
    assert not np.allclose(mean[0], mean[6]), "the two labels' mean samples should differ"
    plain = pkg.generate(seeds, labels)
    np.testing.assert_array_equal(pkg.generate(seeds, labels, truncation_psi=1.0), plain)
    half = pkg.generate(seeds, labels, truncation_psi=0.5)
    spread = lambda x: float(x[:6].std(axis=0).mean())  # noqa: E731 - per-pixel spread over seeds of one label
    assert spread(mean) < 1e-6 < spread(half) < spread(plain)  # identical up to float rounding


def test_generate_and_evaluate_take_truncation_psi(store: str, tmp_path, capsys) -> None:
    out = tmp_path / "mean.npy"
    assert main(["--store", store, "generate", "--model", "toy", "--n", "4", "--label", "2",
                 "--truncation-psi", "0", "--out", str(out)]) == 0
    images = np.load(out)
    np.testing.assert_array_equal(images, np.repeat(images[:1], 4, axis=0))
    capsys.readouterr()
    assert main(["--store", store, "evaluate", "--model", "toy", "--n", "100", "--truncation-psi", "0.5",
                 "--set", "eval.classifier_epochs=2"]) == 0
    assert read_meta(storage.join(store, "models", "toy", "v0001")).metrics["eval/truncation_psi"] == 0.5


@pytest.mark.parametrize("args", [
    ["generate", "--model", "toy", "--out", "x.png", "--truncation-psi", "1.5"],
    ["evaluate", "--model", "toy", "--truncation-psi", "-0.1"],
])
def test_psi_outside_zero_one_is_one_line_and_exit_2(store: str, capsys, args: list[str]) -> None:
    assert main(["--store", store, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "truncation_psi" in err and "outside [0, 1]" in err and "\n" not in err
