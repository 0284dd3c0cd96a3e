"""Both ways to run the endpoint against a running Ray with token auth on: Ray's `serve deploy` with
serve_configs/local.yaml, and `genai-ray serve --address`. A private head (`genai-ray cluster up`), its own
HOME and token; teardown is `cluster down`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from genai_ray.ray_runtime import free_port
from tests.serve_helpers import make_package

pytestmark = pytest.mark.slow  # its own Ray head, and Serve deployed on it; `make test-fast` skips it

ROOT = Path(__file__).resolve().parents[1]


def wait_model(url: str, version: str, timeout: float = 180.0) -> dict:
    """Poll /v1/model until it serves ``version`` (deploys are asynchronous; not a timed assertion)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/v1/model", timeout=10)
            if last.status_code == 200 and last.json()["version"] == version:
                return last.json()
        except httpx.HTTPError as err:
            last = err
        time.sleep(0.5)
    raise AssertionError(f"{url} never served {version}: {last!r}")


def test_serve_deploy_and_genai_ray_serve_on_a_token_auth_cluster(head, tmp_path: Path) -> None:
    state, root = head
    store = str(root)
    v1 = make_package(store, "cond", "v0001", True, seed=1)
    v2 = make_package(store, "cond", "v0002", True, seed=2)
    port = free_port()
    config = yaml.safe_load((ROOT / "serve_configs" / "local.yaml").read_text())
    config["http_options"]["port"] = port
    deployment = config["applications"][0]["deployments"][0]
    deployment["ray_actor_options"]["num_cpus"] = 0.5
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    serve_bin = str(Path(sys.executable).parent / "serve")
    url = f"http://127.0.0.1:{port}"

    # A package URI in user_config, no reference in args: the file pins the version, and changing it hot-swaps.
    config["applications"][0]["args"].pop("model_uri")

    def serve_deploy(model_uri: str) -> None:
        deployment["user_config"] = {"model_uri": model_uri}
        path = tmp_path / "deploy.yaml"
        path.write_text(yaml.safe_dump(config))
        done = subprocess.run([serve_bin, "deploy", str(path), "-a", state.dashboard_url], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    serve_deploy(v1)
    replica = wait_model(url, "v0001")["serving"]["replica"]
    assert httpx.post(f"{url}/v1/generate", json={"n": 2, "label": "two"}).headers["x-labels"] == "2,2"
    serve_deploy(v2)  # only user_config changed: a hot swap on the same replica
    assert wait_model(url, "v0002")["serving"]["replica"] == replica

    cli = [sys.executable, "-m", "genai_ray", "serve", "--model", "cond/v0001", "--address", state.gcs_address,
           "--config", str(ROOT / "serve_configs" / "local.yaml"), "--port", str(port), "--no-blocking"]
    done = subprocess.run(cli, env={**env, "GENAI_RAY_STORE": store}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"at {url}/" in done.stdout
    assert wait_model(url, "v0001")["uri"] == v1  # the app outlives the CLI process on the cluster
