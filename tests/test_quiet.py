"""Quiet output: TensorFlow's and Ray's start-up noise is hidden, everything else passes, --verbose keeps all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from genai_ray.quiet import ANSI, is_noise

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import os, sys, warnings
from genai_ray.quiet import install
quiet = install(verbose=sys.argv[1] == "verbose")
if sys.argv[2] == "tf":
    import tensorflow as tf  # its C++ banners go straight to descriptor 2
    print("tf", float(tf.reduce_sum(tf.ones([3]))))
os.write(2, b"I0000 00:00:1796321647.414284   14183 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"E0000 00:00:1796321647.414284   14183 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT\\n")
os.write(2, b"F0000 00:00:1796321647.414284   14183 check.cc:1] a fatal native error stays\\n")
print("(RayTrainWorker pid=42) epoch 10/480  loss/d 1.2  ETA 3m", flush=True)
print("(TrainController pid=7) 2026-12-03 18:00:00,123\\tINFO controller.py:1 -- polling", flush=True)
print("(pid=9) /site-packages/ray/train/x.py:3: DeprecationWarning: old API", file=sys.stderr)
warnings.warn("the driver's own deprecation", DeprecationWarning)
print("\\rprepared 10%", end="", file=sys.stderr, flush=True)
print("\\rprepared 100%", file=sys.stderr, flush=True)
print("Traceback (most recent call last): stays", file=sys.stderr)
if quiet:
    quiet.close()
print("after close")
"""


