"""``bench.process_cpu`` attributes CPU time to the process that spent it, by its command line."""

import subprocess
import sys
import time

import pytest

from bench.process_cpu import cpu_seconds

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bench.process_cpu reads /proc")

BUSY = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\ntime.sleep(30)"


def test_a_busy_process_is_charged_and_a_sleeping_one_is_not():
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        before = cpu_seconds()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and cpu_seconds()[busy.pid][1] - before[busy.pid][1] < 0.5:
            time.sleep(0.1)
        after = cpu_seconds()
        assert after[busy.pid][1] - before[busy.pid][1] >= 0.5
        assert after[idle.pid][1] - before[idle.pid][1] < 0.2
        assert after[busy.pid][0].startswith(sys.executable)  # named by its command line
    finally:
        busy.kill()
        idle.kill()
