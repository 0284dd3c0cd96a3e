"""Any ``genai-ray`` command as a Ray Job, through Ray's Jobs API (``JobSubmissionClient``).

The job runs ``python -m genai_ray <args>`` on the cluster. Its runtime environment carries:

- the project: this checkout as ``working_dir`` (without .git, .venv, caches and data files), so the
  cluster runs the code you have; or nothing, and the cluster's installed genai-ray runs (the Docker image);
- the storage *settings* (endpoint, region, store root), never credentials: the cluster reads its own from
  the standard AWS chain (instance role, a Kubernetes Secret, the environment ``cluster up`` ran in), because
  a runtime env is readable by anyone who can open the dashboard;
- ``GENAI_RAY_ADDRESS=auto``, so commands that use Ray join the cluster instead of starting a private Ray.

The command itself is checked by the CLI (``genai_ray.cli.job_command``) before it reaches ``submit``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import requests

import genai_ray
from genai_ray.cluster import auth, local
from genai_ray.errors import UserError
from genai_ray.ray_runtime import ADDRESS_ENV
from genai_ray.storage import STORE_ENV

# Ray's job client is imported inside connect(): the CLI loads this module at start-up, and `genai-ray --help` and
# config errors stay fast.

ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")  # Ray's own job CLI reads these, in this order
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
WORKING_DIR_EXCLUDES = ["**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
                        "build", "dist", "demo-out", "*.npy", "*.npz", "*.parquet", "*.keras", "*.h5",
                        "*.ckpt", "*.tar", "*.tar.gz", "*.zip"]
# Ray's own (.git, .venv) come on top. Ray also honours the checkout's .gitignore.
QUIET_LOGGERS = ("ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk",  # upload chatter
                 "ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir")
CONNECT_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 20


# ---- the command to run ----

def entrypoint(args: Sequence[str]) -> str:
    return shlex.join(["python", "-m", "genai_ray", *args])


def project_root() -> Path | None:
    """This checkout's root when genai-ray runs from a source tree; None when it is installed as a wheel."""
    root = Path(genai_ray.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    return root if pyproject.is_file() and 'name = "genai-ray"' in pyproject.read_text() else None


def runtime_env(working_dir: Path | None, store: str | None) -> dict:
    env_vars = {key: os.environ[key] for key in FORWARDED_ENV if os.environ.get(key)}
    if store:
        # The job runs in its own directory: a relative local store would land inside it.
        env_vars[STORE_ENV] = store if "://" in store else str(Path(store).expanduser().resolve())
    env_vars[ADDRESS_ENV] = "auto"
    # genai-ray's ray.init repeats these variables; let it merge with the job's env instead of conflicting.
    env_vars["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    env_vars["PYTHONUNBUFFERED"] = "1"  # logs stream as they are written
    env: dict = {"env_vars": env_vars}
    if working_dir is not None:
        if not (working_dir / "genai_ray" / "__main__.py").is_file():
            raise UserError(f"--working-dir {working_dir} holds no genai_ray package; pass the repository root")
        env["working_dir"] = str(working_dir)
        env["excludes"] = WORKING_DIR_EXCLUDES
    return env


# ---- the cluster ----

def resolve_address(address: str | None) -> str:
    """The Jobs API URL: --address, $RAY_API_SERVER_ADDRESS, an http $RAY_ADDRESS, or the local head."""
    if not address:
        for key in ADDRESS_ENVS:
            value = os.environ.get(key, "")
            if value.startswith(("http://", "https://")) or (key == ADDRESS_ENVS[0] and value):
                address = value
                break
    if not address:
        state = local.read_state()
        if state and local.is_running(state):
            address = state.dashboard_url
    if not address:
        raise UserError("no Ray cluster to talk to: pass --address http://HEAD:8265 (the dashboard), set "
                        "RAY_API_SERVER_ADDRESS, or start a local one with 'genai-ray cluster up'")
    if address.startswith("ray://") or address == "auto":
        raise UserError(f"--address {address} is a Ray Client/GCS address; jobs go to the dashboard, "
                        "e.g. http://HEAD:8265")
    if "://" not in address:
        address = f"http://{address}"
    return address.rstrip("/")


def connect(address: str | None):
    """A JobSubmissionClient for the cluster, after one quick probe that turns every failure into one line.

    Ray's client has no timeout of its own: a silent address would hang it, so we probe with one.
    """
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    token = auth.find_token()
    headers = auth.auth_headers(token)
    try:
        response = requests.get(f"{url}/api/version", headers=headers, timeout=CONNECT_TIMEOUT_S)
    except requests.RequestException as err:
        reason = type(err).__name__.replace("Error", " error").strip().lower()
        raise UserError(f"cannot reach the Ray dashboard at {url} ({reason}); check --address, that the head "
                        "is up ('genai-ray cluster status') and that its dashboard port is reachable") from None
    if response.status_code == 401:
        raise UserError(f"the Ray cluster at {url} requires a token and none was found; {auth.how_to_provide()}")
    if response.status_code == 403:
        raise UserError(f"the Ray cluster at {url} refused the token from {token.source if token else '?'}; "
                        f"use that cluster's token: {auth.how_to_provide()}")
    try:
        response.raise_for_status()
        response.json()["ray_version"]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        raise UserError(f"{url} did not answer like a Ray dashboard (HTTP {response.status_code}); "
                        "pass the dashboard address, e.g. http://HEAD:8265") from None
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return JobSubmissionClient(url, headers=headers)


def job_info(client, job_id: str):
    try:
        return client.get_job_info(job_id)
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            raise UserError(f"no job {job_id!r} on this cluster; see 'genai-ray jobs list'") from None
        raise


def submit(client, args: Sequence[str], command: str, env: dict, job_id: str | None = None) -> str:
    """Submit ``genai-ray ARGS``; ``command`` is its path ("data prepare"), which the CLI checked
    (``genai_ray.cli.job_command``), and names the job."""
    job_id = job_id or f"genai-ray-{command.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}-" \
                       f"{secrets.token_hex(2)}"
    try:
        return client.submit_job(entrypoint=entrypoint(args), runtime_env=env, submission_id=job_id,
                                 metadata={"genai_ray_command": command})
    except RuntimeError as err:
        if "already exists" in str(err):
            raise UserError(f"a job with id {job_id!r} already exists on this cluster; pick another --job-id") \
                from None
        raise


def follow_logs(client, job_id: str, echo: Callable[[str], None]) -> None:
    """Print the job's log as it is written, until the job ends (reconnecting if the stream drops)."""
    printed = 0
    while True:
        seen = 0

        async def tail() -> None:
            nonlocal printed, seen
            async for chunk in client.tail_job_logs(job_id):
                new = chunk[max(0, printed - seen):]  # after a reconnect the stream starts from the top
                seen += len(chunk)
                if new:
                    echo(new)
                    printed += len(new)

        asyncio.run(tail())
        if client.get_job_status(job_id).is_terminal():
            return
        time.sleep(1.0)


def wait(client, job_id: str, poll_s: float = 1.0) -> None:
    while not client.get_job_status(job_id).is_terminal():
        time.sleep(poll_s)


def exit_code(info) -> int:
    """The job's result as a process exit code: 0 on success, the driver's own code (or 1) otherwise."""
    if info.status.value == "SUCCEEDED":
        return 0
    return info.driver_exit_code or 1


def log_tail(client, job_id: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(client.get_job_logs(job_id).rstrip().splitlines()[-lines:])


def short_entrypoint(ep: str) -> str:
    prefix = "python -m genai_ray "
    return "genai-ray " + ep[len(prefix):] if ep.startswith(prefix) else ep
