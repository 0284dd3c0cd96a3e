"""genai-ray submit and jobs: every mistake is one clear line and exit 2, before or instead of a hang.

None of these needs a running Ray: the command is checked before anything is contacted, the addresses are
real loopback sockets (closed, silent, or a plain web server that is not Ray), and the one `ray start` here
is refused.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from genai_ray.cli.job_command import validate_command
from genai_ray.cluster import jobs, local
from genai_ray.errors import UserError
from genai_ray.ray_runtime import free_port
from tests.helpers import run_merged as run


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No recorded local head and no address in the environment."""
    monkeypatch.setenv("GENAI_RAY_CLUSTER_DIR", str(tmp_path / "cluster"))
    for key in jobs.ADDRESS_ENVS:
        monkeypatch.delenv(key, raising=False)


@pytest.mark.parametrize("command, expected", [
    (["frobnicate"], "No such command 'frobnicate'"),
    (["data", "prepare"], "Missing argument 'SOURCE'"),
    (["data", "prepare", "digits", "--bogus"], "No such option '--bogus'"),
    (["data", "frobnicate"], "No such command 'frobnicate'"),
    (["data"], "'genai-ray data' needs a command; 'genai-ray data --help' lists them"),
    (["--store", "/tmp/x"], "'genai-ray' needs a command"),
    (["cluster", "up"], "'cluster' manages the cluster from your machine"),
    (["jobs", "list"], "'jobs' manages the cluster from your machine"),
    ([], "no command to submit"),
])
def test_bad_command_is_refused_before_contacting_the_cluster(capsys, command, expected):
    closed = f"http://127.0.0.1:{free_port()}"  # were anything contacted, the error would be "cannot reach"
    code, out = run(capsys, "submit", "--address", closed, "--", *command)
    assert code == 2, out
    assert expected in out
    assert "cannot reach" not in out and "Traceback" not in out


def test_closed_port_fails_fast_with_the_address(capsys):
    address = f"http://127.0.0.1:{free_port()}"
    code, out = run(capsys, "submit", "--address", address, "--", "data", "prepare", "digits")
    assert code == 2
    assert f"cannot reach the Ray dashboard at {address}" in out and "Traceback" not in out


def test_silent_server_times_out_instead_of_hanging(capsys, monkeypatch):
    """A listener that accepts and never answers: Ray's own client would wait forever."""
    monkeypatch.setattr(jobs, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        code, out = run(capsys, "jobs", "--address", f"127.0.0.1:{silent.getsockname()[1]}", "list")
    assert code == 2
    assert "cannot reach the Ray dashboard" in out and "timeout" in out


def test_a_web_server_that_is_not_ray_is_named(capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, out = run(capsys, "jobs", "--address", f"http://127.0.0.1:{server.server_port}", "list")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2
    assert "did not answer like a Ray dashboard" in out


def test_ray_client_address_is_refused_with_the_right_one(capsys):
    code, out = run(capsys, "jobs", "--address", "ray://127.0.0.1:10001", "list")
    assert code == 2 and "jobs go to the dashboard" in out


def test_no_cluster_anywhere_says_how_to_get_one(capsys, no_cluster):
    code, out = run(capsys, "submit", "--", "data", "prepare", "digits")
    assert code == 2 and "genai-ray cluster up" in out
    code, out = run(capsys, "cluster", "status")
    assert code == 0 and "not running" in out
    code, out = run(capsys, "cluster", "down")
    assert code == 0 and "nothing to stop" in out


def test_a_stale_state_never_stops_someone_elses_processes(capsys, no_cluster, tmp_path):
    """The recorded session id now belongs to an unrelated process (ids get reused): down must spare it."""
    stranger = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        state = local.ClusterState(session_id=stranger.pid, temp_dir=str(tmp_path / "gone"),
                                   gcs_address="127.0.0.1:1", dashboard_url="http://127.0.0.1:1",
                                   client_address="ray://127.0.0.1:2", num_cpus=1, started_at=0.0,
                                   log_file=str(tmp_path / "log"))
        local._write_state(local.state_dir(), state)
        assert local.cluster_pids(state) == []
        code, out = run(capsys, "cluster", "status")
        assert code == 0 and "not running (stale state" in out
        code, out = run(capsys, "cluster", "down")
        assert code == 0 and "(0 processes)" in out
        assert stranger.poll() is None, "cluster down killed a process that was not its own"
        assert local.read_state() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_token_path_that_does_not_exist_is_named(capsys, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/nonexistent/token")
    code, out = run(capsys, "jobs", "--address", f"http://127.0.0.1:{free_port()}", "list")
    assert code == 2 and "RAY_AUTH_TOKEN_PATH=/nonexistent/token is missing" in out


def test_runtime_env_carries_settings_and_code_but_never_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRET")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-secret")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.internal:9000")
    root = jobs.project_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    env = jobs.runtime_env(root, "s3://bucket/prefix")
    assert env["working_dir"] == str(root)
    assert {"**/__pycache__", "*.parquet"} <= set(env["excludes"])
    assert env["env_vars"]["AWS_ENDPOINT_URL"] == "http://minio.internal:9000"
    assert env["env_vars"]["GENAI_RAY_STORE"] == "s3://bucket/prefix"
    assert env["env_vars"]["GENAI_RAY_ADDRESS"] == "auto"
    flat = repr(env)
    for secret in ("AKIDSECRET", "very-secret", "session-secret", "ray-secret"):
        assert secret not in flat, f"{secret} leaked into the job's runtime env"
    assert "working_dir" not in jobs.runtime_env(None, None)


def test_a_relative_local_store_is_made_absolute_for_the_job(tmp_path, monkeypatch):
    """The job runs in its own directory on the cluster; ./store there would be a different folder."""
    monkeypatch.chdir(tmp_path)
    assert jobs.runtime_env(None, "store")["env_vars"]["GENAI_RAY_STORE"] == str(tmp_path / "store")
    assert jobs.runtime_env(None, "s3://b/p")["env_vars"]["GENAI_RAY_STORE"] == "s3://b/p"


def test_entrypoint_quotes_arguments():
    assert jobs.entrypoint(["data", "prepare", "my dir"]) == "python -m genai_ray data prepare 'my dir'"
    assert validate_command(["--store", "/tmp/x", "data", "prepare", "digits"]) == "data prepare"
    assert validate_command(["evaluate", "--model", "m", "--n", "20"]) == "evaluate"


@pytest.mark.slow  # starts (and fails) its own Ray head
def test_a_head_that_fails_to_start_leaves_nothing_behind(tmp_path, monkeypatch):
    """`ray start` refuses the request: one clear error with its log, no process, no temp dir, no state."""
    temp_dir = Path(tempfile.mkdtemp(prefix="genai-ray-failed-"))
    monkeypatch.setattr(local.tempfile, "mkdtemp", lambda prefix: str(temp_dir))
    monkeypatch.setattr(local, "START_ATTEMPTS", 1)
    with pytest.raises(UserError, match="could not start a local Ray head.*Resource quantities must be nonnegative"):
        local.up(tmp_path / "state", num_cpus=-1)
    assert not temp_dir.exists()
    assert local.read_state(tmp_path / "state") is None
    assert not [pid for pid in local._all_pids() if str(temp_dir) in local._cmdline(pid)]


def test_cluster_up_refuses_a_bad_cpu_count(capsys, no_cluster):
    code, out = run(capsys, "cluster", "up", "--num-cpus", "0")
    assert code == 2 and "--num-cpus" in out
