"""One worker of a 2-process MultiWorkerMirroredStrategy: run a conditional train step, print its collectives.

Usage: step_collectives.py INDEX PORT0 PORT1. Both workers must run at once (the strategy connects them).
Prints ``RESULT {op type: count}`` for the collective ops inside one step of the traced ``train_steps`` loop.
"""

import json
import os
import sys
from collections import Counter

index, ports = int(sys.argv[1]), sys.argv[2:4]
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                      "task": {"type": "worker", "index": index}})

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from genai_ray.config import build_config  # noqa: E402
from genai_ray.gan.trainer import GanTrainer  # noqa: E402
from genai_ray.train.input import make_dataset  # noqa: E402
from genai_ray.train.loop import make_strategy  # noqa: E402

cfg = build_config("tiny", {"model": {"conditional": True}, "train": {"global_batch": 16, "workers": 2}})
trainer = GanTrainer(cfg, (8, 8, 1), 10, make_strategy(2))
rng = np.random.default_rng(index)
x, y = rng.integers(0, 256, (64, 8, 8, 1)).astype(np.uint8), rng.integers(0, 10, 64)
iterator = iter(trainer.distribute(lambda batch: make_dataset(x, y, batch, index)))
trainer.train_steps(iterator, 2)  # both workers must execute the collectives, or the other one hangs
graph = trainer._train_steps.get_concrete_function(iterator, tf.constant(2, tf.int64)).graph


def collectives(g) -> Counter:
    """Collective ops in a graph and every function it calls."""
    counts = Counter(op.type for op in g.get_operations() if op.type.startswith("Collective"))
    for function in g._functions.values():
        counts += collectives(function.graph)
    return counts


counts = collectives(next(f.graph for f in graph._functions.values() if b"while_body" in f.name))
print("RESULT " + json.dumps(dict(counts)), flush=True)
