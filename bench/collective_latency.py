"""The floor under a 2-worker step: how long one MultiWorkerMirroredStrategy all-reduce takes on this machine.

Two processes on loopback, one thread each (as 2 Ray Train workers on 2 cores), all-reduce a tensor of
4 KB (latency) and one the size of a model's D and G gradients (bandwidth), each call a ``tf.function`` like
the train step's. A GAN step makes two of them back to back (D's gradients, then G's, which need the updated
D), so a step can never be shorter than the two model-sized numbers together. ``--model mlp`` is the default
preset on digits, ``--model dcgan`` the DCGAN that ``bench.train_throughput`` trains on 32x32 shapes.

    python -m bench.collective_latency [--calls 200] [--model mlp|dcgan]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench.common import free_port, machine, table

WORKER = r"""
import sys, time
from genai_ray.train.tf_cluster import loopback_addresses, set_tf_config
index, ports, floats, calls = int(sys.argv[1]), [int(p) for p in sys.argv[2:4]], int(sys.argv[4]), int(sys.argv[5])
set_tf_config(loopback_addresses(ports), index)
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
strategy = tf.distribute.MultiWorkerMirroredStrategy()
ones = tf.ones([floats])
call = tf.function(lambda: strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", ones)))
for _ in range(5):
    call()
started = time.perf_counter()
for _ in range(calls):
    call()
print("MS", (time.perf_counter() - started) / calls * 1000, flush=True)
"""


MODELS = {  # (config overrides of the default preset, image shape, classes): what make bench trains
    "mlp": ({}, (8, 8, 1), 10),
    "dcgan": ({"model": {"family": "dcgan", "base_channels": 32, "conditional": False}}, (32, 32, 3), 1),
}


def model_floats(model: str) -> dict[str, int]:
    """Trainable parameters of the model's D and G: the gradients a step reduces."""
    from genai_ray.config import build_config
    from genai_ray.gan.trainer import GanTrainer

    overrides, shape, classes = MODELS[model]
    trainer = GanTrainer(build_config("default", overrides), shape, classes)
    count = lambda model: sum(int(v.shape.num_elements()) for v in model.trainable_variables)  # noqa: E731
    return {"D's gradients": count(trainer.d), "G's gradients": count(trainer.g)}


def all_reduce_ms(floats: int, calls: int) -> float:
    ports = [str(free_port()), str(free_port())]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), *ports, str(floats), str(calls)],
                                stdout=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    if any(w.returncode for w in workers):
        raise SystemExit("a worker failed; see its stderr above")
    return max(float(line.split()[1]) for out in outs for line in out.splitlines() if line.startswith("MS"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--model", choices=sorted(MODELS), default="mlp")
    args = ap.parse_args()
    sizes = {"4 KB (latency)": 1024, **{f"{args.model} {k}": v for k, v in model_floats(args.model).items()}}
    rows = [[name, f"{floats * 4 / 2**20:.2f}", f"{all_reduce_ms(floats, args.calls):.2f}"]
            for name, floats in sizes.items()]
    print(f"\n{machine()}; 2 processes on loopback, 1 thread each, {args.calls} calls each")
    print(table(["tensor", "MiB", "ms per all-reduce"], rows))
    print(json.dumps({r[0]: float(r[2]) for r in rows}))


if __name__ == "__main__":
    main()
