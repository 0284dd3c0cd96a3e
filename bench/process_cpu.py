"""``python -m bench.process_cpu [--interval 2] [--seconds 60]``: cores used per process, every interval.

Run it next to a benchmark to see where a saturated machine's CPU goes (the Serve proxy, a replica, Ray's
daemons, the load generator itself). Ray names its worker processes after the actor (``ray::ProxyActor``),
so one line per interval reads like a profile of the whole cluster. Linux only: it reads /proc.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import threading
import time

TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """{pid: (short command, user + system CPU seconds so far)} for every user-space process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = [arg.decode(errors="replace") for arg in f.read().split(b"\0") if arg]
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended between listdir and open
            continue
        if command:  # kernel threads have none
            out[int(entry)] = (short_name(command), (int(fields[11]) + int(fields[12])) / TICKS_PER_S)
    return out


def short_name(command: list[str]) -> str:
    """``ray::ProxyActor`` for a Ray worker (whatever method it runs), ``raylet`` for a binary, ``python
    log_monitor.py`` for a script: enough to tell Ray's processes apart, short enough for one line."""
    first = command[0].split()[0] if command[0].strip() else "?"  # a title Ray set may hold spaces
    if first.startswith("ray::"):
        return first.split(".")[0]
    name = os.path.basename(first)
    if name.startswith("python"):
        args = iter(command[1:])
        for arg in args:
            if arg in ("-m", "-c"):
                return f"{name} {arg} {' '.join(next(args, '').split())[:30]}".rstrip()
            if not arg.startswith("-"):
                return f"{name} {os.path.basename(arg)}"
    return name


def cores_between(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                  seconds: float) -> collections.Counter:
    """Cores each process name used between two ``cpu_seconds()`` snapshots ``seconds`` apart (processes alive
    in both)."""
    cores = collections.Counter()
    for pid, (name, used) in after.items():
        if pid in before:
            cores[name] += (used - before[pid][1]) / seconds
    return cores


class CpuSampler:
    """Snapshots ``cpu_seconds()`` on a thread while a run goes on, so that a window known only afterwards (a
    run's steady epochs, from their TensorBoard timestamps) can be charged per process. Its own reads of /proc
    are charged to the process that runs it."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.snapshots: list[tuple[float, dict[int, tuple[str, float]]]] = []  # (wall clock, cpu_seconds())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.snapshots.append((time.time(), cpu_seconds()))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def cores(self, start: float, end: float) -> collections.Counter:
        """Cores per process name from the first snapshot at or after wall-clock ``start`` to the last at or
        before ``end``; empty when no two snapshots fall inside."""
        times = [t for t, _ in self.snapshots]
        first, last = bisect.bisect_left(times, start), bisect.bisect_right(times, end) - 1
        if last <= first:
            return collections.Counter()
        return cores_between(self.snapshots[first][1], self.snapshots[last][1], times[last] - times[first])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--top", type=int, default=6, help="processes per line")
    args = parser.parse_args()
    before, then = cpu_seconds(), time.monotonic()
    deadline = then + args.seconds
    while time.monotonic() < deadline:
        time.sleep(args.interval)
        after, now = cpu_seconds(), time.monotonic()
        cores = cores_between(before, after, now - then)
        busiest = "; ".join(f"{name} {used:.2f}" for name, used in cores.most_common(args.top) if used >= 0.01)
        print(f"{time.strftime('%H:%M:%S')} total {sum(cores.values()):.2f} cores: {busiest}", flush=True)
        before, then = after, now


if __name__ == "__main__":
    main()
