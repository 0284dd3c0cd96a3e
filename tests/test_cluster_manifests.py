"""Every cluster definition parses and holds what its kind requires.

- The launcher config goes through Ray's own launcher schema (``prepare_config`` + ``validate_config``).
- Serve configs go through Ray Serve's own ``ServeDeploySchema``.
- KubeRay manifests: no CRD-aware validator is installable from the registries this project uses
  (kubeconform is not on PyPI, Debian or npm; kubectl validates only against a live API server), so the
  fields KubeRay's ray.io/v1 samples require are checked here, plus what genai-ray relies on: token auth,
  GPU requests, one image, no secret values, entrypoints the CLI accepts, and the RayService's
  serveConfigV2 equal to serve_configs/production.yaml.
"""

from __future__ import annotations

import copy
import importlib.util
import shlex
from pathlib import Path

import pytest
import ray
import yaml

from genai_ray.cli.job_command import validate_command

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
PRODUCTION = REPO / "serve_configs" / "production.yaml"
YAML_FILES = sorted([*CLUSTER.rglob("*.yaml"), *(REPO / "serve_configs").glob("*.yaml")])
KUBERAY_KINDS = {"RayCluster", "RayJob", "RayService"}
SECRET_NAMES = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN",
                "GENAI_RAY_API_KEY")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def kuberay_docs() -> list[tuple[str, dict]]:
    return [(p.name, load(p)) for p in sorted(KUBERAY.glob("*.yaml"))]


def cluster_spec_of(doc: dict) -> dict:
    spec = doc["spec"]
    return {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"),
            "RayService": spec.get("rayClusterConfig")}[doc["kind"]]


def test_the_expected_files_exist():
    names = {p.relative_to(REPO).as_posix() for p in YAML_FILES}
    assert {"cluster/aws.yaml", "cluster/kuberay/raycluster.yaml", "cluster/kuberay/rayjob-train.yaml",
            "cluster/kuberay/rayjob-tune.yaml", "cluster/kuberay/rayservice-generator.yaml"} <= names
    assert PRODUCTION.is_file(), "serve_configs/production.yaml is missing: the RayService embeds it"
    assert (REPO / "Dockerfile").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_yaml_parses_to_a_mapping(path):
    doc = load(path)
    assert isinstance(doc, dict) and doc, f"{path} is empty or not a mapping"


