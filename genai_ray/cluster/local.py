"""A real local Ray head for development: ``genai-ray cluster up|down|status``.

It runs ``ray start --head`` so that ``submit``, ``serve deploy`` and the dashboard work on one machine
exactly as on a remote cluster. Several Rays may share a machine (other checkouts, the test suite), so:

- every port is picked free, and workers get their own port window outside Ray's default 10002-19999;
- Ray's files go to a private temp dir;
- ``ray start`` runs in a new session, and ``down`` stops exactly that session's processes and their
  children. Never ``ray stop``: it kills every Ray on the machine.

What was started is recorded in ``state.json`` (written last and atomically) in the state dir
(``$GENAI_RAY_CLUSTER_DIR`` or ``~/.genai-ray/cluster``). Token authentication is always on.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from genai_ray.cluster import auth
from genai_ray.errors import UserError
from genai_ray.ray_runtime import WORKER_NICENESS, free_port, local_cpus

STATE_DIR_ENV = "GENAI_RAY_CLUSTER_DIR"
DEFAULT_STATE_DIR = "~/.genai-ray/cluster"
WORKER_PORT_WINDOW = 500  # ports for worker processes; Ray's default range is 10002-19999, ours 20000-29999
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0
START_ATTEMPTS = 2  # free ports are picked before `ray start` binds them; another process may win the race


@dataclass
class ClusterState:
    session_id: int  # the process session that `ray start` created; every Ray process of ours is in it
    temp_dir: str  # Ray's private temp dir (sockets, session logs)
    gcs_address: str  # host:port for `ray.init(address=...)` and `ray start --address`
    dashboard_url: str  # the dashboard and Jobs API: what `submit` and `serve deploy` talk to
    client_address: str  # ray://host:port for Ray Client
    num_cpus: int  # logical CPUs advertised (more than cores on small machines, see ray_runtime)
    started_at: float  # unix time
    log_file: str  # output of `ray start`


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR).expanduser()


def _state_file(directory: Path) -> Path:
    return directory / "state.json"


def read_state(directory: Path | None = None) -> ClusterState | None:
    path = _state_file(directory or state_dir())
    if not path.is_file():
        return None
    try:
        return ClusterState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise UserError(f"{path} is not a genai-ray cluster state file ({err}); remove it and run "
                        "'genai-ray cluster up' again") from None


def _write_state(directory: Path, state: ClusterState) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".state.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, _state_file(directory))


# ---- processes, read from /proc so that we need no extra dependency ----

def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[1]), int(fields[3])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def cluster_pids(state: ClusterState) -> list[int]:
    """Our Ray processes: the session `ray start` made, plus their descendants (job drivers get new sessions).

    Empty when none of the session's processes belongs to our temp dir, so a reused session id never
    leads us to someone else's processes.
    """
    stats = {pid: st for pid in _all_pids() if (st := _proc_stat(pid))}
    members = {pid for pid, (_, sid) in stats.items() if sid == state.session_id}
    if not any(state.temp_dir in _cmdline(pid) for pid in members):
        return []
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(members), list(members)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    found.discard(os.getpid())
    return sorted(found)


def is_running(state: ClusterState) -> bool:
    return bool(cluster_pids(state))


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
            os.kill(pid, sig)


def _terminate(state: ClusterState) -> int:
    """SIGTERM our processes, SIGKILL what is left after a grace period; return how many there were."""
    pids = cluster_pids(state)
    _kill(pids, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(_proc_stat(p) for p in pids):
        time.sleep(0.2)
    _kill([p for p in pids if _proc_stat(p)], signal.SIGKILL)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(_proc_stat(p) for p in pids):
        time.sleep(0.1)
    return len(pids)


# ---- up / down ----

def _ray_binary() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise UserError("the 'ray' command is not installed next to this Python; pip install 'ray[default]'")
    return found


def _ensure_token() -> None:
    """A local head with auth on needs a token; make one the way Ray does if there is none yet.

    Ray writes it world-readable; whoever reads it can run code on the cluster, so only the owner may.
    """
    if auth.find_token() is None:
        # capture_output: the command also prints the token, which must not reach a terminal or a log
        subprocess.run([_ray_binary(), "get-auth-token", "--generate"], check=True, capture_output=True)
        auth.default_token_path().chmod(0o600)


def _wait_ready(dashboard_url: str, started: subprocess.Popen, timeout: float) -> None:
    """Wait until the Jobs API answers with our token (the head process may still be starting its agent)."""
    headers = auth.auth_headers(auth.find_token())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{dashboard_url}/api/jobs/", headers=headers, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if started.poll() not in (None, 0):
            break
        time.sleep(0.5)
    raise TimeoutError(f"the Ray head did not answer at {dashboard_url} within {timeout:.0f}s")


def _bootstrap_address(temp_dir: str) -> str | None:
    """The GCS address Ray itself advertises (the node's IP, which `ray.init` expects to see)."""
    path = Path(temp_dir) / "ray_current_cluster"
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def up(directory: Path | None = None, num_cpus: int | None = None, dashboard_host: str = "127.0.0.1",
       timeout: float = READY_TIMEOUT_S) -> tuple[ClusterState, bool]:
    """Start a local Ray head (or find the running one). Returns (state, started_now)."""
    directory = (directory or state_dir()).expanduser()
    existing = read_state(directory)
    if existing and is_running(existing):
        return existing, False
    if existing:  # left by a head that died (a reboot, a kill): its files are of no use
        shutil.rmtree(existing.temp_dir, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    _ensure_token()
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            state = _start(directory, num_cpus or local_cpus(), dashboard_host, timeout)
            break
        except RuntimeError as err:  # a free port taken by someone else in between: new ports, once more
            if attempt == START_ATTEMPTS:
                raise UserError(f"could not start a local Ray head: {err}") from None
    _write_state(directory, state)
    return state, True


def _start(directory: Path, num_cpus: int, dashboard_host: str, timeout: float) -> ClusterState:
    """One `ray start --head` on fresh free ports; on failure, nothing of it is left running."""
    # Unix socket paths are limited to ~107 bytes, so Ray's temp dir must be short: keep it under /tmp.
    temp_dir = tempfile.mkdtemp(prefix="genai-ray-")
    ports = {name: free_port() for name in ("port", "dashboard-port", "ray-client-server-port",
                                            "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                            "runtime-env-agent-port", "metrics-export-port",
                                            "node-manager-port", "object-manager-port")}
    worker_lo = random.randrange(20000, 30000 - WORKER_PORT_WINDOW, 100)
    args = [_ray_binary(), "start", "--head", "--temp-dir", temp_dir, "--num-cpus", str(num_cpus),
            "--include-dashboard", "true", "--dashboard-host", dashboard_host, "--disable-usage-stats",
            "--min-worker-port", str(worker_lo), "--max-worker-port", str(worker_lo + WORKER_PORT_WINDOW - 1)]
    for name, port in ports.items():
        args += [f"--{name}", str(port)]
    env = dict(os.environ, RAY_AUTH_MODE="token")  # token auth stays on, whatever the caller's environment
    env.setdefault("RAY_worker_niceness", str(WORKER_NICENESS))  # training at the daemons' priority, as locally
    # Jobs run `python -m genai_ray`: put this interpreter's bin dir first so `python` is this environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_file = directory / "ray-start.log"
    with open(log_file, "w") as log:
        started = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    host = "127.0.0.1" if dashboard_host in ("0.0.0.0", "::") else dashboard_host
    state = ClusterState(session_id=started.pid, temp_dir=temp_dir, gcs_address=f"127.0.0.1:{ports['port']}",
                         dashboard_url=f"http://{host}:{ports['dashboard-port']}",
                         client_address=f"ray://127.0.0.1:{ports['ray-client-server-port']}",
                         num_cpus=num_cpus, started_at=time.time(), log_file=str(log_file))
    try:
        started.wait(timeout=timeout)
        if started.returncode != 0:
            raise RuntimeError(f"'ray start' exited with {started.returncode}")
        _wait_ready(state.dashboard_url, started, timeout)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as err:
        _terminate(state)
        shutil.rmtree(temp_dir, ignore_errors=True)
        tail = " | ".join(log_file.read_text().strip().splitlines()[-3:])
        raise RuntimeError(f"{err}; last lines of {log_file}: {tail}") from None
    state.gcs_address = _bootstrap_address(temp_dir) or state.gcs_address
    return state


def down(directory: Path | None = None) -> tuple[ClusterState | None, int]:
    """Stop the recorded local head and everything it started. Returns (state, processes stopped)."""
    directory = (directory or state_dir()).expanduser()
    state = read_state(directory)
    if state is None:
        return None, 0
    stopped = _terminate(state)
    shutil.rmtree(state.temp_dir, ignore_errors=True)
    _state_file(directory).unlink(missing_ok=True)
    return state, stopped
