"""No secrets in Ray: a private local Ray's workers get credentials by inheriting the driver's environment, so
neither Ray's State API (jobs' and actors' runtime envs) nor the session's log files hold them.

Runs its own private Ray in a subprocess, with secret values no other test uses, so the search is meaningful.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # its own Ray; `make test-fast` skips it

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path

    import ray
    from ray.util.state import list_actors, list_jobs, list_tasks

    from genai_ray.ray_runtime import ensure_ray

    secrets = {name: os.environ[name] for name in sys.argv[1].split(",")}  # values only in the environment
    ensure_ray(num_cpus=2)

    @ray.remote(num_cpus=0)
    def task_env():
        return {k: os.environ.get(k) for k in secrets}

    @ray.remote(num_cpus=0)
    class Holder:
        def env(self):
            return {k: os.environ.get(k) for k in secrets}

    holder = Holder.remote()
    seen = {"task": ray.get(task_env.remote()), "actor": ray.get(holder.env.remote())}
    here = ray.get_runtime_context().gcs_address  # this Ray, not another one on the machine (the suite's)
    state = {
        "jobs": [j.__dict__ if hasattr(j, "__dict__") else j for j in list_jobs(address=here, detail=True)],
        "actors": [a.__dict__ if hasattr(a, "__dict__") else a for a in list_actors(address=here, detail=True)],
        "tasks": [t.__dict__ if hasattr(t, "__dict__") else t for t in list_tasks(address=here, detail=True)],
    }
    dumped = json.dumps(state, default=str)
    context_env = json.dumps(ray.get_runtime_context().runtime_env)
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    ray.shutdown()
    in_state = [k for k, v in secrets.items() if v in dumped or v in context_env]
    in_logs = sorted({str(p.relative_to(session)) for p in session.rglob("*") if p.is_file()
                      for v in secrets.values() if v.encode() in p.read_bytes()})
    print("RESULT " + json.dumps({"seen": seen, "in_state": in_state, "in_logs": in_logs,
                                  "state_entries": {k: len(v) for k, v in state.items()}}))
""")


def test_private_ray_inherits_credentials_and_never_records_them() -> None:
    secrets = {"AWS_SECRET_ACCESS_KEY": f"aws-secret-{uuid.uuid4().hex}",
               "AWS_SESSION_TOKEN": f"aws-token-{uuid.uuid4().hex}",
               "GENAI_RAY_API_KEY": f"api-key-{uuid.uuid4().hex}"}
    env = {**os.environ, **secrets, "PYTHONPATH": str(ROOT), "GENAI_RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS", None)
    # Only the names on the command line: a driver's command line is its job's entrypoint in the State API.
    done = subprocess.run([sys.executable, "-c", PROBE, ",".join(secrets)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    # Workers still have the credentials they need (S3 reads in tasks and actors)...
    assert result["seen"]["task"] == secrets and result["seen"]["actor"] == secrets
    # ...but the runtime env that the dashboard and the State API show holds none of them, nor do the logs.
    assert result["state_entries"]["jobs"] >= 1 and result["state_entries"]["actors"] >= 1
    assert result["in_state"] == [], result
    assert result["in_logs"] == [], result


JOIN_PROBE = textwrap.dedent("""
    import json, os, sys

    import ray

    from genai_ray.ray_runtime import ensure_ray

    names = sys.argv[1].split(",")
    ensure_ray()  # joins $GENAI_RAY_ADDRESS

    @ray.remote(num_cpus=0)
    def task_env():
        return {k: os.environ.get(k) for k in names}

    seen = ray.get(task_env.remote())
    print("RESULT " + json.dumps({"seen": seen, "runtime_env": ray.get_runtime_context().runtime_env}))
""")

# Credentials under names a deny-list would miss, and one it would not.
JOIN_SECRETS = ("AWS_SECURITY_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "GENAI_RAY_MY_KEY", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN", "GENAI_RAY_API_KEY")


def test_cluster_env_is_an_allow_list() -> None:
    from genai_ray.ray_runtime import CLUSTER_ENV, cluster_env

    environ = {**{k: "secret" for k in JOIN_SECRETS}, "AWS_PROFILE": "laptop", "AWS_REGION": "eu-west-1",
               "GENAI_RAY_STORE": "s3://bucket/store", "AWS_ENDPOINT_URL": "", "PATH": "/bin"}
    assert cluster_env(environ) == {"AWS_REGION": "eu-west-1", "GENAI_RAY_STORE": "s3://bucket/store"}
    assert not any(word in k for k in CLUSTER_ENV for word in ("KEY", "TOKEN", "SECRET", "PASSWORD", "PROFILE"))


@pytest.mark.slow  # its own Ray head
def test_joining_a_cluster_forwards_the_store_and_no_credential(head) -> None:
    """A driver with ``--address``/$GENAI_RAY_ADDRESS: its workers get the store and endpoint, and neither they nor
    the job's runtime env (what the dashboard's Jobs API shows) see any credential, whatever its name."""
    import requests

    state, store = head
    secrets = {name: f"{name.lower()}-{uuid.uuid4().hex}" for name in JOIN_SECRETS}
    shared = {"GENAI_RAY_STORE": f"s3://bucket-{uuid.uuid4().hex[:8]}/store", "AWS_REGION": "eu-west-3"}
    env = {**os.environ, **secrets, **shared, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token",
           "GENAI_RAY_ADDRESS": state.gcs_address}
    done = subprocess.run([sys.executable, "-c", JOIN_PROBE, ",".join([*secrets, *shared])], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert {k: result["seen"][k] for k in shared} == shared  # what genai-ray needs on the cluster travels
    assert not [k for k in secrets if result["seen"][k] == secrets[k]], result["seen"]
    assert not [k for k, v in secrets.items() if v in json.dumps(result["runtime_env"])], result["runtime_env"]
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    jobs = requests.get(f"{state.dashboard_url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert jobs.status_code == 200 and shared["GENAI_RAY_STORE"] in jobs.text  # the driver's job is listed
    assert not [k for k, v in secrets.items() if v in jobs.text]
