"""``bench.process_cpu`` charges CPU time to the process that spent it, under a name that says what it is."""

import os
import subprocess
import sys
import time

import pytest

from bench.process_cpu import CpuSampler, cpu_seconds, short_name

BUSY = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\ntime.sleep(30)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bench.process_cpu reads /proc")
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
        assert after[busy.pid][0].startswith(os.path.basename(sys.executable) + " -c import time")
    finally:
        busy.kill()
        idle.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bench.process_cpu reads /proc")
def test_the_sampler_charges_a_window_chosen_afterwards():
    busy = subprocess.Popen([sys.executable, "-c", BUSY])  # 1 s of CPU, then asleep
    try:
        started = time.time()
        with CpuSampler(interval=0.2) as sampler:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and cpu_seconds()[busy.pid][1] < 1.0:
                time.sleep(0.1)
            burnt = time.time()
            time.sleep(1.5)
            ended = time.time()
        name = cpu_seconds()[busy.pid][0]
        assert sampler.cores(started, burnt)[name] > 0.2
        assert sampler.cores(burnt, ended)[name] < 0.1
        assert not sampler.cores(ended + 10, ended + 20)  # no snapshots there
    finally:
        busy.kill()


def test_names_say_which_process_it_is():
    assert short_name(["ray::ProxyActor.receive_asgi_messages   "]) == "ray::ProxyActor"
    assert short_name(["ray-dashboard-NodeHead-0 (/venv/bin/python -B /venv/lib/ray/dashboard/dashboard.py)"]) == \
        "ray-dashboard-NodeHead-0"
    assert short_name(["/venv/lib/ray/core/src/ray/raylet/raylet", "--node_ip_address=1"]) == "raylet"
    assert short_name(["/venv/bin/python", "-u", "/venv/lib/ray/_private/log_monitor.py", "--x"]) == \
        "python log_monitor.py"
    assert short_name(["python3", "-m", "bench.serve_load", "--seconds", "6"]) == "python3 -m bench.serve_load"
