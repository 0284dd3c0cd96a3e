"""Loading and reloading models on Ray Serve: a package that fails to load, hot reloads under load, and
``genai-ray serve`` swapping the model in place."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from genai_ray.config import ServeConfig
from genai_ray.serve.keyhash import hash_key
from tests.helpers import Load
from tests.serve_helpers import LOCAL_CONFIG, cli_serve, deploy, post


@pytest.mark.slow  # fault: a corrupt package, until Serve gives up on the deploy
def test_failed_load_marks_replica_unhealthy_naming_the_uri(serve_root: str, packages: dict[str, str]) -> None:
    from ray import serve

    with pytest.raises(RuntimeError, match="Deploying application t-bad failed"):
        deploy("t-bad", ServeConfig(model_uri=packages["corrupt"]), health_check_period_s=1)
    try:
        status = serve.status().applications["t-bad"].deployments["Generator"]
        assert status.status == "DEPLOY_FAILED"
        assert f"model {packages['corrupt']} failed to load" in status.message and "sha256" in status.message
    finally:
        serve.delete("t-bad")


@pytest.mark.slow  # 32 clients' load while the model reloads
def test_hot_reload_at_load_two_replicas_32_clients(serve_root: str, packages: dict[str, str]) -> None:
    """Reload to a new version the way users do (``genai-ray serve`` again) while 32 clients hammer 2 replicas:
    no failed request, the same two replicas swap the model in place, and every request sent after the reload
    returned is answered by the new version."""
    from ray import serve

    from genai_ray.serve.app import load_serve_file, start

    spec = load_serve_file(LOCAL_CONFIG)
    spec.name, spec.route_prefix = "t-reload", "/t-reload"
    spec.deployment.update(autoscaling_config={"min_replicas": 2, "max_replicas": 2}, max_ongoing_requests=32,
                           ray_actor_options={"num_cpus": 0.5})
    port = int(serve_root.rsplit(":", 1)[1])
    _, url, _ = start(packages["cond1"], spec, None, port, None, packages["store"])
    url = url.rstrip("/")
    load = Load(url, {"n": 1})
    try:
        replicas = {httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["replica"] for _ in range(30)}
        load.resize(32)
        load.wait_for(64)
        start(packages["cond2"], spec, None, port, None, packages["store"])
        reloaded_at = time.monotonic()
        load.wait_for(128)
        after = {httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["replica"] for _ in range(30)}
    finally:
        load.resize(0)
        serve.delete("t-reload")
    print(f"hot reload: {len(load.seen)} requests from 32 clients, {len(load.failures())} failed")
    assert load.failures() == [], load.failures()[:5]
    models = [m for _, _, m in sorted(load.seen)]
    assert models[0] == "cond/v0001" and models[-1] == "cond/v0002"
    late = {m for t, _, m in load.seen if t > reloaded_at}
    assert late == {"cond/v0002"}, late
    assert after == replicas and len(replicas) == 2  # swapped in place: the same two replicas


@pytest.mark.slow  # minutes of load against Serve
def test_cli_serves_and_hot_swaps_under_load_with_zero_failed_requests(
        serve_root: str, packages: dict[str, str], capsys, tmp_path: Path, monkeypatch) -> None:
    """`genai-ray serve` deploys the way `serve deploy` does; a second run only changes user_config.model_uri."""
    from ray import serve

    store, port = packages["store"], int(serve_root.rsplit(":", 1)[1])
    try:
        code, out, err = cli_serve(store, "cond/v0001", port, capsys)
        assert code == 0, err
        url = out.split(" at ")[1].split()[0]
        assert url == f"{serve_root}/"
        base = url.rstrip("/")
        replica = httpx.get(f"{base}/v1/model").json()["serving"]["replica"]
        with Load(base, {"n": 2}) as load:
            load.resize(4)
            load.wait_for(8)
            code, _, err = cli_serve(store, "cond", port, capsys)  # NAME: the latest complete version
            assert code == 0, err
            load.wait_for(8)
        assert {c for _, c, _ in load.seen} == {200}, load.failures()[:5]
        versions = [v for _, _, v in load.seen]
        assert versions[0] == "cond/v0001" and versions[-1] == "cond/v0002"
        after = httpx.get(f"{base}/v1/model").json()
        assert after["version"] == "v0002" and after["serving"]["replica"] == replica  # swapped in place

        # A swap to a corrupt package is refused in one line naming the URI; v0002 keeps serving.
        code, _, err = cli_serve(store, packages["corrupt"], port, capsys)
        assert code == 2 and f"model {packages['corrupt']} failed to load" in err
        assert "still serving cond/v0002" in err
        assert post(base, json={"n": 1}).headers["x-model"] == "cond/v0002"

        # A config holding only the key's hash, and no key in this shell: /healthz hides load details from an
        # anonymous caller, so the CLI says it could not check the load instead of reporting success.
        monkeypatch.delenv("GENAI_RAY_API_KEY", raising=False)
        hashed = tmp_path / "hashed.yaml"
        stored = hash_key("k")
        hashed.write_text(LOCAL_CONFIG.read_text().replace(
            "api_key_env: GENAI_RAY_API_KEY", f"api_key_env: GENAI_RAY_API_KEY\n      api_key_hash: '{stored}'"))
        code, _, err = cli_serve(store, "cond/v0001", port, capsys, config=str(hashed))
        assert code == 0 and "not checked that the replicas loaded" in err, err
        assert post(base, json={"n": 1}).status_code == 401
        assert post(base, json={"n": 1}, headers={"Authorization": "Bearer k"}).headers["x-model"] == "cond/v0001"
    finally:
        serve.delete("genai-ray")
    code, _, err = cli_serve(store, "nothing-here", port, capsys)
    assert code == 2 and "no exported model named 'nothing-here'" in err


@pytest.mark.slow  # two deploys through the CLI
def test_cli_with_a_key_keeps_the_deployed_hash_so_a_model_swap_stays_in_place(
        serve_root: str, packages: dict[str, str], capsys, monkeypatch) -> None:
    """A fresh salt on every `genai-ray serve` would change the app's args and replace every replica; the running
    app's hash is kept while it matches the key, so only user_config changes (a hot swap)."""
    from ray import serve
    from ray.serve.context import _get_global_client

    from genai_ray.serve.app import deployed_key_hash
    from genai_ray.serve.keyhash import verify

    store, port = packages["store"], int(serve_root.rsplit(":", 1)[1])
    key = "swap-test-key-5d2e"
    good = {"Authorization": f"Bearer {key}"}
    monkeypatch.setenv("GENAI_RAY_API_KEY", key)
    try:
        code, out, err = cli_serve(store, "cond/v0001", port, capsys)
        assert code == 0, err
        base = out.split(" at ")[1].split()[0].rstrip("/")
        before = httpx.get(f"{base}/v1/model", headers=good).json()["serving"]["replica"]
        stored = deployed_key_hash(_get_global_client(), "genai-ray")
        assert stored and stored.startswith("scrypt$") and verify(stored, key) and key not in stored
        code, _, err = cli_serve(store, "cond/v0002", port, capsys)
        assert code == 0, err
        assert deployed_key_hash(_get_global_client(), "genai-ray") == stored
        after = httpx.get(f"{base}/v1/model", headers=good).json()
        assert after["version"] == "v0002" and after["serving"]["replica"] == before  # swapped in place
        assert post(base, json={"n": 1}).status_code == 401
        monkeypatch.setenv("GENAI_RAY_API_KEY", "another-key")  # a new key gets a new hash
        code, _, err = cli_serve(store, "cond/v0002", port, capsys)
        assert code == 0, err
        assert deployed_key_hash(_get_global_client(), "genai-ray") != stored
    finally:
        serve.delete("genai-ray")
