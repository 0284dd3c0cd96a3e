"""Real faults during training and tuning (issue 8): a Train worker SIGKILLed mid-epoch, a node of a 2-node
cluster removed mid-run, and a Tune trial whose Train worker is SIGKILLed.

Every fault is real: the worker's pid comes from Ray's State API (the ``RayTrainWorker`` actors), the kill
is ``SIGKILL`` from the test, and the node is removed with ``Cluster.remove_node``. Each assertion message
states the fault, the expectation and what was measured. Timeouts only catch hangs; nothing is timed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from genai_ray import storage
from genai_ray.config import build_config
from tests.helpers import prepare_digits

pytestmark = pytest.mark.slow  # fault injection into whole training runs and campaigns; `make test-fast` skips it

WORKER_CLASS = "RayTrainWorker"  # Ray Train V2's worker actor class
CHECKPOINT_FILES = ("samples.png", "meta.json")


def registered_checkpoints(run_dir: Path) -> list[int]:
    """Epochs of the checkpoints Ray Train's controller has registered for a run (its snapshot file)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        text = snapshot.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    return sorted({int(m) for m in re.findall(r"checkpoint-epoch-(\d{5})", text)})


def train_worker_pids() -> list[int]:
    """Pids of the live Ray Train worker actors on the session's Ray (State API, no test hook)."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address,  # this test run's Ray, not another's
                         filters=[("class_name", "=", WORKER_CLASS), ("state", "=", "ALIVE")],
                         raise_on_missing_output=False)
    return sorted(a.pid for a in actors if a.pid)


def live_train_workers(expected: int) -> list[int]:
    """Poll the State API until it lists ``expected`` live Train workers (it can lag under load)."""
    pids: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = train_worker_pids()
        if len(pids) == expected:
            break
        time.sleep(1)
    return pids


def rank0_pid(run_dir: Path) -> int | None:
    """Rank 0 alone writes TensorBoard; TensorFlow names each event file after the writing process's pid."""
    files = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    pids = [int(m.group(1)) for p in files if (m := re.search(r"\.(\d+)\.\d+\.v2$", p.name))]
    return pids[-1] if pids else None


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def incomplete_checkpoints(run_dir: Path) -> dict[str, list[str]]:
    """Checkpoint folders missing any of their parts: the tf.train.Checkpoint state, samples.png, meta.json."""
    bad = {}
    for folder in sorted(run_dir.glob("checkpoint-epoch-*")):
        missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
        if not list((folder / "state").glob("ckpt.index")) or not list((folder / "state").glob("ckpt.data-*")):
            missing.append("state/ckpt.*")
        if missing:
            bad[folder.name] = missing
    return bad


