"""Ctrl-C and SIGTERM on a long command (train, tune, serve): one line, nothing left running, within seconds.

Ray and its libraries take signals over in the main thread: ``ray.init`` sets SIGTERM to ``sys.exit``, Ray's
core worker installs absl's failure signal handler (a native stack dump on SIGTERM that reads like a crash), and
Ray Train's and Ray Tune's ``fit`` take SIGINT for graceful aborts that take many seconds and return as if the
run had ended (a campaign would go on to promote its winner). So the command runs in a worker thread, where none
of them install anything, and the main thread keeps both signals: it takes them back from absl while it waits,
and on a signal prints one line and exits with 128 + the signal's number. It hands the processes it started (the
private Ray and its Serve) to a small reaper process that ends them: ending them from here raced the exit code,
because the driver's core worker exits with code 1 when a call to its raylet finds the raylet gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.2  # how often the main thread takes the signals back (absl's handler arrives with ray.init)
HOOK_S = 4.0  # the most a stop hook (deleting a Serve app on a cluster) may take
GRACE_S = 3.0  # from SIGTERM to SIGKILL for the processes left behind
_hint: list[str] = []  # what the stop line adds: how to resume, or what was removed
_hooks: list[Callable[[], None]] = []


class Stopped(BaseException):
    """SIGINT or SIGTERM in the main thread (a BaseException, so no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def set_hint(text: str) -> None:
    """What the stop line says after 'stopped by SIGNAL', e.g. how to resume the run."""
    _hint[:] = [text]


def on_stop(hook: Callable[[], None]) -> None:
    """Run ``hook`` (bounded by HOOK_S) before the processes are ended, e.g. to delete a Serve app on a cluster."""
    _hooks.append(hook)


def stop_line(signum: int) -> str:
    return f"stopped by {signal.Signals(signum).name}" + (f"; {_hint[0]}" if _hint else "")


def _raise(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def run(work: Callable[[], int], verbose: bool) -> int:
    """``work()`` in a worker thread; its exit code, or 128 + signal after a SIGINT or SIGTERM (this never
    returns then: the process exits once its children are gone)."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["code"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="genai-ray-command", daemon=True)
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    try:
        for sig in SIGNALS:
            signal.signal(sig, _raise)
        worker.start()
        while worker.is_alive():
            worker.join(POLL_S)
            for sig in SIGNALS:  # absl's handler replaces ours when Ray's core worker starts
                signal.signal(sig, _raise)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    except Stopped as stop:
        _stop(stop.signum, verbose)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return int(outcome.get("code", 0))  # type: ignore[call-overload]


def _stop(signum: int, verbose: bool) -> None:
    """One line, then end everything this process started, and exit; a second signal meanwhile is ignored."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    try:
        print(stop_line(signum), file=sys.stderr, flush=True)
        if not verbose:  # Ray's warnings about the workers it is losing are not news now
            _silence()
        for hook in _hooks:
            helper = threading.Thread(target=_quietly(hook), daemon=True)
            helper.start()
            helper.join(HOOK_S)
        _hand_to_reaper(children_of(os.getpid()))
    finally:  # the exit code says 'stopped' whatever happened on the way (with stderr gone, nothing would say)
        os._exit(128 + signum)


def _hand_to_reaper(pids: list[int]) -> None:
    """End ``pids`` and their descendants from a process of their own, in its own session (a second Ctrl-C at
    the terminal doesn't reach it); from here if it can't start."""
    if not pids:
        return
    code = "import sys; from genai_ray.stops import reap; reap([int(p) for p in sys.argv[1:]])"
    try:
        subprocess.Popen([sys.executable, "-c", code, *map(str, pids)], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        reap(pids)


def _quietly(hook: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        with contextlib.suppress(Exception):  # a stop goes on regardless
            hook()

    return call


def _silence() -> None:
    """Python's streams (the command's thread, Ray's log monitor) and native writes all go to /dev/null."""
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from /proc (Ray's daemons, its workers and their children)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat:
            parents.setdefault(int(stat[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def reap(pids: list[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM ``pids`` and their descendants, then SIGKILL those still there after ``grace_s``."""
    pids = _with_descendants(pids)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [p for p in pids if _alive(p)]
    for pid in _with_descendants(pids):
        _signal(pid, signal.SIGKILL)


def _with_descendants(pids: list[int]) -> list[int]:
    found = dict.fromkeys(pids)
    for pid in pids:
        found.update(dict.fromkeys(children_of(pid)))
    return list(found)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    """Still running (a zombie child is done: this process reaps none of Ray's)."""
    stat = _stat(pid)
    return bool(stat) and stat[0] != "Z"


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); none once the process is gone,
    which may happen between listing /proc and reading the file, or halfway through reading it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []
    return fields if len(fields) > 1 else []
