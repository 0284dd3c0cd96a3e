"""A worker's TensorFlow thread pools follow the config; each case needs a fresh process, because TensorFlow
fixes its pools at the first op."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genai_ray.config import build_config

PROBE = """
import sys
import tensorflow as tf
from genai_ray.config import Config
from genai_ray.train.loop import configure_tensorflow
configure_tensorflow(Config.model_validate_json(sys.argv[1]))
tf.constant(1.0) + 1.0  # the pools are built now, with what was set
threading = tf.config.threading
print("THREADS", threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
"""


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"train": {"cpus_per_worker": 2}}, (1, 2)),  # an MLP: one thread per op, ops side by side
    ({"model": {"family": "dcgan"}, "train": {"cpus_per_worker": 2}}, (2, 2)),  # the CPUs the worker reserved
    ({"train": {"cpus_per_worker": 3, "intra_op_threads": 2, "inter_op_threads": 1}}, (2, 1)),
], ids=["mlp", "dcgan", "explicit"])
def test_worker_thread_pools_follow_the_config(overrides, expected):
    config = build_config("default", overrides)
    out = subprocess.run([sys.executable, "-c", PROBE, config.model_dump_json()], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("THREADS"))
    assert tuple(int(n) for n in line.split()[1:]) == expected