def in_background(work) -> tuple[threading.Thread, dict]:
    """Run ``work()`` in a daemon thread; the dict receives its "result" or the "error" it raised."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as err:  # noqa: BLE001 - reported by the test's assertions
            outcome["error"] = err

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    return runner, outcome


def sigkill_rank0(run_dir: Path, last_epoch: int, what: str) -> tuple[int, int | None, list[int]]:
    """SIGKILL rank 0 of the run's 2 live Train workers (any worker if rank 0's pid is unknown), checking first
    that the run has not reached its last checkpoint. Returns (victim pid, rank 0 pid, registered epochs)."""
    pids = live_train_workers(2)
    assert len(pids) == 2, f"expected the {what}'s 2 live {WORKER_CLASS} actors, the State API lists {pids}"
    rank0 = rank0_pid(run_dir)
    victim = rank0 if rank0 in pids else pids[0]
    seen = registered_checkpoints(run_dir)
    assert max(seen) < last_epoch, f"the {what} reached its last checkpoint before the fault could be injected: {seen}"
    os.kill(victim, signal.SIGKILL)
    return victim, rank0, seen


@pytest.mark.timeout(900)
def test_sigkill_of_a_train_worker_mid_epoch_resumes_from_the_last_checkpoint(ray_local, tmp_path):
    """Fault: SIGKILL rank 0 (the checkpoint writer) by pid once a checkpoint is registered, mid-epoch.
    Expect: Ray Train restarts the group from that checkpoint and the run ends at the configured epoch."""
    from genai_ray.train.run import fit

    store = str(tmp_path / "store")
    prepare_digits(storage.join(store, "datasets", "digits"), shards=2)
    epochs = 6  # 50 small steps each: the kill lands well before the end
    cfg = build_config("tiny", {"train": {"workers": 2, "epochs": epochs, "global_batch": 32, "steps_per_call": 1,
                                          "checkpoint_every": 1, "keep_checkpoints": epochs, "max_failures": 1}})
    run_dir = tmp_path / "store" / "runs" / "sigkill"
    runner, outcome = in_background(lambda: fit(cfg, "digits", name="sigkill", store=store, export=False))
    wait_for(lambda: registered_checkpoints(run_dir) or not runner.is_alive(), 300,
             "the run's first registered checkpoint")
    assert runner.is_alive(), f"the run ended before the fault could be injected: {outcome}"
    victim, rank0, seen = sigkill_rank0(run_dir, epochs, "run")
    killed_at = time.monotonic()
    runner.join(timeout=360)
    assert not runner.is_alive(), "fault: SIGKILL of a Train worker; expected the run to finish; it still runs"
    fault = (f"fault: SIGKILL of Train worker pid {victim} ({'rank 0' if victim == rank0 else 'rank unknown'}) "
             f"after checkpoint epoch {max(seen)} was registered")
    assert "error" not in outcome, f"{fault}; expected the run to recover (max_failures=1); it failed: {outcome}"
    result = outcome["result"]
    measured = (f"finished {time.monotonic() - killed_at:.0f} s after the kill at epoch {result.epochs}, "
                f"last attempt resumed from epoch {result.resumed_from}")
    print(f"worker SIGKILL: {fault}; {measured}")
    assert result.epochs == epochs, f"{fault}; expected the run to end at epoch {epochs}; {measured}"
    assert result.resumed_from >= max(seen) >= 1, (
        f"{fault}; expected a restart from that checkpoint or a later one, not from scratch; {measured}")
    assert not storage.exists(storage.join(result.run_uri, "faults")), "the fault-injection hook must not have run"
    bad = incomplete_checkpoints(run_dir)
    assert not bad, f"{fault}; expected every checkpoint folder to be complete; incomplete: {bad}"
    assert (run_dir / f"checkpoint-epoch-{epochs:05d}").is_dir(), f"{fault}; no final checkpoint in {run_dir}"


@pytest.mark.timeout(900)
def test_node_lost_mid_run_waits_for_capacity_and_resumes_on_a_replacement_node(tmp_path):
    """Fault: remove the non-head node of a 2-node cluster (SIGKILL, no drain) while a SPREAD run trains on it.
    Expect: Ray Train keeps retrying the worker-group start while capacity is missing (no failure, no hang), and
    when a replacement node joins it resumes from the last registered checkpoint and finishes."""
    script = Path(__file__).parent / "scripts" / "node_loss_train.py"
    try:
        out = subprocess.run([sys.executable, str(script), str(tmp_path / "store")], capture_output=True, text=True,
                             timeout=840)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"fault: node removed mid-run; expected a bounded outcome; the script hung for "
                             f"{err.timeout:.0f} s") from None
    lines = [line[7:] for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the node-loss script printed no RESULT (exit {out.returncode}): {out.stderr[-3000:]}"
    r = json.loads(lines[-1])
    print(f"node loss: {r}")
    fault = f"fault: non-head node removed after checkpoint epoch {r.get('checkpoint_before_loss')}"
    assert r.get("run_alive_at_loss") and r.get("checkpoint_before_loss", 3) < 3, (
        f"{fault}; expected the node to be lost mid-run, before the last checkpoint; measured {r}")
    assert "hang" not in r and "script_error" not in r, f"{fault}; expected a bounded outcome; measured {r}"
    assert r["alive_during_outage"] and r["pending_groups_during_outage"] >= 2, (
        f"{fault}; expected the run to wait for capacity, retrying the worker-group start; measured {r}")
    assert "error" not in r, f"{fault}; expected a resume on the replacement node; the run failed: {r['error']}"
    assert r["epochs"] == 3 and r["nodes_alive"] == 2, f"{fault}; expected 3 epochs on 2 nodes; measured {r}"
    assert r["resumed_from"] >= r["checkpoint_before_loss"] >= 1, (
        f"{fault}; expected a resume from that checkpoint, not from scratch; measured {r}")
    incomplete = {k: v for k, v in r["checkpoints"].items() if not {"meta.json", "samples.png", "state"} <= set(v)}
    assert not incomplete, f"{fault}; expected only complete checkpoint folders; incomplete: {incomplete}"


TUNE_SPACE = """
preset: tiny
base:
  model: {conditional: false}
  train: {epochs: 6, eval_every: 1, eval_samples: 100, global_batch: 32, steps_per_call: 1, max_failures: 1}
  eval: {n_samples: 200, classifier_epochs: 3}
