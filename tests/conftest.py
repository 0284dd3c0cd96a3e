"""Shared fixtures: a real S3 endpoint (moto's HTTP server on loopback) and one local Ray per session.

The S3 environment is set before Ray starts, so Ray's worker processes inherit the endpoint and the test
credentials just like production workers inherit theirs.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from genai_ray.config import ServeConfig
from genai_ray.ray_runtime import free_port
from tests.helpers import prepare_digits
from tests.serve_helpers import COND1_METRICS, KEY, KEY_ENV, deploy, make_package

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="session", autouse=True)
def s3_endpoint() -> str:
    """moto's S3 server over real HTTP on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # A developer's own AWS settings must never send test traffic elsewhere (or sign it with a real session).
    foreign = ["AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"]
    saved = {k: os.environ.get(k) for k in [*TEST_CREDENTIALS, "AWS_ENDPOINT_URL", *foreign]}
    os.environ.update(TEST_CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for key in foreign:
        os.environ.pop(key, None)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh bucket; returns its s3:// URI."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def digits_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled digits prepared once per test module, for campaigns and training runs to share."""
    return prepare_digits(str(tmp_path_factory.mktemp("digits-data") / "digits"))


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private local store root, also set as the default for the CLI."""
    root = tmp_path / "store"
    monkeypatch.setenv("GENAI_RAY_STORE", str(root))
    return str(root)


@pytest.fixture(scope="session")
def ray_local(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory):
    """One real local Ray for the session (shared by train, tune and serve tests)."""
    import ray

    from genai_ray.ray_runtime import ensure_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray()
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # noqa: BLE001 - best effort at the end of the session
        pass
    ray.shutdown()


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str):
    """A running local head (`genai-ray cluster up`), one per test module; yields (state, store root). HOME is
    private, so `cluster up` makes the token; `cluster down` must leave no process and no temp dir behind."""
    from genai_ray.cli import main
    from genai_ray.cluster import local

    root = tmp_path_factory.mktemp("cluster")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(root / "home"))
        mp.setenv("GENAI_RAY_CLUSTER_DIR", str(root / "state"))
        mp.setenv("GENAI_RAY_STORE", str(root / "store"))
        for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS", "RAY_ADDRESS",
                    "GENAI_RAY_ADDRESS"):
            mp.delenv(key, raising=False)
        assert main(["cluster", "up", "--num-cpus", "4"]) == 0
        state = local.read_state()
        assert state is not None and local.is_running(state)
        try:
            yield state, root / "store"
        finally:
            pids = local.cluster_pids(state)
            assert main(["cluster", "down"]) == 0
            left = [p for p in pids if local._proc_stat(p)]
            assert not left, f"cluster down left processes running: {left}"
            assert not Path(state.temp_dir).exists(), "cluster down left Ray's temp dir behind"
            assert local.read_state() is None


# ---- Serve (tests/test_serve_*.py) ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def serve_root(ray_local) -> str:
    """Serve's HTTP proxy on a free loopback port (never 8000), started once: Serve keeps its first port. Apps are
    deleted by their fixtures and tests."""
    from ray import serve

    from genai_ray.serve.app import http_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{http_port(port)}"


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real toy packages: ``cond`` v0001 (with evaluation metrics) and v0002, ``uncond``, and a corrupt one."""
    store = str(tmp_path_factory.mktemp("serve-store"))
    corrupt = make_package(store, "broken", "v0001", True, seed=3)
    with open(os.path.join(corrupt, "generator.keras"), "ab") as f:
        f.write(b"tampered")
    return {"store": store, "cond1": make_package(store, "cond", "v0001", True, seed=1, metrics=COND1_METRICS),
            "cond2": make_package(store, "cond", "v0002", True, seed=2), "corrupt": corrupt,
            "uncond": make_package(store, "uncond", "v0001", False, seed=4)}


@pytest.fixture(scope="module")
def cond(serve_root: str, packages: dict[str, str]):
    """A conditional model, no API key, batches of up to 16 that wait 50 ms to fill."""
    from ray import serve

    deploy("t-cond", ServeConfig(model_uri=packages["cond1"], max_n=64, max_batch_size=16, batch_wait_timeout_s=0.05),
           max_ongoing_requests=32)
    yield f"{serve_root}/t-cond"
    serve.delete("t-cond")


@pytest.fixture(scope="module")
def locked(serve_root: str, packages: dict[str, str]):
    """An unconditional model behind an API key, with room for one request and one in the queue; its responses name
    the package URI (serve.expose_model_uri)."""
    from ray import serve

    os.environ[KEY_ENV] = KEY  # the builder reads it here and sends only its scrypt hash to the replica
    try:
        deploy("t-locked", ServeConfig(model_uri=packages["uncond"], max_batch_size=1, api_key_env=KEY_ENV,
                                       expose_model_uri=True),
               max_ongoing_requests=1, max_queued_requests=1)
    finally:
        os.environ.pop(KEY_ENV)
    yield f"{serve_root}/t-locked"
    serve.delete("t-locked")


@pytest.fixture
def s3_with_auth(monkeypatch, tmp_path):
    """A private moto S3 server (its own process) that checks signatures and IAM policies.

    moto accepts any credentials until authentication is switched on over HTTP (/moto-api/reset-auth). We
    make a bucket and an IAM user with an S3 policy first, then switch it on. A private server keeps the
    session's shared endpoint open to every other test. Yields (bucket URI, access key id, secret).
    """
    import json
    import socket
    import subprocess
    import sys
    import time

    import boto3
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="authed")
        iam = boto3.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName="trainer")
        iam.put_user_policy(UserName="trainer", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="trainer")["AccessKey"]
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        yield "s3://authed", key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
