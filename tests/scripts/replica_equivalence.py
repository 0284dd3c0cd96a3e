"""One train step on 1 replica vs the same global batch split over 2 replicas (2 logical CPUs).

Run as a script: logical devices must be configured before TensorFlow initialises, which a shared test
process can't promise. Prints the largest weight difference per network as JSON.
"""

import json
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from genai_ray.config import build_config  # noqa: E402
from genai_ray.gan.trainer import GanTrainer  # noqa: E402

overrides = json.loads(sys.argv[1])
cfg = build_config("tiny", overrides)
shape = (8, 8, 1)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (cfg.train.global_batch, *shape)).astype(np.uint8)
y = rng.integers(0, 10, cfg.train.global_batch)


def one_step(strategy):
    trainer = GanTrainer(cfg, shape, 10, strategy)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(cfg.train.global_batch).repeat()
    losses = trainer.train_steps(iter(trainer.strategy.experimental_distribute_dataset(ds)), 1)
    return trainer, losses


def max_diff(a: list, b: list) -> float:
    return max(float(np.abs(np.asarray(p) - np.asarray(q)).max()) for p, q in zip(a, b, strict=True))


single, l1 = one_step(tf.distribute.get_strategy())
double, l2 = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
out = {name: max_diff(getattr(single, name).get_weights(), getattr(double, name).get_weights())
       for name in ("g", "d", "ema")}
# How far the step moved G's trainable weights from their (seeded) initial values: only Adam moves them (about
# the learning rate), and only when D's gradient reached G. Not D: a spectral-norm D re-normalises its kernel in
# every training call, so its weights move by O(0.1) whether or not an update happened.
out["moved"] = max_diff(single.g.trainable_weights, GanTrainer(cfg, shape, 10).g.trainable_weights)
out["replicas"] = double.strategy.num_replicas_in_sync
out["loss_d"] = [l1.d, l2.d]
out["loss_g"] = [l1.g, l2.g]
print("RESULT " + json.dumps(out))
