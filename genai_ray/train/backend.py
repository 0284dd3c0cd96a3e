"""``TensorflowTrainer``'s backend config, from a module that does not import TensorFlow.

Ray's own ``TensorflowConfig`` lives in the ``ray.train.tensorflow`` package, whose ``__init__`` imports
TensorFlow. Ray Train's controller unpickles the backend config, so every run's controller imported
TensorFlow (seconds) before it started a single worker, and it never uses it. This config does what
Ray's does, TF_CONFIG on each worker for ``MultiWorkerMirroredStrategy``, and the controller stays light.
Unlike Ray's, it does not set ``TF_USE_LEGACY_KERAS=1``: genai-ray uses Keras 3 and never ``tf.keras``.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
from ray._common.network_utils import build_address
from ray.train._internal.utils import get_address_and_port
from ray.train.backend import Backend, BackendConfig
from ray.train.v2._internal.util import TrainingFramework

from genai_ray.train.tf_cluster import set_tf_config


@dataclass
class TensorflowConfig(BackendConfig):
    @property
    def backend_cls(self):
        return _TensorflowBackend

    @property
    def framework(self):
        return TrainingFramework.TENSORFLOW


def _worker_address() -> str:
    return build_address(*get_address_and_port())


class _TensorflowBackend(Backend):
    def on_start(self, worker_group, backend_config: TensorflowConfig) -> None:
        urls = worker_group.execute(_worker_address)
        ray.get([worker_group.execute_single_async(i, set_tf_config, worker_addresses=urls, index=i)
                 for i in range(len(worker_group))])