def test_launcher_config_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load(CLUSTER / "aws.yaml")
    full = prepare_config(copy.deepcopy(raw))
    validate_config(full)  # raises on any unknown or mistyped field
    assert full["provider"]["type"] == "aws"
    head = full["available_node_types"][full["head_node_type"]]
    gpu = [t for name, t in full["available_node_types"].items() if name != full["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "g5." not in head["node_config"]["InstanceType"]
    assert len(gpu) == 1 and gpu[0]["node_config"]["InstanceType"].startswith("g5.")
    assert gpu[0]["min_workers"] == 0 < gpu[0]["max_workers"] <= full["max_workers"]
    assert any("genai-ray" in c and "[gpu]" in c for c in full["worker_setup_commands"])
    assert any("genai-ray" in c for c in full["head_setup_commands"])
    start = " ".join(full["head_start_ray_commands"] + full["worker_start_ray_commands"])
    assert start.count("RAY_AUTH_MODE=token") == 2, "token auth must be on for head and workers"
    assert start.count("RAY_worker_niceness=0") == 2, "Ray's default nice 15 runs training below its daemons"
    assert "--dashboard-host=127.0.0.1" in start, "the dashboard runs code: reach it through the SSH tunnel"
    assert ray.__version__ in full["docker"]["image"] and ray.__version__ in full["docker"]["head_image"]

    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_worker"]["min_worker"] = 0  # a typo Ray's schema must catch
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("path", sorted((REPO / "serve_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_serve_configs_pass_serves_own_schema(path):
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(load(path))
    assert config.applications, f"{path.name} deploys no application"
    for app in config.applications:
        module = app.import_path.split(":")[0]
        assert importlib.util.find_spec(module) is not None, f"{path.name}: {app.import_path} does not exist"


@pytest.mark.parametrize("name, doc", kuberay_docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_kuberay_manifest_has_the_fields_its_kind_requires(name, doc):
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in KUBERAY_KINDS, name
    assert doc["metadata"]["name"]
    spec = cluster_spec_of(doc)
    assert spec, f"{name}: {doc['kind']} has no cluster spec"
    assert spec["rayVersion"] == ray.__version__, f"{name}: rayVersion must match the Ray genai-ray pins"
    assert spec["authOptions"]["mode"] == "token", f"{name}: Ray token authentication must stay on"
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP", f"{name}: never expose the dashboard"
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    assert all(isinstance(g["rayStartParams"], dict) for g in groups)
    for worker in spec["workerGroupSpecs"]:
        assert worker["groupName"]
        assert 0 <= worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"], worker["groupName"]
    gpu = [w for w in spec["workerGroupSpecs"] if w["groupName"] == "gpu"]
    assert gpu, f"{name}: no GPU worker group"
    gpu_res = gpu[0]["template"]["spec"]["containers"][0]["resources"]
    assert gpu_res["limits"]["nvidia.com/gpu"] == gpu_res["requests"]["nvidia.com/gpu"] == "1"
    containers = [c for g in groups for c in g["template"]["spec"]["containers"]]
    assert all(c["name"] and c["image"] for c in containers)
    assert len({c["image"] for c in containers}) == 1, f"{name}: head and workers must run one image"
    for c in containers:
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["GENAI_RAY_STORE"]["value"].startswith("s3://"), f"{name}: data and models live in S3"
        assert env.get("RAY_worker_niceness", {}).get("value") == "0", f"{name}: train at the daemons' priority"
        for secret in SECRET_NAMES:
            assert "value" not in env.get(secret, {}), f"{name}: {secret} must come from a Secret"
        assert any(ref.get("secretRef") for ref in c.get("envFrom", [])), f"{name}: S3 credentials Secret"


@pytest.mark.parametrize("file", ["rayjob-train.yaml", "rayjob-tune.yaml"])
def test_rayjob_runs_a_command_the_cli_accepts(file):
    doc = load(KUBERAY / file)
    spec = doc["spec"]
    args = shlex.split(spec["entrypoint"])
    assert args[:3] == ["python", "-m", "genai_ray"], spec["entrypoint"]
    assert validate_command(args[3:]) == file.removeprefix("rayjob-").removesuffix(".yaml")
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["GENAI_RAY_ADDRESS"] == "auto"
    assert spec["rayClusterSpec"] == load(KUBERAY / "raycluster.yaml")["spec"]
    for arg in args:
        if arg.endswith(".yaml"):
            assert (REPO / arg).is_file(), f"{file} refers to {arg}, which the image would not contain"


def test_rayservice_serves_the_production_config():
    doc = load(KUBERAY / "rayservice-generator.yaml")
    assert doc["kind"] == "RayService"
    embedded = doc["spec"]["serveConfigV2"]
    assert isinstance(embedded, str), "serveConfigV2 is a YAML string in ray.io/v1"
    assert yaml.safe_load(embedded) == load(PRODUCTION), \
        "serveConfigV2 differs from serve_configs/production.yaml; run python cluster/kuberay/generate.py"
    key_env = {e["name"]: e for c in doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
               ["containers"] for e in c["env"]}["GENAI_RAY_API_KEY"]
    assert key_env["valueFrom"]["secretKeyRef"]["name"]
    # HAProxy ingress: Serve reads the switch in every Ray process, so every pod of the service must have it.
    cluster = doc["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        for c in group["template"]["spec"]["containers"]:
            assert {e["name"]: e.get("value") for e in c["env"]}.get("RAY_SERVE_ENABLE_HA_PROXY") == "1", c["name"]


def test_generated_manifests_are_up_to_date():
    spec = importlib.util.spec_from_file_location("kuberay_generate", KUBERAY / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    stale = [p.name for p, text in generate.manifests().items() if p.read_text() != text]
    assert not stale, f"{stale} are stale; run python cluster/kuberay/generate.py"


def test_dockerfile_builds_the_image_the_manifests_use():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"rayproject/ray:{ray.__version__}-py311" in dockerfile, "base image must carry the pinned Ray"
    assert "ARG EXTRAS=gpu" in dockerfile and "pip install" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)
