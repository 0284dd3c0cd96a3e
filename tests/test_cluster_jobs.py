"""A real local Ray head (``genai-ray cluster up``) and real Ray Jobs submitted to it through the Jobs API.

One head for the module: its own state dir, temp dir, free ports and a private token file, so it never
touches another Ray on the machine. Teardown runs ``cluster down`` and checks that no process is left.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from genai_ray.cli import main
from genai_ray.cluster import auth, local
from tests.helpers import run

pytestmark = pytest.mark.slow  # its own Ray head, and jobs that train; `make test-fast` skips it


def test_up_again_finds_the_running_head_and_status_reports_it(head, capsys):
    state, _ = head
    code, out, _ = run(capsys, "cluster", "up")
    assert code == 0 and "already running" in out and state.dashboard_url in out
    assert local.read_state() == state
    code, out, _ = run(capsys, "cluster", "status")
    assert code == 0 and "running since" in out and state.dashboard_url in out


def test_token_authentication_is_on_with_a_private_token(head):
    """The dashboard runs code for whoever reaches it: without the token, nothing is served."""
    state, _ = head
    token = Path.home() / ".ray" / "auth_token"
    assert token.is_file(), "cluster up must create a token when there is none"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600, "the token file must be readable by its owner only"
    assert requests.get(f"{state.dashboard_url}/api/jobs/", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert requests.get(f"{state.dashboard_url}/api/jobs/", headers=wrong, timeout=10).status_code == 403


def test_plain_commands_and_rays_cli_join_with_the_printed_settings(head, capsys):
    """What `cluster up` tells users to export lets ensure_ray and `serve status` in, and nothing less does."""
    state, _ = head
    _, out, _ = run(capsys, "cluster", "up")
    assert f"export RAY_AUTH_MODE=token GENAI_RAY_ADDRESS={state.gcs_address}" in out
    probe = ("import os, ray\nfrom genai_ray.ray_runtime import ensure_ray, cluster_resources\nensure_ray()\n"
             "print('CPU', int(cluster_resources()['CPU']))\n"
             "@ray.remote(num_cpus=0)\ndef niceness():\n    return os.nice(0)\n\n"
             "print('NICE', ray.get(niceness.remote()) - os.nice(0))")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "GENAI_RAY_ADDRESS": state.gcs_address}
    joined = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert joined.returncode == 0 and f"CPU {state.num_cpus}" in joined.stdout, joined.stderr[-2000:]
    assert "NICE 0" in joined.stdout, f"the head's workers must run at the caller's niceness: {joined.stdout}"
    serve_cli = [str(Path(sys.executable).parent / "serve"), "status", "-a", state.dashboard_url]
    ok = subprocess.run(serve_cli, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "applications" in ok.stdout, ok.stderr[-2000:]
    env.pop("RAY_AUTH_MODE")
    refused = subprocess.run(serve_cli, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "Missing authentication token" in refused.stderr + refused.stdout


def test_missing_or_wrong_token_is_one_clear_line(head, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    code, _, err = run(capsys, "jobs", "list")
    assert code == 2 and "refused the token from $RAY_AUTH_TOKEN" in err
    assert "not-the-token" not in err, "the token was printed"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    code, _, err = run(capsys, "submit", "--", "data", "prepare", "digits")
    assert code == 2 and "requires a token and none was found" in err and "RAY_AUTH_TOKEN" in err


def test_submitted_job_writes_its_dataset_and_streams_its_log(head, capsys):
    state, store = head
    code, out, err = run(capsys, "submit", "--", "data", "prepare", "digits", "--name", "via-job")
    assert code == 0, err
    assert "prepared via-job: 1797 images" in out, "the job's log did not come back"
    assert "SUCCEEDED" in err
    manifest = json.loads((store / "datasets" / "via-job" / "manifest.json").read_text())
    assert manifest["count"] == 1797
    job_id = err.split("submitted job ")[1].split()[0]
    code, out, _ = run(capsys, "jobs", "list")
    assert code == 0 and job_id in out and "SUCCEEDED" in out and "genai-ray data prepare digits" in out
    code, out, _ = run(capsys, "jobs", "logs", job_id)
    assert code == 0 and "prepared via-job" in out
    code, _, err = run(capsys, "submit", "--job-id", job_id, "--", "data", "prepare", "digits")
    assert code == 2 and f"a job with id '{job_id}' already exists" in err


def test_submitted_train_job_checkpoints_and_exports_into_the_store(head, capsys):
    """Training as a Ray Job: the job's driver joins the head (GENAI_RAY_ADDRESS=auto), not a private Ray."""
    state, store = head
    assert main(["data", "prepare", "digits", "--name", "train-src"]) == 0  # locally, into the same store
    capsys.readouterr()
    code, out, err = run(capsys, "submit", "--", "train", "--data", "train-src", "--preset", "tiny",
                         "--epochs", "1", "--workers", "1", "--name", "job-run")
    assert code == 0, err[-3000:]
    assert "finished 1 epochs" in out, "the job's log did not come back"
    package = store / "models" / "job-run" / "v0001"
    assert json.loads((package / "model.json").read_text())["generator_sha256"]
    assert (package / "generator.keras").is_file()
    assert list((store / "runs" / "job-run").glob("checkpoint-*")), "no checkpoint in the store"
    job_id = err.split("submitted job ")[1].split()[0]
    code, out, _ = run(capsys, "jobs", "status", job_id)
    assert code == 0 and "SUCCEEDED" in out and "exit code: 0" in out
    # The head's own state API saw the Ray Train workers: the job used the cluster, not a private Ray.
    actors = requests.get(f"{state.dashboard_url}/api/v0/actors", params={"limit": 10000}, timeout=30,
                          headers=auth.auth_headers(auth.find_token())).json()["data"]["result"]["result"]
    assert any("RayTrainWorker" in a["class_name"] for a in actors), sorted({a["class_name"] for a in actors})


def test_failing_job_exits_with_its_code_and_log_tail(head, capsys):
    """Also runs the cluster's installed genai-ray (--no-upload) rather than a shipped checkout."""
    code, out, err = run(capsys, "submit", "--no-upload", "--", "data", "prepare", "/nonexistent/images",
                         "--name", "bad")
    assert "using the cluster's installed genai-ray" in err
    assert code == 2, "the job's own exit code (2: a user error) must come back"
    assert "FAILED (exit code 2)" in err
    tail = err.split("lines of its log ---")[1]
    assert "unknown source '/nonexistent/images'" in tail
    job_id = err.split("submitted job ")[1].split()[0]
    code, out, _ = run(capsys, "jobs", "status", job_id)
    assert code == 2 and "FAILED" in out and "exit code: 2" in out
    code, out, err = run(capsys, "jobs", "logs", "--follow", job_id)
    assert code == 2 and "unknown source" in out and "FAILED (exit code 2)" in err
    code, _, err = run(capsys, "jobs", "status", "no-such-job")
    assert code == 2 and "no job 'no-such-job'" in err


def test_stopped_job_leaves_no_dataset_that_looks_complete(head, capsys):
    _, store = head
    code, out, _ = run(capsys, "submit", "--no-wait", "--", "data", "prepare", "shapes", "--count", "5000000",
                       "--name", "stopped")
    assert code == 0
    job_id = out.strip().splitlines()[-1]
    code, out, _ = run(capsys, "jobs", "stop", job_id)
    assert code == 0 and "STOPPED" in out
    assert not (store / "datasets" / "stopped" / "manifest.json").exists()
    code, out, _ = run(capsys, "jobs", "status", job_id)
    assert code == 1 and "STOPPED" in out
