"""The default preset fitted to the dataset: family, widths, augmentation and kimg by image size, channels,
labels and count; printed with its reasons; an explicit preset or key still wins."""

from __future__ import annotations

import pytest

from genai_ray import storage
from genai_ray.cli import main
from genai_ray.config import build_config
from genai_ray.data.manifest import Manifest
from genai_ray.train.defaults import fit_to_data
from genai_ray.train.hardware import Hardware
from tests.helpers import prepare_digits


def manifest(shape: tuple[int, int, int], train: int, labelled: bool = True) -> Manifest:
    return Manifest(name="x", shape=shape, channels=shape[2], count=train + 10, train_count=train, holdout_count=10,
                    holdout_fraction=0.1, class_names=[str(i) for i in range(10)] if labelled else None, seed=0,
                    shards=[], source={}, created_at="now")


def fitted_config(m: Manifest, overrides: dict | None = None, hw: Hardware = Hardware(8, 0)):
    """The fitted config on an 8-core CPU node unless ``hw`` says otherwise, whatever machine runs the test."""
    return build_config(None, overrides or {}, fitted=fit_to_data(m, hw)[0])


def test_small_digits_get_the_tuned_mlp_with_augmentation_and_kimg() -> None:
    cfg = fitted_config(manifest((8, 8, 1), 807))
    assert (cfg.model.family, cfg.model.conditional, cfg.model.g_widths) == ("mlp", True, [256, 512])
    assert cfg.train.augment != "none" and cfg.train.kimg and cfg.train.epochs is None
    big = fitted_config(manifest((8, 8, 1), 50_000))
    assert big.train.augment == "none"  # enough images: no augmentation


def test_mnist_sized_images_get_a_longer_dense_run_without_mode_seeking_and_64px_colour_a_resnet() -> None:
    mnist, digits = fitted_config(manifest((28, 28, 1), 4500)), fitted_config(manifest((8, 8, 1), 4500))
    assert mnist.model.family == "mlp" and mnist.train.kimg > digits.train.kimg
    assert (mnist.train.mode_seeking, digits.train.mode_seeking) == (0.0, 0.2)
    assert mnist.train.workers == digits.train.workers == 1  # dense GANs: one worker
    photos = fitted_config(manifest((64, 64, 3), 20_000, labelled=False))
    assert (photos.model.family, photos.model.conditional, photos.model.base_channels) == ("resnet", False, 16)
    assert photos.train.loss == "rpgan"
    assert photos.train.workers == 2  # convolutions on 8 cores: the preset's data parallelism
    small = fitted_config(manifest((64, 64, 3), 20_000, labelled=False), hw=Hardware(2, 0))
    assert (small.train.workers, small.train.cpus_per_worker) == (1, 2.0)  # 2 cores: one worker's threads
    odd = fitted_config(manifest((48, 40, 3), 20_000))
    assert odd.model.family == "mlp"  # a DCGAN cannot make 48x40 images
    assert any("--image-size 32" in line for line in fit_to_data(manifest((48, 40, 3), 20_000))[1])


def test_keys_the_user_sets_win_over_the_fitting() -> None:
    cfg = fitted_config(manifest((64, 64, 3), 800), {"model": {"family": "mlp"}, "train": {"epochs": 3}})
    assert cfg.model.family == "mlp" and cfg.train.epochs == 3 and cfg.train.kimg is None
    assert cfg.train.ada_target == 0.6  # what the user did not set stays fitted


def test_train_prints_what_it_chose_and_why_unless_a_preset_is_named(tmp_path, capsys) -> None:
    store = str(tmp_path / "store")
    prepare_digits(storage.join(store, "datasets", "digits"))
    # a batch larger than the dataset is refused after the fitting is printed, before Ray starts: nothing trains
    assert main(["--store", store, "train", "--data", "digits", "--set", "train.global_batch=4096"]) == 2
    out = capsys.readouterr()
    assert "default preset fitted to digits: conditional=true (labelled); mlp" in out.out
    assert "ADA augmentation" in out.out and "kimg" in out.out
    assert main(["--store", store, "train", "--data", "digits", "--preset", "default",
                 "--set", "train.global_batch=4096"]) == 2
    assert "fitted" not in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3), (64, 64, 3), (100, 100, 1)])
def test_every_fitted_config_validates(shape) -> None:
    for count in (300, 5000, 100_000):
        for labelled in (True, False):
            fitted_config(manifest(shape, count, labelled))


def test_a_space_file_without_a_preset_is_fitted_to_the_dataset_and_its_keys_win(tmp_path, capsys) -> None:
    from genai_ray.tune.space import load_space

    store = str(tmp_path / "store")
    prepare_digits(storage.join(store, "datasets", "digits"))
    body = "base: {train: {epochs: 3, ada_target: 0.3}}\nparams:\n  train.g_lr: {loguniform: [1.0e-4, 1.0e-3]}\n"
    (tmp_path / "fitted.yaml").write_text(body)
    (tmp_path / "named.yaml").write_text("preset: default\n" + body)
    # nothing to resume is refused after the space is fitted and printed, before Ray starts
    for name, fitted in (("fitted", True), ("named", False)):
        args = ["--store", store, "tune", "--data", "digits", "--space", str(tmp_path / f"{name}.yaml"), "--resume"]
        assert main(args) == 2
        out = capsys.readouterr()
        assert ("default preset fitted to digits" in out.out) == fitted, out.out
        assert "nothing to resume" in out.err

    space = load_space(tmp_path / "fitted.yaml")
    digits = manifest((8, 8, 1), 1618)
    space.fitted = fit_to_data(digits)[0]
    cfg = space.config_for({"train.g_lr": 5e-4})
    assert cfg.model.conditional and cfg.train.augment == "translation"  # fitted: labelled, under 2,000 images
    assert cfg.train.ada_target == 0.3 and cfg.train.epochs == 3 and cfg.train.kimg is None  # the space's keys win
    assert cfg.train.g_lr == 5e-4
    named = load_space(tmp_path / "named.yaml")
    named.fitted = space.fitted  # ignored: the file names its preset
    assert named.config_for({}).train.augment == "none"  # the default preset as it is
