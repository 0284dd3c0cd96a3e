"""Starting or joining Ray, in one place.

``ray.init()`` without an address attaches to any Ray already running on the machine, so the embedded
default starts its own (``address="local"``). On a small machine it advertises more logical CPUs than
cores: training workers reserve one logical CPU each and would otherwise leave none for Ray Data's read
tasks, which starves a small run (docs/ray-notes.md).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from genai_ray.errors import UserError

# Ray is imported inside the functions that start or join it: the CLI loads this module at start-up (through
# cluster/local.py), and `genai-ray --help` and config errors stay fast.

ADDRESS_ENV = "GENAI_RAY_ADDRESS"
MIN_LOGICAL_CPUS = 8
TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"
PRINT_PATCH_ENV = "RAY_TRAIN_ENABLE_PRINT_PATCH"
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # where State API clients in the workers find the dashboard
# Ray starts its workers at nice 15, below its own daemons. Training workers are the job here, so they run at
# nice 0 (docs/ray-notes.md): at nice 15 a 1-worker MLP lost about 10% of its images/s on 2 cores.
WORKER_NICENESS = 0
# A private Ray's ~30 processes (daemons, idle pooled workers, Ray Train's and Ray Data's helper actors) each
# export metrics every 10 s and flush task events every second; on 2 cores that is CPU the training workers lose.
# Nothing reads those metrics on a private Ray (no Prometheus), and the dashboard's task list is as useful 10 s
# behind. Training ran faster without them and started no slower. Clusters keep Ray's defaults.
PRIVATE_RAY_CONFIG = {"worker_niceness": WORKER_NICENESS, "enable_metrics_collection": False,
                      "task_events_report_interval_ms": 10_000}
# What a driver that joins a cluster forwards to the cluster's workers: where the store is and how to reach it.
# An allow-list, not a deny-list: credentials come in many names (AWS_SECURITY_TOKEN,
# AWS_CONTAINER_AUTHORIZATION_TOKEN, a team's own GENAI_RAY_*_KEY...), and a runtime env is readable by anyone who
# can open the dashboard or Ray's State API. The cluster's nodes use their own AWS credential chain.
CLUSTER_ENV = ("GENAI_RAY_STORE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def free_port() -> int:
    """A loopback port free right now (another process may still take it before it is bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that travel to a joined cluster's workers: ``CLUSTER_ENV`` only."""
    return {k: environ[k] for k in CLUSTER_ENV if environ.get(k)}


def local_cpus() -> int:
    return max(MIN_LOGICAL_CPUS, 2 * (os.cpu_count() or 1))


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or $GENAI_RAY_ADDRESS), or start a private local Ray."""
    import ray
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # one bar per read floods job logs
    if ray.is_initialized():
        return
    address = address or os.environ.get(ADDRESS_ENV)
    env_vars = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}  # keep worker logs readable
    # Ray Train's controller collects reports every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default), and a
    # worker's next ray.train.report blocks until its previous one was collected. With sub-second epochs that
    # capped training at one epoch per 2 s (docs/ray-notes.md).
    env_vars[TRAIN_POLL_ENV] = os.environ.get(TRAIN_POLL_ENV, TRAIN_POLL_S)
    # Ray Train sends a worker's print() both to stdout and to its logger's console handler: every progress
    # line appeared twice. Unpatched, a print goes to stdout once (and Ray streams it to the driver).
    env_vars[PRINT_PATCH_ENV] = os.environ.get(PRINT_PATCH_ENV, "0")
    if address:
        # Only the store, endpoint and region travel (CLUSTER_ENV); never a secret (docs/security.md).
        shared = cluster_env(os.environ)
        try:
            ray.init(address=address, runtime_env={"env_vars": {**shared, **env_vars}}, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"cannot reach the Ray cluster at {address} ({str(err).splitlines()[0][:160]}); "
                            "check the address or start one with 'genai-ray cluster up'") from None
        return
    # The dashboard serves Ray's State API, which Ray Train's PlacementGroupCleaner needs: without it a Train run
    # whose controller is killed (a trial stopped by ASHA or exploited by PBT) leaks its placement group and
    # its CPUs until the driver exits, and later trials wait for them forever. Loopback only, free port.
    # A private Ray's processes inherit this process's environment (credentials, store, endpoint), so only Ray's
    # and TF's own settings go in the runtime env: what is there, the dashboard and State API show to anyone.
    # The cleaner finds the State API through RAY_API_SERVER_ADDRESS, else by looking for a Ray on this machine,
    # which fails ("Found multiple active Ray instances") when another Ray runs beside the private one.
    dashboard_port = free_port()
    env_vars[API_SERVER_ENV] = f"http://127.0.0.1:{dashboard_port}"
    ray.init(address="local", num_cpus=num_cpus or local_cpus(), include_dashboard=True,
             dashboard_host="127.0.0.1", dashboard_port=dashboard_port,
             runtime_env={"env_vars": env_vars}, configure_logging=True, logging_level="WARNING",
             _system_config=PRIVATE_RAY_CONFIG)


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())
