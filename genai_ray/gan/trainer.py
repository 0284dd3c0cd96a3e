"""The GAN training step under a ``tf.distribute`` strategy. Knows nothing of Ray.

One ``GanTrainer`` holds G, D, an EMA copy of G, two Adam optimisers and a step counter. ``train_steps``
runs several steps inside one ``tf.function`` call (fewer Python round trips and collectives).

Data parallelism is exact: losses are per example and scaled by the GLOBAL batch
(``tf.nn.compute_average_loss``), the optimiser sums gradients over replicas, batch norm statistics are
synchronised across replicas, and the noise for global example i of step s depends only on (seed, s, i).
So N replicas splitting a global batch make the same update as one replica holding all of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from genai_ray.config import DEFAULT_GP_WEIGHT, Config, parse_augment
from genai_ray.gan import family
from genai_ray.gan.augment import ada_adjust, augment_draws, augment_with
from genai_ray.gan.losses import LOSSES, gradient_penalty, mode_seeking_penalty, r1_penalty, r2_penalty

GP_STREAM = 1_000_003  # offsets the gradient-penalty alpha stream from the noise stream
AUG_STREAM = 2_000_003  # offsets the augmentation stream from the noise stream
STREAMS = {"noise": 0, "alpha": GP_STREAM, "augment": AUG_STREAM}  # seed offset of each random stream


@dataclass
class StepLosses:
    d: float
    g: float


def to_unit(images: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the generator's tanh range."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def cosine_decay(progress: float, end: float) -> float:
    """1 at ``progress`` 0, ``end`` at 1 and after, along half a cosine."""
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


class GanTrainer:
    """Networks, optimisers and the distributed train step; checkpointable with ``tf.train.Checkpoint``."""

    def __init__(self, cfg: Config, image_shape: tuple[int, int, int], num_classes: int,
                 strategy: tf.distribute.Strategy | None = None):
        self.cfg = cfg
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.strategy = strategy or tf.distribute.get_strategy()
        t = cfg.train
        self.loss = LOSSES[t.loss]
        self.global_batch = t.global_batch
        replicas = self.strategy.num_replicas_in_sync
        assert t.global_batch % replicas == 0, f"global batch {t.global_batch} does not split over {replicas} replicas"
        self.replica_batch = t.global_batch // replicas
        self.policy = parse_augment(t.augment)
        self.loss_scaled = t.mixed_precision == "float16"  # bfloat16 has float32's range: no loss scaling
        fam = family(cfg.model.family)
        sync_bn = replicas > 1  # batch-norm statistics over all replicas, so N workers make 1 worker's updates
        policy = keras.mixed_precision.global_policy()
        if t.mixed_precision != "off":
            keras.mixed_precision.set_global_policy(f"mixed_{t.mixed_precision}")
        try:
            with self.strategy.scope():
                keras.utils.set_random_seed(t.seed)  # same initial weights on every worker
                build = (cfg.model, self.image_shape, num_classes, sync_bn)
                self.g = fam.build_generator(*build)
                self.d = fam.build_discriminator(*build)
                self.ema = fam.build_generator(*build) if t.ema_decay else None
                self.g_opt = self._optimizer(t.g_lr)
                self.d_opt = self._optimizer(t.d_lr)
                self.g_opt.build(self.g.trainable_variables)
                self.d_opt.build(self.d.trainable_variables)
                self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")  # also the noise counter
                self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")  # epochs completed
                # The augmentation probability (ADA adapts it from 0) and the last step's r_t = E[sign(D(real))].
                self.aug_p = tf.Variable(0.0 if t.ada_target else t.augment_p, dtype=tf.float32, trainable=False,
                                         name="aug_p")
                self.rt = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="rt")
                # R1's and R2's gamma as a fraction of the configured ones (train.gamma_decay), set every tick.
                self.gamma_scale = tf.Variable(1.0, dtype=tf.float32, trainable=False, name="gamma_scale")
        finally:
            keras.mixed_precision.set_global_policy(policy)
        if self.ema is not None:
            self.ema.set_weights(self.g.get_weights())
        parts = {"g": self.g, "d": self.d, "g_opt": self.g_opt, "d_opt": self.d_opt, "step": self.step,
                 "epoch": self.epoch, "aug_p": self.aug_p}
        if self.ema is not None:
            parts["ema"] = self.ema
        self.checkpoint = tf.train.Checkpoint(**parts)
        # XLA compiles the whole step (both updates, the EMA, ADA) on one replica; with several, the step stays
        # uncompiled: XLA on CPU has no collectives, and MirroredStrategy's per-device variables can't enter one
        # cluster (docs/training.md).
        self.jit = t.jit_compile and replicas == 1
        self._draws: dict[str, tf.Tensor] | None = None  # the compiled step's random numbers, while it traces
        self._step_fn = tf.function(self._whole_step, jit_compile=True) if self.jit else self._whole_step
        self._train_steps = tf.function(self._steps)

    def _optimizer(self, lr: float) -> keras.optimizers.Optimizer:
        t = self.cfg.train
        opt = keras.optimizers.Adam(lr, beta_1=t.beta1, beta_2=t.beta2)
        return keras.optimizers.LossScaleOptimizer(opt) if self.loss_scaled else opt

    @property
    def sampler(self) -> keras.Model:
        """The generator to sample and export: the EMA copy when enabled."""
        return self.ema if self.ema is not None else self.g

    # ---- the step -------------------------------------------------------------------------------------
    def _inputs(self, x: tf.Tensor, labels: tf.Tensor) -> tf.Tensor | list[tf.Tensor]:
        return [x, tf.cast(labels, tf.int32)] if self.cfg.model.conditional else x

    def _slice(self, full: tf.Tensor) -> tf.Tensor:
        """This replica's rows of a global-batch tensor: replica r owns rows [r*b, (r+1)*b)."""
        rid = tf.distribute.get_replica_context().replica_id_in_sync_group
        return full[rid * self.replica_batch : (rid + 1) * self.replica_batch]

    def _noise(self, counter: tf.Tensor) -> tf.Tensor:
        return self._slice(self._drawn("noise", counter))

    def _alpha(self, counter: tf.Tensor) -> tf.Tensor:
        return self._slice(self._drawn("alpha", counter))  # Uniform[0, 1]

    def _augment(self, images: tf.Tensor, counter: tf.Tensor) -> tf.Tensor:
        """D's view of this replica's rows: augmented like rows of the global batch (seed, counter)."""
        if not self.policy:
            return images
        rid = tf.distribute.get_replica_context().replica_id_in_sync_group
        return augment_with(images, self.policy, self.aug_p, self._drawn("augment", counter), rid * self.replica_batch)

    # ---- random numbers: stateless functions of (seed, stream, counter), drawn for the global batch -------
    def _draw(self, stream: str, counter: tf.Tensor) -> tf.Tensor:
        seed = tf.stack([tf.constant(self.cfg.train.seed + STREAMS[stream], tf.int64), counter])
        if stream == "noise":
            return tf.random.stateless_normal([self.global_batch, self.cfg.model.latent_dim], seed=seed)
        if stream == "alpha":
            return tf.random.stateless_uniform([self.global_batch], seed=seed)
        return augment_draws(self.policy, seed, self.global_batch)

    def _step_counters(self, stream: str) -> tuple[tf.Tensor, int]:
        """(first counter, how many) of ``stream`` that one step draws at. With b = step x (d_steps + 1): noise at
        b .. b + d_steps (the D steps', then G's), alpha at b .. b + d_steps - 1, augmentation at 2b ..
        2(b + d_steps) + 1 (reals even, fakes odd)."""
        d = self.cfg.train.d_steps
        base = self.step * (d + 1)
        return {"noise": (base, d + 1), "alpha": (base, d), "augment": (2 * base, 2 * (d + 1))}[stream]

    def _step_draws(self) -> dict[str, tf.Tensor]:
        """Every random number of the next step, stacked by counter: what a compiled step reads instead of drawing
        (XLA's stateless generators give other numbers than TensorFlow's kernels for the same seed)."""
        streams = ["noise"] + ["alpha"] * self.loss.gradient_penalty + ["augment"] * bool(self.policy)
        out = {}
        for stream in streams:
            first, count = self._step_counters(stream)
            out[stream] = tf.stack([self._draw(stream, first + i) for i in range(count)])
        return out

    def _drawn(self, stream: str, counter: tf.Tensor) -> tf.Tensor:
        """The global batch's draw of ``stream`` at ``counter``: from the step's precomputed draws when the step is
        compiled, else drawn here."""
        if self._draws is None:
            return self._draw(stream, counter)
        first, _ = self._step_counters(stream)
        return tf.gather(self._draws[stream], counter - first)

    def _apply(self, opt: keras.optimizers.Optimizer, loss: tf.Tensor, tape: tf.GradientTape,
               variables: list) -> None:
        # An embedding's gradient is IndexedSlices, which MultiWorkerMirroredStrategy all-gathers (values and
        # indices) in separate collectives; dense, it joins the one packed all-reduce of the other gradients.
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
        opt.apply_gradients(zip(grads, variables, strict=True))

    def _replica_step(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        t = self.cfg.train
        base = self.step * (t.d_steps + 1)
        d_loss = tf.constant(0.0)
        for k in range(t.d_steps):
            real = self._augment(to_unit(images), 2 * (base + k))  # (b, H, W, C)
            fake = self.g(self._inputs(self._noise(base + k), labels), training=True)
            fake = self._augment(tf.cast(fake, tf.float32), 2 * (base + k) + 1)
            with tf.GradientTape() as tape:
                # The inner tapes see D's inputs for R1 (reals) and R2 (fakes, computed outside every tape: detached
                # from G); unwatched, an inner tape records nothing.
                with tf.GradientTape(watch_accessed_variables=False) as real_tape:
                    if t.r1_gamma:
                        real_tape.watch(real)
                    real_logits = self.d(self._inputs(real, labels), training=True)
                with tf.GradientTape(watch_accessed_variables=False) as fake_tape:
                    if t.r2_gamma:
                        fake_tape.watch(fake)
                    fake_logits = self.d(self._inputs(fake, labels), training=True)
                per_example = self.loss.d(real_logits, fake_logits)
                if t.r1_gamma:
                    per_example += 0.5 * t.r1_gamma * self.gamma_scale * r1_penalty(real_tape, real_logits, real)
                if t.r2_gamma:
                    per_example += 0.5 * t.r2_gamma * self.gamma_scale * r2_penalty(fake_tape, fake_logits, fake)
                if self.loss.gradient_penalty:
                    critic = lambda x: self.d(self._inputs(x, labels), training=True)  # noqa: E731
                    penalty = gradient_penalty(critic, real, tf.cast(fake, tf.float32), self._alpha(base + k))
                    per_example += (DEFAULT_GP_WEIGHT if t.gp_weight is None else t.gp_weight) * penalty
                d_loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
                scaled = self.d_opt.scale_loss(d_loss) if self.loss_scaled else d_loss
            self._apply(self.d_opt, scaled, tape, self.d.trainable_variables)
        signs = tf.reduce_sum(tf.sign(tf.cast(real_logits, tf.float32)))  # this replica's share of r_t (last D step)
        g_counter = base + t.d_steps
        paired_logits = None  # G losses that don't read D(real) ignore it
        if self.loss.g_reads_real:  # RpGAN pairs G's images with reals: D's (updated) logits on them, outside G's tape
            real = self._augment(to_unit(images), 2 * g_counter)  # the one stream counter the D steps leave unused
            paired_logits = self.d(self._inputs(real, labels), training=True)
        if t.mode_seeking:
            labels = tf.repeat(labels[0::2], 2)  # each mode-seeking pair (2j, 2j+1) shares its class
        with tf.GradientTape() as tape:
            z = self._noise(g_counter)
            fake = self.g(self._inputs(z, labels), training=True)
            fake_logits = self.d(self._inputs(self._augment(tf.cast(fake, tf.float32), 2 * g_counter + 1), labels),
                                 training=True)
            g_loss = tf.nn.compute_average_loss(self.loss.g(paired_logits, fake_logits),
                                                global_batch_size=self.global_batch)
            total = g_loss
            if t.mode_seeking:
                total += t.mode_seeking * tf.nn.compute_average_loss(
                    mode_seeking_penalty(fake, z), global_batch_size=self.global_batch // 2)
            scaled = self.g_opt.scale_loss(total) if self.loss_scaled else total
        self._apply(self.g_opt, scaled, tape, self.g.trainable_variables)
        return tf.cast(d_loss, tf.float32), tf.cast(g_loss, tf.float32), signs

    def _ema_decay(self) -> tf.Tensor:
        """``train.ema_decay``, with its half-life capped at ``ema_rampup`` x the steps so far (StyleGAN2-ADA's
        ema_rampup): early in a run the EMA follows G instead of dragging its initial weights along, so short
        runs and early evaluations (the ones ASHA ranks trials by) score G's progress, not the EMA's lag."""
        t = self.cfg.train
        decay = tf.constant(t.ema_decay, tf.float32)
        if not t.ema_rampup:
            return decay
        half_life = tf.cast(self.step + 1, tf.float32) * t.ema_rampup  # in steps
        return tf.minimum(decay, tf.pow(0.5, 1.0 / half_life))

    def _update_ema(self) -> None:
        """EMA of G's trainable weights; other state (batch-norm statistics) is copied."""
        if self.ema is None:
            return
        decay = self._ema_decay()
        trainable = {id(v) for v in self.g.trainable_variables}
        for src, dst in zip(self.g.variables, self.ema.variables, strict=True):
            if id(src) in trainable:
                dst.assign(decay * dst + (1.0 - decay) * src)
            else:
                dst.assign(src)

    def _one(self, iterator) -> tuple:
        images, labels = next(iterator)  # outside the compiled step: XLA has no kernel for an iterator
        if not self.jit:
            return self._whole_step(images, labels)
        return self._step_fn(images, labels, self._step_draws())

    def _whole_step(self, images: tf.Tensor, labels: tf.Tensor, draws: dict | None = None) -> tuple:
        self._draws = draws
        try:
            d_loss, g_loss, signs = self.strategy.run(self._replica_step, args=(images, labels))
        finally:
            self._draws = None
        self._update_ema()  # cross-replica context: every replica's copy gets the same update
        self._update_ada(signs)
        self.step.assign_add(1)
        return d_loss, g_loss

    def _update_ada(self, signs) -> None:
        """r_t = E[sign(D(real))] over the global batch; ADA moves p toward keeping it at ``ada_target``. A fixed p
        needs neither, so it costs no extra collective."""
        t = self.cfg.train
        if not (self.policy and t.ada_target):
            return
        self.rt.assign(self.strategy.reduce(tf.distribute.ReduceOp.SUM, signs, axis=None) / self.global_batch)
        self.aug_p.assign(ada_adjust(self.aug_p, self.rt, t.ada_target, self.global_batch, t.ada_kimg))

    def _steps(self, iterator, n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # One traced copy of the step, in the loop: the last step's losses leave it as loop variables. (A loop over
        # n - 1 steps and then a last step traces the whole GAN step twice, doubling the tracing at start-up.)
        zero = lambda: (tf.constant(0.0), tf.constant(0.0))  # noqa: E731 - per replica, like the step's losses
        d_loss, g_loss = self.strategy.run(zero)
        for _ in tf.range(n):
            d_loss, g_loss = self._one(iterator)
        reduce = self.strategy.reduce  # only the last step's losses are reduced (one collective)
        return (reduce(tf.distribute.ReduceOp.SUM, d_loss, axis=None),
                reduce(tf.distribute.ReduceOp.SUM, g_loss, axis=None))

    def train_steps(self, iterator, n: int) -> StepLosses:
        """Run ``n`` >= 1 steps from a distributed iterator; returns the last step's global-mean losses."""
        assert n >= 1, "train_steps needs at least one step"
        d_loss, g_loss = self._train_steps(iterator, tf.constant(n, tf.int64))
        return StepLosses(float(d_loss), float(g_loss))

    def augment_stats(self) -> dict[str, float]:
        """``aug/p``, and with ADA ``aug/rt`` (the last step's E[sign(D(real))]), for reports and TensorBoard."""
        if not self.policy:
            return {}
        out = {"aug/p": float(self.aug_p.numpy())}
        if self.cfg.train.ada_target:
            out["aug/rt"] = float(self.rt.numpy())
        return out

    def set_learning_rates(self, g_lr: float, d_lr: float) -> None:
        """Overwrite the (possibly restored) optimiser learning rates, e.g. after a PBT exploit."""
        self.g_opt.learning_rate.assign(g_lr)
        self.d_opt.learning_rate.assign(d_lr)

    def schedule(self, progress: float) -> None:
        """Set the learning rates and R1/R2 gammas for ``progress`` (steps taken / the run's steps): cosine from
        the configured values down to ``train.lr_decay`` and ``train.gamma_decay`` of them at the end, as R3GAN
        anneals both. With both decays at 1 it changes nothing, so a PBT exploit keeps its perturbed rates."""
        t = self.cfg.train
        if t.lr_decay < 1.0:
            factor = cosine_decay(progress, t.lr_decay)
            self.set_learning_rates(t.g_lr * factor, t.d_lr * factor)
        if t.gamma_decay < 1.0:
            self.gamma_scale.assign(cosine_decay(progress, t.gamma_decay))

    def learning_rates(self) -> dict[str, float]:
        """The rates the optimisers really use (``hp/g_lr``, ``hp/d_lr``), and while gammas decay the share of
        them in use (``hp/gamma_scale``), for reports."""
        out = {"hp/g_lr": float(np.asarray(self.g_opt.learning_rate)),
               "hp/d_lr": float(np.asarray(self.d_opt.learning_rate))}
        if self.cfg.train.gamma_decay < 1.0:
            out["hp/gamma_scale"] = float(self.gamma_scale.numpy())
        return out

    # ---- data and sampling ----------------------------------------------------------------------------
    def distribute(self, make_dataset) -> tf.distribute.DistributedDataset:
        """``make_dataset(replica_batch)`` -> a tf.data.Dataset of (uint8 images, labels) batches per replica."""
        return self.strategy.distribute_datasets_from_function(lambda _ctx: make_dataset(self.replica_batch))

    def sample(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """float32 [0, 1] images from the sampling generator (for grids and TensorBoard)."""
        x = self.sampler([z, labels.astype(np.int32)] if self.cfg.model.conditional else z, training=False)
        return np.clip((np.asarray(x, np.float32) + 1.0) * 0.5, 0.0, 1.0)
