"""Serving without HTTP: the pure batched generate, the model slot, configs and the Serve config files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from genai_ray.config import ServeConfig
from genai_ray.errors import UserError
from genai_ray.package.format import load_package, per_image_seeds
from genai_ray.serve.app import check_consistency, load_serve_file, serve_config
from genai_ray.serve.slot import Job, ModelSlot, run_batch
from tests.serve_helpers import Chromium, make_package

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
    # The reference resolves once per build; no replica resolves it on its own (a user_config reference would be).
    assert dep["max_queued_requests"] > 0 and spec.args.model_uri == "champion" and "user_config" not in dep
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


@pytest.mark.parametrize("label", ["²", "٣", "9" * 5000, "-", "1.0", " 1"])
def test_odd_label_strings_are_user_errors(packages: dict[str, str], label: str) -> None:
    """``"²".isdigit()`` is True and ``int("²")`` raises; 5,000 digits pass isdigit and exceed int()'s limit."""
    package = load_package(packages["cond"])
    with pytest.raises(UserError, match="unknown label"):
        package.resolve_label(label)
    assert package.resolve_label("2") == 2 and package.resolve_label("two") == 2


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_any_error_preparing_one_job_fails_only_that_job(packages: dict[str, str], tmp_path: Path) -> None:
    """A package whose class proportions are all zero cannot sample labels (numpy raises ValueError, not a
    UserError): the unlabelled job fails alone, and its labelled batch-mates still get their images."""
    import json

    from genai_ray.package.format import META_FILE

    uri = make_package(str(tmp_path), "cond", "v0001", True, seed=1)
    meta = json.loads(Path(uri, META_FILE).read_text())
    meta["class_probs"] = [0.0, 0.0, 0.0]
    Path(uri, META_FILE).write_text(json.dumps(meta))
    package = load_package(uri)
    out = run_batch(package, [Job([1, 2], 0), Job([3], None), Job([4], "two")])
    assert isinstance(out[1], UserError) and "cannot be used" in str(out[1])
    assert out[0].labels == [0, 0] and out[2].labels == [2] and out[0].batch_size == 2
    np.testing.assert_array_equal(out[2].images, run_batch(package, [Job([4], "two")])[0].images)


def test_truncation_psi_per_job_keeps_batched_pixels(packages: dict[str, str]) -> None:
    package = load_package(packages["cond"])
    jobs = [Job([5, 6], 1, 0.5), Job([7], 1, 1.0), Job([8], None, 0.0), Job([9], 2, 0.5)]
    batched = run_batch(package, jobs)
    for job, result in zip(jobs, batched, strict=True):
        np.testing.assert_array_equal(result.images, run_batch(package, [job])[0].images)
        assert result.batch_size == 4
    images, _, _ = package.sample(2, seed=5, label=1, truncation_psi=0.5)
    np.testing.assert_array_equal(batched[0].images, images)
    assert not np.array_equal(batched[0].images, package.sample(2, seed=5, label=1)[0])


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.0.2", True), ("::1", True),
                                                 ("localhost", True), ("0.0.0.0", False), ("::", False),
                                                 ("10.0.0.5", False), ("gen.example.com", False)])
def test_serving_beyond_loopback_needs_a_key_or_an_explicit_opt_out(host: str, loopback: bool) -> None:
    from genai_ray.serve.app import require_auth

    if loopback:
        require_auth(ServeConfig(), host, None, "x")
    else:
        with pytest.raises(UserError, match=f"refusing to serve on {host} without an API key.*--insecure-no-auth"):
            require_auth(ServeConfig(), host, None, "x")
    require_auth(ServeConfig(), host, "0" * 64, "x")  # a key: any host
    require_auth(ServeConfig(insecure_no_auth=True), host, None, "x")  # said on purpose


def test_cli_refuses_open_binds_keys_on_the_command_line_and_bad_models(
        packages: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Each refusal is one line and exit 2, before any Ray or Serve starts (nothing half-deployed)."""
    import json

    from genai_ray import ray_runtime
    from genai_ray.cli import main
    from genai_ray.package.format import champion_uri

    monkeypatch.delenv("GENAI_RAY_API_KEY", raising=False)
    store = packages["store"]
    started: list = []  # every refusal must come before the CLI asks for a Ray (another test's may already run)
    monkeypatch.setattr(ray_runtime, "ensure_ray", lambda *args, **kwargs: started.append(args))

    def run(*args: str) -> str:
        code = main(["--store", store, "serve", "--no-blocking", *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        return err

    assert "without an API key" in run("--model", "cond/v0001", "--host", "0.0.0.0")
    production = str(CONFIGS / "production.yaml")
    assert "without an API key" in run("--model", "cond/v0001", "--config", production)
    assert "refusing a key on the command line" in run("--model", "cond/v0001", "--api-key", "k")
    assert "cond/v0099: model.json is missing" in run("--model", "cond/v0099")
    Path(champion_uri(store, "cond")).write_text(json.dumps({"uri": str(Path(store, "models", "cond", "v0042"))}))
    err = run("--model", "champion:cond")
    assert "champion.json points to" in err and "v0042" in err and "no model.json" in err
    assert started == []


def test_model_references_and_package_uris_are_told_apart() -> None:
    from genai_ray.package.format import is_reference

    assert all(is_reference(r) for r in ["champion", "champion:cond", "cond", "cond/v0002"])
    assert not any(is_reference(r) for r in ["/s/models/cond/v0002", "s3://b/models/cond/v0002", "./p", "~/p"])


@pytest.mark.parametrize(("auto", "extra", "message"), [
    ({"min_replicas": 3, "max_replicas": 2}, {}, "min_replicas=3 is above max_replicas=2"),
    ({"min_replicas": 1, "max_replicas": 2, "initial_replicas": 4}, {}, "initial_replicas=4 is outside"),
    ({"min_replicas": 1, "max_replicas": 2}, {"num_replicas": 2}, "num_replicas is not allowed when autoscal"),
])
def test_contradictory_autoscaling_bounds_are_one_line_errors(tmp_path: Path, auto: dict, extra: dict,
                                                               message: str) -> None:
    data = yaml.safe_load((CONFIGS / "local.yaml").read_text())
    dep = data["applications"][0]["deployments"][0]
    dep["autoscaling_config"] = auto
    dep.update(extra)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message):
        load_serve_file(bad)


def test_max_batch_size_is_capped_in_one_line_with_exit_2(tmp_path: Path, capsys) -> None:
    from genai_ray.cli import main
    from genai_ray.config import MAX_BATCH_SIZE

    assert serve_config({"max_batch_size": MAX_BATCH_SIZE}).max_batch_size == MAX_BATCH_SIZE
    capped = f"max_batch_size: Input should be less than or equal to {MAX_BATCH_SIZE}"
    with pytest.raises(UserError, match=f"serve.{capped}"):
        serve_config({"max_batch_size": MAX_BATCH_SIZE + 1})
    data = yaml.safe_load((CONFIGS / "local.yaml").read_text())
    data["applications"][0]["args"]["max_batch_size"] = 100_000
    data["applications"][0]["deployments"][0]["max_ongoing_requests"] = 100_000
    bad = tmp_path / "huge.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["serve", "--model", "nothing", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and capped in err
