"""Lose a node of a two-node ``ray.cluster_utils.Cluster`` mid-run, then add a replacement; prints RESULT <json>.

Its own process and its own Ray, so it never touches the test session's Ray. Each simulated node has 3 CPUs
and each worker reserves 2, so the two SPREAD workers run one per node and the restarted group cannot fit
on the head alone: Ray Train must wait for capacity. The worker-group start timeout is shortened to 5 s so
the outage spans several start attempts; the script holds the outage until Ray Train has retried at least
once (a second pending placement group), adds a replacement node, and measures the resume.
"""

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "5"  # before any Ray process starts: they inherit it

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util import placement_group_table  # noqa: E402

from genai_ray.config import build_config  # noqa: E402
from genai_ray.data.prepare import prepare  # noqa: E402
from genai_ray.data.sources import digits_source  # noqa: E402
from genai_ray.train.run import fit  # noqa: E402

EPOCHS = 3
HANG_S = 240.0  # a bound on each wait: report a hang, never block (3 waits stay under the test's 840 s)


def registered(run_dir: Path) -> list[int]:
    try:
        text = (run_dir / "checkpoint_manager_snapshot.json").read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    return sorted({int(m) for m in re.findall(r"checkpoint-epoch-(\d{5})", text)})


def pending_groups() -> set[str]:
    return {pg_id for pg_id, pg in placement_group_table().items() if pg["state"] == "PENDING"}


class Hang(Exception):
    pass


def until(condition, what: str):
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise Hang(f"no {what} within {HANG_S:.0f} s")


store = sys.argv[1]
run_dir = Path(store) / "runs" / "nodeloss"
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False})
doomed = cluster.add_node(num_cpus=3)
cluster.wait_for_nodes()
ray.init(address=cluster.address)
report: dict = {}
try:
    prepare(digits_source(None), f"{store}/datasets/digits", name="digits", progress=False, shards=2)
    cfg = build_config("tiny", {"train": {"workers": 2, "epochs": EPOCHS, "cpus_per_worker": 2, "placement": "SPREAD",
                                          "global_batch": 32, "steps_per_call": 1,  # 50 small steps an epoch
                                          "checkpoint_every": 1, "keep_checkpoints": EPOCHS, "max_failures": 1}})
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["result"] = fit(cfg, "digits", name="nodeloss", store=store, export=False)
        except BaseException as err:  # noqa: BLE001 - reported in RESULT
            outcome["error"] = f"{type(err).__name__}: {err}"[:2000]

    runner = threading.Thread(target=train, daemon=True)
    runner.start()
    until(lambda: registered(run_dir) or not runner.is_alive(), "registered checkpoint")
    if not runner.is_alive():
        raise RuntimeError(f"the run ended before the node was removed: {outcome.get('error', 'finished')}")
    before = set(placement_group_table())
    removed_at = time.monotonic()
    cluster.remove_node(doomed, allow_graceful=False)  # the node dies with its raylet and the worker on it
    report["checkpoint_before_loss"] = max(registered(run_dir))
    report["run_alive_at_loss"] = runner.is_alive()
    waiting: set[str] = set()

    def retried() -> bool:
        waiting.update(pending_groups() - before)
        return len(waiting) >= 2 or not runner.is_alive()

    until(retried, "retried worker-group start while the node is missing")
    report["pending_groups_during_outage"] = len(waiting)
    report["alive_during_outage"] = runner.is_alive()
    report["outage_s"] = round(time.monotonic() - removed_at, 1)
    replaced_at = time.monotonic()
    cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    runner.join(timeout=HANG_S)
    if runner.is_alive():
        report["hang"] = f"the run neither finished nor failed {HANG_S:.0f} s after the replacement node joined"
    elif "error" in outcome:
        report["error"] = outcome["error"]
    else:
        result = outcome["result"]
        report.update(epochs=result.epochs, resumed_from=result.resumed_from,
                      finished_after_replacement_s=round(time.monotonic() - replaced_at, 1),
                      nodes_alive=len([n for n in ray.nodes() if n["Alive"]]))
    report["checkpoints"] = {p.name: sorted(q.name for q in p.iterdir()) for p in sorted(run_dir.glob("checkpoint-*"))}
except Hang as hang:
    report["hang"] = str(hang)
except BaseException as err:  # noqa: BLE001 - the test reports it
    report["script_error"] = f"{type(err).__name__}: {err}"[:2000]
finally:
    print("RESULT " + json.dumps(report), flush=True)
    ray.shutdown()
    cluster.shutdown()
    os._exit(0)  # a hung Train thread must not keep the process alive