def run(mode: str, tf: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, "tf" if tf else "-"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


KEPT = ["epoch 10/480  loss/d 1.2  ETA 3m", "a fatal native error stays", "prepared 100%", "Traceback", "after close"]
NOISE = ["oneDNN", "INFO controller.py", "DeprecationWarning", "remapper failed", "absl::InitializeLog"]


def test_quiet_hides_tensorflows_banners_and_ray_chatter_and_keeps_the_rest() -> None:
    out = run("quiet", tf=True)
    assert out.returncode == 0, out.stderr
    both = out.stdout + out.stderr
    assert "tf 3.0" in both and all(k in both for k in KEPT), both
    assert not [n for n in NOISE if n in both], both


def test_verbose_keeps_everything() -> None:
    out = run("verbose", tf=False)
    assert out.returncode == 0, out.stderr
    both = out.stdout + out.stderr
    assert all(k in both for k in KEPT + NOISE[:4]), both


@pytest.mark.parametrize(("line", "noise"), [
    ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", True),
    ("W0000 00:00:1796321647.5 14183 rendezvous.cc:1] Local rendezvous is aborting", True),
    ("F0000 00:00:1796321647.5 14183 check.cc:1] Check failed", False),  # fatal: always shown
    # grappler's ERROR for an optimisation it skipped, as a normal DCGAN run on a Ray Train worker printed it
    ("(RayTrainWorker pid=747) E0000 00:00:1796616784.661265    1085 meta_optimizer.cc:967] remapper failed: "
     "INVALID_ARGUMENT: Mutation::Apply error: fanout 'while/body/_1/gradient_tape/while/discriminator_5/leaky_",
     True),
    ("2026-12-07 04:03:39,424\tWARNING worker.py:1681 -- SIGTERM handler is not set because current thread is not "
     "the main thread.", True),
    ("\x1b[36m(RayTrainWorker pid=1, ip=10.0.0.2)\x1b[0m 2026-12-03 18:00:00,123\tINFO x.py:1 -- hi", True),
    ("(RayTrainWorker pid=1) 2026-12-03 18:00:00,123\tWARNING x.py:1 -- disk almost full", False),
    ("(RayTrainWorker pid=1) epoch 3/480  loss/d 1.2345", False),
    ("To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with flags.", True),
    ("error: config: train.bogus: unknown key", False),
    # what a short `make demo` printed besides its own lines
    ("2026-12-03 18:48:09,519\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled for "
     "this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.", True),
    ("\x1b[36m(TrainController pid=20828)\x1b[0m Requesting resources: {'CPU': 1.0} * 2", True),
    ("(TrainController pid=20828) - (ip=192.0.2.2, pid=20964) world_rank=0, local_rank=0, node_rank=0", True),
    ("(TrainController pid=20828) [2026-12-03 18:48:25,689 E 20828 20862] core_worker.cc:2465: Actor with class "
     "name: 'PreemptionWatcher' and ID: '55fd' has constructor arguments in the object store and max_restarts > 0.",
     True),
    ("(TrainController pid=1) [2026-12-03 18:48:25,689 E 20828 20862] core_worker.cc:9: worker died", False),
    ("(SplitCoordinator pid=21117) \u2714\ufe0f  Dataset train_0358 execution finished in 5.04 seconds", True),
    ("(RayTrainWorker pid=20964) Checkpoint successfully created at: Checkpoint(filesystem=local, path=/x)", True),
    ("(ServeReplica:genai-ray:Generator pid=21945) INFO 2026-12-03 18:49:07,409 genai-ray_Generator 7q9 -- "
     "POST /v1/generate 200 22.0ms", True),
    ("(RayTrainWorker pid=20964) start-up: launch 10.4 s (controller, worker group), setup 13.0 s", False),
    ("", False),
])
def test_noise_patterns(line: str, noise: bool) -> None:
    assert is_noise(line) is noise


CPP_LOG = re.compile(r"(^|\) )([IWE]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\] |WARNING: All log messages before absl)")


def cpp_lines(output: str) -> list[str]:
    """TensorFlow's and absl's C++ log lines, the driver's own or a Ray worker's (Ray colours its prefix)."""
    return [line for line in (ANSI.sub("", raw) for raw in output.splitlines()) if CPP_LOG.search(line)]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_dcgan_run_shows_tensorflows_cpp_lines_only_with_verbose(digits_uri: str, tmp_path: Path) -> None:
    """A normal DCGAN `train` printed grappler's `E0000 ... remapper failed` from its Ray Train worker and absl's
    banners from the driver; -v keeps them. The run also reports its length in kimg, not in ticks."""
    outputs = {}
    for flags in ([], ["-v"]):
        args = [*flags, "--store", str(tmp_path / "store"), "train", "--data", digits_uri, "--preset", "tiny",
                "--set", "model.family=dcgan", "--kimg", "2", "--workers", "1", "--name", f"dc{len(flags)}",
                "--no-export"]
        out = subprocess.run([sys.executable, "-m", "genai_ray", *args], capture_output=True, text=True,
                             timeout=900, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr[-3000:]
        outputs[bool(flags)] = out.stdout + out.stderr
    quiet, verbose = outputs[False], outputs[True]
    assert "finished 2.048 kimg" in quiet, quiet[-2000:]  # ceil(2000 / 64) steps of 64 images
    assert not cpp_lines(quiet), quiet
    lines = cpp_lines(verbose)
    assert any("RayTrainWorker" in line for line in lines), verbose[-3000:]  # a Train worker's, streamed by Ray
    assert any("absl::InitializeLog" in line and "pid=" not in line for line in lines), lines  # the driver's own


TUNE_SPACE = """
preset: tiny
base:
  model: {conditional: false}
  train: {epochs: 2, eval_every: 1, eval_samples: 100, global_batch: 32}
  eval: {n_samples: 200, classifier_epochs: 3}
params:
  train.g_lr: {loguniform: [1.0e-4, 2.0e-3]}
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_tune_campaign_ends_without_its_trials_cpp_lines(digits_uri: str, tmp_path: Path) -> None:
    """Trial workers' absl and oneDNN lines reached the terminal at the end of a campaign: Ray flushed them after
    the filter had closed."""
    space = tmp_path / "space.yaml"
    space.write_text(TUNE_SPACE)
    args = ["--store", str(tmp_path / "store"), "tune", "--data", digits_uri, "--space", str(space), "--samples", "2",
            "--max-concurrent", "2", "--scheduler", "fifo", "--name", "q"]
    out = subprocess.run([sys.executable, "-m", "genai_ray", *args], capture_output=True, text=True, timeout=1000,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    both = out.stdout + out.stderr
    assert out.returncode == 0, both[-3000:]
    assert "campaign q: best trial" in both
    assert not cpp_lines(both), both
