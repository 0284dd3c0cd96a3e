"""The cluster spec ``MultiWorkerMirroredStrategy`` reads, in one place and without Ray.

Ray Train's backend sets it on each worker; the benchmarks set it by hand on processes that run without Ray,
so that their 2-process baseline forms the same cluster the workers do.
"""

from __future__ import annotations

import json
import os


def set_tf_config(worker_addresses: list[str], index: int) -> None:
    """Make this process worker ``index`` of the cluster at ``worker_addresses`` ("host:port" each)."""
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": worker_addresses},
                                          "task": {"type": "worker", "index": index}})


def loopback_addresses(ports: list[int]) -> list[str]:
    return [f"localhost:{port}" for port in ports]
