"""Where a run will execute, as the fitted defaults need to know it: CPU cores, or GPUs.

A run that joins a Ray cluster (``--address`` or $GENAI_RAY_ADDRESS), or a process that already runs Ray, is
fitted to ``ray.cluster_resources()``: Ray's logical resources, so a cluster whose nodes advertise GPUs is fitted
for GPU workers. The private local Ray that ``genai-ray train`` starts is not started for this: the fitting
reads this machine as that Ray would (its cores, and the GPUs Ray's own accelerator detection finds).
``--gpus-per-worker`` (``train.gpus_per_worker``) alone also means GPU workers. A local run also reads whether
this CPU has AMX bfloat16 units; on a cluster, set ``train.mixed_precision=bfloat16`` where the workers' CPUs do.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from genai_ray import ray_runtime

# Ray is imported inside the functions that ask it about the cluster: the CLI loads this module at start-up (through
# train/defaults.py), and `genai-ray --help` and config errors stay fast.


@dataclass(frozen=True)
class Hardware:
    cpus: int  # CPU cores the run's workers share
    gpus: int  # GPUs the run may use; 0: CPU workers
    gpus_per_worker: float = 0.0  # what the user set (train.gpus_per_worker); 0: fitted, 1 per worker on GPUs
    where: str = "this machine"
    bf16: bool = False  # the CPUs have AMX bfloat16 units (mixed bfloat16 steps run faster there)

    @property
    def kind(self) -> str:
        """The rate table's hardware class: ``"gpu"`` or ``"cpu"``."""
        return "gpu" if self.gpus else "cpu"

    @property
    def gpu_workers(self) -> int:
        """Workers that fill the GPUs: one per GPU, or as many as ``gpus_per_worker`` allows (at least 1)."""
        return max(1, math.floor(self.gpus / (self.gpus_per_worker or 1.0)))

    def describe(self) -> str:
        if self.gpus:
            return f"{self.gpus} GPU{'s' if self.gpus > 1 else ''}"
        return f"{self.cpus} CPU{'s' if self.cpus > 1 else ''}"


def local_gpus() -> int:
    """GPUs a local Ray would advertise on this machine (Ray's detection: CUDA_VISIBLE_DEVICES, then the driver)."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        return int(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators() or 0)
    except Exception:  # noqa: BLE001 - a private Ray API: no answer means no GPUs we can count on
        return 0


def cpu_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPUs have AMX bfloat16 tile units (the ``amx_bf16`` flag), where oneDNN runs
    bfloat16 convolutions faster than float32 ones (docs/training.md). Without them bfloat16 was not measured, so
    the fitting keeps float32."""
    try:
        with open(cpuinfo) as f:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
    except OSError:
        return False


def with_gpus_per_worker(hw: Hardware, gpus_per_worker: float | None) -> Hardware:
    """``hw`` as the user's ``train.gpus_per_worker`` changes it: > 0 means GPU workers even where the cluster
    advertises none yet (an autoscaler may add them); 0 means CPU workers on any cluster."""
    if gpus_per_worker is None:
        return hw
    if gpus_per_worker == 0:
        return replace(hw, gpus=0, gpus_per_worker=0.0)
    return replace(hw, gpus=max(hw.gpus, math.ceil(gpus_per_worker)), gpus_per_worker=gpus_per_worker)


def detect(address: str | None = None, gpus_per_worker: float | None = None) -> Hardware:
    """The hardware a run started with ``address`` will train on. Joins that cluster (``fit`` reuses the
    connection); never starts a local Ray."""
    import ray

    address = address or os.environ.get(ray_runtime.ADDRESS_ENV)
    cores = os.cpu_count() or 1
    if address or ray.is_initialized():
        ray_runtime.ensure_ray(address)
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 1))
        # a Ray started in this process is local: it advertises more logical CPUs than cores (ray_runtime.py);
        # a cluster's workers may run on other CPUs than this one, so only a local Ray reads this CPU's flags
        hw = Hardware(cpus if address else min(cpus, cores), int(resources.get("GPU", 0)),
                      where=f"the Ray cluster at {address}" if address else "the running Ray",
                      bf16=not address and cpu_bfloat16())
    else:
        hw = Hardware(cores, local_gpus(), bf16=cpu_bfloat16())
    return with_gpus_per_worker(hw, gpus_per_worker)
