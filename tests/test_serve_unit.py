"""Serving without HTTP: the pure batched generate, the model slot, configs and the Serve config files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from serve_helpers import Chromium, make_package

from genai_ray.config import ServeConfig
from genai_ray.errors import UserError
from genai_ray.package import load_package, per_image_seeds
from genai_ray.serve.app import check_consistency, load_serve_file, serve_config
from genai_ray.serve.slot import Job, ModelSlot, run_batch

CONFIGS = Path(__file__).resolve().parents[1] / "serve_configs"


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    store = str(tmp_path_factory.mktemp("serve-unit-store"))
    return {"store": store, "cond": make_package(store, "cond", "v0001", True, seed=1),
            "uncond": make_package(store, "uncond", "v0001", False, seed=2)}


def test_batched_generate_equals_unbatched_pixels(packages: dict[str, str]) -> None:
    package = load_package(packages["cond"])
    jobs = [Job(per_image_seeds(10, 3), 1), Job(per_image_seeds(500, 70), None), Job(per_image_seeds(7, 1), "two")]
    batched = run_batch(package, jobs)
    assert [r.batch_size for r in batched] == [3, 3, 3]
    for job, result in zip(jobs, batched, strict=True):
        alone = run_batch(package, [job])[0]
        assert alone.batch_size == 1
        np.testing.assert_array_equal(result.images, alone.images)  # bit-identical, not just close
        assert result.images.shape == (len(job.seeds), 8, 8, 1) and result.images.dtype == np.float32
    assert batched[0].labels == [1, 1, 1] and batched[2].labels == [2]
    # The package's own sampling agrees with the server path.
    images, _, _ = package.sample(3, seed=10, label=1)
    np.testing.assert_array_equal(batched[0].images, images)


def test_bad_label_fails_only_its_own_job(packages: dict[str, str]) -> None:
    package = load_package(packages["cond"])
    out = run_batch(package, [Job([1, 2], "nine"), Job([3], 0), Job([4], 3)])
    assert isinstance(out[0], UserError) and "nine" in str(out[0])
    assert not isinstance(out[1], UserError) and out[1].batch_size == 1
    assert isinstance(out[2], UserError) and "out of range" in str(out[2])
    only_bad = run_batch(load_package(packages["uncond"]), [Job([1], 0)])
    assert isinstance(only_bad[0], UserError) and "unconditional" in str(only_bad[0])


def test_slot_keeps_old_model_when_reload_fails_and_names_the_uri(packages: dict[str, str], tmp_path: Path) -> None:
    slot = ModelSlot()
    missing = str(tmp_path / "nowhere")
    slot.load(missing)
    with pytest.raises(RuntimeError, match=f"model {missing} failed to load"):
        slot.check_health()
    slot.load(packages["uncond"])
    slot.check_health()
    assert slot.package.meta.name == "uncond" and slot.error is None
    slot.load(missing)
    slot.check_health()  # still serving the old model
    assert slot.package.meta.name == "uncond" and missing in slot.error


def test_serve_args_are_validated_through_the_config_model() -> None:
    assert serve_config({"max_n": 8}).max_n == 8
    with pytest.raises(UserError, match="serve.max_nn: unknown key"):
        serve_config({"max_nn": 8})
    with pytest.raises(UserError, match="serve.max_batch_size"):
        serve_config({"max_batch_size": 0})


@pytest.mark.parametrize("name", ["local.yaml", "production.yaml"])
def test_serve_config_files_parse_and_are_consistent(name: str) -> None:
    spec = load_serve_file(CONFIGS / name)
    dep = spec.deployment
    auto = dep["autoscaling_config"]
    assert dep["max_ongoing_requests"] >= spec.args.max_batch_size
    assert auto["min_replicas"] <= auto["max_replicas"]
    assert auto["target_ongoing_requests"] <= dep["max_ongoing_requests"]
    assert dep["max_queued_requests"] > 0 and dep["user_config"]["model_uri"] == "champion"
    if name == "production.yaml":
        assert dep["ray_actor_options"]["num_gpus"] >= 1 and auto["max_replicas"] > auto["min_replicas"] == 1
    else:
        assert not dep["ray_actor_options"].get("num_gpus")


def test_inconsistent_serve_config_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load((CONFIGS / "production.yaml").read_text())
    data["applications"][0]["deployments"][0]["max_ongoing_requests"] = 8
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="max_ongoing_requests=8 is below args.max_batch_size=64"):
        load_serve_file(bad)
    data["applications"][0]["args"]["batch_size"] = 3
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="args.*batch_size: unknown key"):
        load_serve_file(bad)
    with pytest.raises(UserError, match="target_ongoing_requests=99 is above max_ongoing_requests=32"):
        check_consistency(ServeConfig(), {"max_ongoing_requests": 32,
                                          "autoscaling_config": {"target_ongoing_requests": 99}}, "x")


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              ci: str) -> None:
    monkeypatch.setattr(Chromium, "BINARY", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on PATH either
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true and chromium is not installed"):
        Chromium.require()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        Chromium.require()
