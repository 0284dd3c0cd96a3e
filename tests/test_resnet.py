"""The residual family: sizes, channels, conditioning, identity-at-init blocks, safe_mode round trips, one trained
tick with RpGAN + R1 + R2 at every size, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from genai_ray.config import build_config
from genai_ray.errors import UserError
from genai_ray.gan import resnet

SIDES = [8, 28, 32, 64]
CASES = [(side, c, cond) for side in SIDES for c in (1, 3) for cond in (False, True)]
TINY = {"family": "resnet", "base_channels": 4, "latent_dim": 8}


def _cfg(model: dict | None = None, train: dict | None = None):
    return build_config("tiny", {"model": {**TINY, **(model or {})}, "train": {"global_batch": 4, "workers": 1,
                                                                               **(train or {})}})


def _ids(case) -> str:
    side, c, cond = case
    return f"{side}px-{c}ch-{'cond' if cond else 'uncond'}"


# test-fast keeps two corners of the matrix (the colour default's shape, and the smallest greyscale one); the
# other 14 cases of each matrix test run in `make test`.
FAST_CASES = {(32, 3, True), (8, 1, False)}
MATRIX = [pytest.param(case, id=_ids(case), marks=() if case in FAST_CASES else pytest.mark.slow) for case in CASES]


@pytest.mark.parametrize("case", MATRIX)
def test_shapes_and_safe_mode_round_trip(case, tmp_path):
    import keras

    side, c, cond = case
    cfg = _cfg({"conditional": cond}).model
    g = resnet.build_generator(cfg, (side, side, c), 10)
    d = resnet.build_discriminator(cfg, (side, side, c), 10)
    z = np.random.default_rng(0).standard_normal((2, cfg.latent_dim)).astype(np.float32)
    labels = np.array([1, 7], np.int32)
    x = np.asarray(g([z, labels] if cond else z, training=False))
    assert x.shape == (2, side, side, c) and x.dtype == np.float32 and np.abs(x).max() <= 1.0
    logits = np.asarray(d([x, labels] if cond else x, training=False))
    assert logits.shape == (2, 1) and logits.dtype == np.float32
    g.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras", safe_mode=True, compile=False)
    np.testing.assert_array_equal(np.asarray(loaded([z, labels] if cond else z, training=False)), x)


def test_a_resnet_generator_package_round_trips_through_safe_mode_loading(tmp_path):
    """genai_ray/package.py loads generators with safe_mode=True and no custom objects: only standard layers pass."""
    from datetime import UTC, datetime

    from genai_ray.package.format import latents, load_package, write_package

    cfg = _cfg({"conditional": True, "latent_dim": 8, "res_expansion": 2, "res_group_channels": 4})
    g = resnet.build_generator(cfg.model, (32, 32, 3), 10)
    uri = str(tmp_path / "models" / "resnet" / "v0001")
    write_package(uri, g, {"name": "resnet", "version": "v0001", "image_shape": (32, 32, 3), "latent_dim": 8,
                           "conditional": True, "class_names": [str(i) for i in range(10)],
                           "class_probs": [0.1] * 10, "dataset_uri": "memory://photos", "dataset_sha256": "0" * 64,
                           "config": cfg.model_dump(mode="json"), "metrics": {},
                           "created_at": datetime.now(UTC).isoformat()}, None)
    images, seeds, labels = load_package(uri).sample(3, seed=5, label="2")
    expected = np.asarray(g([latents(seeds, 8), np.full(3, 2, np.int32)], training=False))
    # the same weights through another traced graph: ulps of [0, 1] pixels; another latent moves them by > 1e-2
    np.testing.assert_allclose(images, (expected + 1) / 2, atol=1e-6)


def test_networks_use_resampling_not_transposed_convs_or_normalisation():
    from keras import layers

    cfg = _cfg({"g_norm": "batch", "d_norm": "spectral"}).model  # not the resnet's: it has no normalisation
    g = resnet.build_generator(cfg, (32, 32, 3), 1)
    d = resnet.build_discriminator(cfg, (32, 32, 3), 1)
    kinds = {type(layer) for net in (g, d) for layer in net.layers}
    banned = (layers.Conv2DTranspose, layers.BatchNormalization, layers.LayerNormalization,
              layers.SpectralNormalization)
    assert not any(issubclass(k, banned) for k in kinds), kinds
    ups = [layer for layer in g.layers if isinstance(layer, layers.UpSampling2D)]
    assert [u.output.shape[1] for u in ups] == [8, 16, 32] and all(u.interpolation == "bilinear" for u in ups)
    pools = [layer.output.shape[1] for layer in d.layers if isinstance(layer, layers.AveragePooling2D)]
    assert pools == [16, 8, 4]


@pytest.mark.parametrize("net", ["g", "d"])
def test_every_residual_branch_starts_at_zero_so_blocks_start_as_the_identity(net):
    """Fixup/R3GAN: with no normalisation, a deep residual net keeps its activations' scale at init only because
    every branch adds nothing yet."""
    import keras
    from keras import layers

    cfg = _cfg({"res_blocks": 2, "conditional": True}).model
    build = resnet.build_generator if net == "g" else resnet.build_discriminator
    model = build(cfg, (16, 16, 3), 10)
    adds = [layer for layer in model.layers if isinstance(layer, layers.Add) and layer.name != "logits"]
    assert len(adds) == 2 * 3  # 2 blocks at each of 4, 8, 16 px
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, cfg.latent_dim)).astype(np.float32) if net == "g"
              else rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32), np.array([3, 5], np.int32)]
    for add in adds:
        trunk, branch = keras.Model(model.inputs, add.input)(inputs, training=False)
        assert np.abs(np.asarray(trunk)).max() > 1e-3, "the trunk carries the signal"
        np.testing.assert_array_equal(np.asarray(branch), 0.0)


def test_grouped_convs_and_inverted_bottlenecks_follow_their_keys():
    from keras import layers

    cfg = _cfg({"res_expansion": 2, "res_group_channels": 4}).model
    g = resnet.build_generator(cfg, (8, 8, 3), 1)
    convs = [layer for layer in g.layers if isinstance(layer, layers.Conv2D) and layer.kernel_size == (3, 3)]
    # channels 8 at 4x4 and 4 at 8x8; middles 16 and 8; groups of 4 channels
    assert [(c.filters, c.groups) for c in convs] == [(16, 4), (8, 2)]
    plain = resnet.build_generator(_cfg().model, (8, 8, 3), 1)
    assert all(c.groups == 1 for c in plain.layers if isinstance(c, layers.Conv2D))


def _one_tick(side: int, c: int, cond: bool, **model) -> tuple:
    from genai_ray.gan.trainer import GanTrainer
    from genai_ray.train.input import make_dataset

    cfg = _cfg({"conditional": cond, **model},
               {"loss": "rpgan", "r1_gamma": 1.0, "r2_gamma": 1.0, "augment": "translation", "augment_p": 0.5})
    trainer = GanTrainer(cfg, (side, side, c), 10)
    before = [w.copy() for w in trainer.g.get_weights()]
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (8, side, side, c)).astype(np.uint8), rng.integers(0, 10, 8)
    losses = trainer.train_steps(iter(trainer.distribute(lambda b: make_dataset(x, y, b, 0))), 1)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(before, trainer.g.get_weights(), strict=True))
    return trainer, losses, moved


@pytest.mark.parametrize("case", MATRIX)  # 2-5 s each on an idle 2-core machine (tiny widths, batch 4)
def test_trains_one_tick_with_rpgan_r1_and_r2(case):
    trainer, losses, moved = _one_tick(*case)
    assert np.isfinite(losses.d) and np.isfinite(losses.g)
    # At init D's logits are near 0 on everything, so both RpGAN losses start near softplus(0) = ln 2 (+ penalties).
    assert 0.3 < losses.g < 1.5
    assert moved > 1e-4, "G did not move: Adam's first step moves weights by about the learning rate, 2e-4"
    assert int(trainer.step.numpy()) == 1


def test_grouped_bottleneck_blocks_train_with_both_penalties():
    """Grouped convs run through XLA on CPU (Keras' workaround); R1 and R2 differentiate through them twice."""
    _, losses, moved = _one_tick(8, 3, True, res_expansion=2, res_group_channels=4)
    assert np.isfinite(losses.d) and moved > 1e-4


def test_refuses_sizes_it_cannot_make_and_lists_the_ones_it_can():
    with pytest.raises(UserError, match=r"model.family=resnet makes square images of s\*2\^k pixels \(s in 4\.\.7, "
                                        r"k >= 1: 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, \.\.\.\), but "
                                        r"the dataset is 18x18"):
        resnet.check_image_shape((18, 18, 1))
    with pytest.raises(UserError, match="1 or 3 channels"):
        resnet.check_image_shape((32, 32, 4))


def test_group_width_must_divide_the_blocks_middle_width():
    with pytest.raises(UserError, match=r"model.res_group_channels=3 must divide .* = 8"):
        _cfg({"base_channels": 4, "res_expansion": 2, "res_group_channels": 3})
    assert _cfg({"base_channels": 4, "res_expansion": 2, "res_group_channels": 8}).model.res_group_channels == 8


@pytest.mark.slow  # a Ray Train run per worker count
@pytest.mark.timeout(900)
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_train_run_on_colour_shapes_exports_a_package_that_loads_in_safe_mode(workers, ray_local, tmp_path):
    """R3GAN's recipe end to end on 1 and 2 Ray Train workers (their first updates agree: test_gan_trainer.py's
    replica test); the exported generator loads with safe_mode=True (load_package) and makes colour images."""
    from genai_ray import storage
    from genai_ray.data.prepare import prepare
    from genai_ray.data.sources import shapes_source
    from genai_ray.package.format import load_package
    from genai_ray.train.run import fit

    store = str(tmp_path / "store")
    prepare(shapes_source(160, 16, 0), storage.join(store, "datasets", "shapes16"), name="shapes16", progress=False)
    cfg = _cfg({"conditional": True}, {"loss": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1, "workers": workers,
                                      "global_batch": 16, "epochs": 1, "keep_checkpoints": 1})
    result = fit(cfg, "shapes16", name=f"resnet{workers}", store=store)
    assert result.epochs == 1 and np.isfinite(result.metrics["loss/d"]) and np.isfinite(result.metrics["loss/g"])
    package = load_package(result.package_uri)
    assert package.meta.config["model"]["family"] == "resnet" and package.meta.training["workers"] == workers
    images, _, labels = package.sample(4, seed=0)
    assert images.shape == (4, 16, 16, 3) and labels is not None
    assert images.std() > 0  # a generator that outputs a constant (dead) image would pass the shape check
