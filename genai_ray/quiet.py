"""Hide TensorFlow's and Ray's start-up noise from a user's terminal; ``--verbose`` keeps everything.

TensorFlow's C++ banners (oneDNN, CPU features, absl's "before InitializeLog" line) are written straight to
file descriptor 2 before any log level applies, so no environment variable removes them: the filter sits on
the descriptor itself. Ray prints its workers' lines through the driver's ``sys.stdout`` and ``sys.stderr``
with a ``(Actor pid=N)`` prefix; those are filtered by content, so progress lines, errors and tracebacks
pass while INFO chatter and deprecation warnings do not.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import sys
import threading
import warnings
from typing import TextIO

# One pattern per kind of noise, matched after Ray's "(Actor pid=N, ip=...)" prefix and colours are removed.
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+"
NOISE = re.compile("|".join([
    # TensorFlow's and absl's C++ log lines (F, fatal, passes): absl's own TensorFlow copies ignore
    # TF_CPP_MIN_LOG_LEVEL, and grappler logs ERROR for an optimisation it skipped (remapper failed: ...)
    r"WARNING: All log messages before absl::InitializeLog\(\) is called",
    r"[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ",
    r"To enable the following instructions: .* rebuild TensorFlow",
    # INFO logs: Python's and Ray's format, Serve's format, Ray's C++ format (its INFO and WARNING)
    rf"{STAMP}\s+(INFO|DEBUG) ",
    rf"(INFO|DEBUG) {STAMP} ",
    rf"\[{STAMP} [IW] \d+ \d+\] ",
    # Python warnings from libraries, and the source line printed under each
    r"\S+\.py:\d+: \w*(Deprecation|Future|User)Warning: ",
    r"warnings\.warn\(",
    # Ray's own notices that need no action on a private local Ray
    r".*Token authentication is enabled for this Ray cluster",
    r".*core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store",
    r"\(autoscaler \+\S+\) Tip: use `ray status`",
    # ray.init in the command's thread: genai_ray.stops handles SIGTERM in the main thread
    rf"{STAMP}\s+WARNING worker\.py:\d+ -- SIGTERM handler is not set because current thread is not the main",
    # Ray Train's controller and workers narrating a healthy start and each checkpoint
    r"Requesting resources: ", r"Attempting to start training worker group ",
    r"Started training worker group of size ", r"- \(ip=\S+, pid=\d+\) world_rank=",
    r"Checkpoint successfully created at: ",
    # Ray Data narrating each read
    r"Starting execution of Dataset ", r"Execution plan of Dataset ", r"Progress bars disabled\. To enable",
    r"\S*\s+Dataset \S+ execution finished in ",
]))
PREFIX = re.compile(r"^(\x1b\[[0-9;]*m)*\([^)]*pid=[^)]*\)(\x1b\[[0-9;]*m)*\s*")  # Ray's worker-line prefix
ANSI = re.compile(r"\x1b\[[0-9;]*m")
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # what TensorFlow does let an env var hide (its later INFO and WARNING logs)
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",  # Ray's workers inherit it
    "RAY_DEDUP_LOGS": "1",  # one copy of a line that every worker prints
}


def is_noise(line: str) -> bool:
    text = ANSI.sub("", PREFIX.sub("", line)).strip()
    return bool(text) and NOISE.match(text) is not None


class LineFilter(io.TextIOBase):
    """A text stream that forwards whole lines to ``target`` unless they are noise."""

    def __init__(self, target: TextIO):
        self.target = target
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            out = [line + "\n" for line in lines if not is_noise(line)]
            if "\r" in self._partial:  # a live progress line: show its latest state now
                shown, _, self._partial = self._partial.rpartition("\r")
                if not is_noise(shown):
                    out.append(shown + "\r")
            if out:
                self.target.write("".join(out))
                self.target.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._partial and not is_noise(self._partial):
                self.target.write(self._partial)
            self._partial = ""
            self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return self.target.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


class Quiet:
    """Filters ``sys.stdout``, ``sys.stderr`` and, for native writes, file descriptor 2 until ``close``."""

    def __init__(self) -> None:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved_err = os.dup(2)
        # Python's own writes go to the terminal through a filter (so isatty() and live lines still work) ...
        self._stdout, self._stderr = sys.stdout, sys.stderr
        terminal = os.fdopen(os.dup(self._saved_err), "w", encoding="utf-8", errors="replace", buffering=1)
        sys.stdout, sys.stderr = LineFilter(sys.stdout), LineFilter(terminal)
        # ... and native writes to descriptor 2 (TensorFlow's C++ logging) through a pipe and the same filter.
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        native = os.fdopen(os.dup(self._saved_err), "w", encoding="utf-8", errors="replace", buffering=1)
        self._reader = threading.Thread(target=_pump, args=(read, native), name="quiet-stderr", daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Restore the streams; lines still in flight are printed (processes that inherited the pipe, such as
        Ray's, may keep it open: the reader then ends with the process)."""
        sys.stdout.flush()
        sys.stderr.flush()
        # The filters stay usable: log handlers set up meanwhile (Ray's) may still write to them at exit.
        sys.stdout, sys.stderr = self._stdout, self._stderr
        os.dup2(self._saved_err, 2)
        os.close(self._saved_err)
        self._reader.join(timeout=0.5)


def _pump(read: int, out: TextIO) -> None:
    """Copy the pipe behind descriptor 2 to the terminal, filtered, until every writer has closed it."""
    lines = LineFilter(out)
    with os.fdopen(read, "rb", buffering=0) as pipe, out:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := pipe.read(65536):
            lines.write(decoder.decode(chunk))
        lines.flush()


def install(verbose: bool = False) -> Quiet | None:
    """Quiet this process (and the Ray workers it starts) unless ``verbose``; call before TensorFlow loads."""
    return None if verbose else Quiet()
