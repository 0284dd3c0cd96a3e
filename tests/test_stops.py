"""Stopping a command: SIGINT or SIGTERM ends it within 10 s of the signal with one line, no native stack dump,
and nothing it started left running. The fast test drives ``genai_ray.stops`` in a real process tree; the slow
ones stop the real ``genai-ray serve``, ``train`` and ``tune`` on a private Ray, with tiny data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genai_ray.stops import Stopped, _alive, children_of, run, set_hint, stop_line

ROOT = Path(__file__).resolve().parents[1]
STOP_BOUND_S = 10.0  # from the signal to the command's exit, everything it started gone
READY_S = 600  # generous: a private Ray, TensorFlow and Serve start in minutes on a loaded 2-core box
# A native stack dump (absl's failure handler) or a crashed interpreter. Python tracebacks that Ray's own actors
# print under load (a controller's timed-out resource request) come before the signal and are not the stop's.
DUMP = ("*** SIG", "PC: @", "Fatal Python error")

TREE = """
import subprocess, sys, time
from genai_ray import stops

def work() -> int:
    subprocess.Popen([sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '600']); "
                      "time.sleep(600)"])
    print("ready", flush=True)
    time.sleep(600)
    return 0

stops.set_hint("run t is resumable: rerun the same command")
sys.exit(stops.run(work, verbose=False))
"""


def wait_for(log: Path, proc: subprocess.Popen, marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in log.read_text(errors="replace"):
            return
        assert proc.poll() is None, f"ended before {marker!r}: {log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"no {marker!r} in {timeout} s: {log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen, sig: int) -> float:
    """Send ``sig``; the time it was sent, once the process has exited."""
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return sent


def left_at_bound(sent: float, pids: list[int], ray_tmp: str | None = None) -> list[str]:
    """What still runs of ``pids`` (and of the Ray under ``ray_tmp``) once STOP_BOUND_S has passed since the
    signal: a SIGKILLed process may take a moment to exit, so the test polls up to the bound."""
    while True:
        left = [str(pid) for pid in pids if _alive(pid)] + (ray_processes(ray_tmp) if ray_tmp else [])
        if not left or time.monotonic() > sent + STOP_BOUND_S:
            return left
        time.sleep(0.2)


def last_lines(log: Path) -> list[str]:
    """The non-empty lines up to the end: a command's own output may still race the signal, but once the stop
    line is out, nothing may follow it."""
    return [line for line in log.read_text(errors="replace").splitlines() if line.strip()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_command_and_its_process_tree_with_one_line(sig: int, tmp_path: Path) -> None:
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for(log, proc, "ready", 120)
    deadline = time.monotonic() + 60
    while len(tree := children_of(proc.pid)) < 2 and time.monotonic() < deadline:  # the child and its sleep
        time.sleep(0.1)
    assert len(tree) == 2, tree
    sent = stop(proc, sig)
    assert time.monotonic() - sent < STOP_BOUND_S
    assert proc.returncode == 128 + sig
    name = signal.Signals(sig).name
    lines = last_lines(log)
    assert lines[lines.index("ready") + 1:] == [f"stopped by {name}; run t is resumable: rerun the same command"]
    assert not left_at_bound(sent, tree), "a child outlived the stop"


def test_without_a_signal_the_commands_code_and_errors_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert run(lambda: 3, verbose=False) == 3
    with pytest.raises(ValueError, match="bad"):
        run(lambda: (_ for _ in ()).throw(ValueError("bad")), verbose=False)
    assert signal.getsignal(signal.SIGTERM) is before, "the caller's handlers come back"


def test_stop_line_names_the_signal_and_the_hint() -> None:
    set_hint("campaign c is resumable: rerun the same command with --resume")
    assert stop_line(signal.SIGTERM) == "stopped by SIGTERM; campaign c is resumable: rerun the same command with " \
                                        "--resume"
    assert Stopped(signal.SIGINT).signum == signal.SIGINT
    assert not issubclass(Stopped, Exception), "library code's `except Exception` must not swallow a stop"


# --- the real commands ---------------------------------------------------------------------------------------


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    """A short RAY_TMPDIR of its own (Ray's socket paths must stay short), so the test can find its Ray's
    processes by their command lines."""
    path = tempfile.mkdtemp(prefix="gr-stop-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ray_processes(ray_tmp: str) -> list[str]:
    """Command lines of live processes that belong to the Ray under ``ray_tmp``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ray_tmp in cmdline and _alive(int(entry)):
            found.append(f"{entry}: {cmdline[:200]}")
    return found


def stop_cli(args: list[str], marker: str, sig: int, tmp_path: Path, ray_tmp: str) -> list[str]:
    """Run ``genai-ray ARGS`` until ``marker``, send ``sig``; check the bound, the exit code, that nothing is
    left and that the stop line came once and last; return it."""
    log = tmp_path / "cli.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "genai_ray", *args], stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True, env=env)
    try:
        wait_for(log, proc, marker, READY_S)
        tree = children_of(proc.pid)
        assert ray_processes(ray_tmp), "the command's private Ray is not running under its RAY_TMPDIR"
        sent = stop(proc, sig)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    took = time.monotonic() - sent
    text = log.read_text(errors="replace")
    assert took < STOP_BOUND_S, f"took {took:.1f} s: {text[-2000:]}"
    assert proc.returncode == 128 + sig, text[-3000:]
    assert not [line for line in text.splitlines() if any(d in line for d in DUMP)], text[-3000:]
    assert not left_at_bound(sent, tree, ray_tmp), "a process the command started outlived it"
    lines = last_lines(log)
    stops = [line for line in lines if line.startswith("stopped by ")]
    assert stops == lines[-1:], lines[-20:]
    return stops[0]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_on_a_signal(sig: int, tmp_path: Path, ray_tmp: str) -> None:
    from serve_helpers import make_package

    from genai_ray.ray_runtime import free_port

    store = str(tmp_path / "store")
    uri = make_package(store, "m", "v0001", conditional=False)
    port = free_port()
    line = stop_cli(["--store", store, "serve", "--model", uri, "--port", str(port)], "serving ", sig, tmp_path,
                    ray_tmp)
    assert line == f"stopped by {signal.Signals(sig).name}; http://127.0.0.1:{port}/ is down"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_train_stops_on_a_signal_and_says_how_to_resume(sig: int, digits_uri: str, tmp_path: Path,
                                                        ray_tmp: str) -> None:
    args = ["--store", str(tmp_path / "store"), "train", "--data", digits_uri, "--preset", "tiny", "--kimg", "500",
            "--workers", "1", "--name", "stopped"]
    line = stop_cli(args, "kimg 1.0/500", sig, tmp_path, ray_tmp)
    assert line == f"stopped by {signal.Signals(sig).name}; run stopped is resumable: rerun the same command"


SPACE = """
preset: tiny
base:
  model: {conditional: false}
  train: {epochs: 500, global_batch: 32}
params:
  train.g_lr: {loguniform: [1.0e-4, 2.0e-3]}
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_tune_stops_on_a_signal_and_says_how_to_resume(sig: int, digits_uri: str, tmp_path: Path,
                                                       ray_tmp: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    args = ["--store", str(tmp_path / "store"), "tune", "--data", digits_uri, "--space", str(space), "--samples",
            "2", "--max-concurrent", "1", "--scheduler", "fifo", "--name", "c"]
    line = stop_cli(args, "] report ", sig, tmp_path, ray_tmp)
    resume = "campaign c is resumable: rerun the same command with --resume"
    assert line == f"stopped by {signal.Signals(sig).name}; {resume}"