params:
  model.latent_dim: {choice: [8]}
"""


@pytest.mark.timeout(900)
def test_tune_trial_whose_train_worker_is_sigkilled_resumes_and_the_campaign_completes(ray_local, tmp_path):
    """Fault: SIGKILL a Train worker of the only trial once its first checkpoint is registered.
    Expect: the trial's Train run restarts from that checkpoint (its reported epochs never go back to 1), the
    trial finishes all epochs, and the campaign completes with a leaderboard and a promoted model."""
    from genai_ray.tune.campaign import run_campaign
    from genai_ray.tune.space import load_space

    store = str(tmp_path / "store")
    prepare_digits(storage.join(store, "datasets", "digits"), shards=2)
    (tmp_path / "space.yaml").write_text(TUNE_SPACE)
    space = load_space(tmp_path / "space.yaml")
    tune_cfg = build_config("tiny", {"tune": {"samples": 1, "scheduler": "fifo", "max_concurrent": 1,
                                                "workers_per_trial": 2}}).tune
    runner, outcome = in_background(
        lambda: run_campaign(space, "digits", name="kill", store=store, tune_cfg=tune_cfg))
    runs = tmp_path / "store" / "runs"

    def trial_run() -> Path | None:
        return next((d for d in runs.glob("tune-kill-*") if registered_checkpoints(d)), None) if runs.is_dir() else None

    wait_for(lambda: trial_run() or not runner.is_alive(), 300, "the trial's first registered checkpoint")
    assert runner.is_alive(), f"the campaign ended before the fault could be injected: {outcome}"
    run_dir = trial_run()
    victim, rank0, seen = sigkill_rank0(run_dir, 6, "trial")
    fault = (f"fault: SIGKILL of trial {run_dir.name}'s Train worker pid {victim} "
             f"({'rank 0' if victim == rank0 else 'rank unknown'}) after checkpoint epoch {max(seen)} was registered")
    runner.join(timeout=480)
    assert not runner.is_alive(), f"{fault}; expected the campaign to complete; it still runs"
    assert "error" not in outcome, f"{fault}; expected the campaign to complete; it failed: {outcome}"
    result = outcome["result"]
    [row] = result.leaderboard
    trial_dir = next(p for p in (tmp_path / "store" / "campaigns" / "kill").iterdir() if row["trial"] in p.name)
    history = [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines() if x.strip()]
    epochs = [h["epoch"] for h in history]
    last = json.loads((run_dir / "checkpoint-epoch-00006" / "meta.json").read_text())
    measured = (f"trial reported epochs {epochs}, its last Train attempt resumed from epoch {last['resumed_from']}, "
                f"leaderboard {[(r['trial'], r['status'], r['epochs']) for r in result.leaderboard]}")
    print(f"tune trial worker SIGKILL: {fault}; {measured}")
    assert row["status"] == "TERMINATED" and row["epochs"] == 6, f"{fault}; expected a finished trial; {measured}"
    assert epochs == sorted(set(epochs)) and epochs[-1] == 6, (
        f"{fault}; expected the reports to continue after the checkpoint, never restarting at epoch 1; {measured}")
    assert last["resumed_from"] >= max(seen) >= 1, f"{fault}; expected a resume from that checkpoint; {measured}"
    assert result.package_uri and result.promoted, f"{fault}; expected the campaign to promote: {result.message}"
