"""One typed config for data, model, training, evaluation, tuning and serving.

The CLI, the Python API, Ray Job entrypoints, Tune and ``serve_configs/`` all read this model. YAML comes
in, every key is validated, unknown keys are errors that name the key, and the resolved config is saved
with every run and model package. Presets: ``tiny`` (tests, laptops), ``default``, ``gpu``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from genai_ray.errors import UserError
from genai_ray.serve.keyhash import MAKE_HASH
from genai_ray.serve.keyhash import parse as parse_key_hash

ModelFamily = Literal["mlp", "dcgan", "resnet"]
LossName = Literal["bce", "hinge", "wgan-gp", "rpgan"]
NormName = Literal["batch", "spectral", "layer", "none"]
Precision = Literal["off", "float16", "bfloat16"]  # train.mixed_precision: the compute dtype beside float32 weights


AUGMENTATIONS = ("translation", "cutout", "color")  # genai_ray/gan/augment.py implements each


def parse_augment(text: str) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ("translation", "cutout"); ``"none"`` or "" -> (). An unknown name raises
    ValueError listing the valid ones (one line from the config validator)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; use a comma-separated list of "
                         f"{', '.join(AUGMENTATIONS)}, or none")
    return names


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(StrictModel):
    family: ModelFamily = "mlp"  # network family: dense "mlp", convolutional "dcgan", residual "resnet"
    conditional: bool = False  # class-conditional G and D (needs a labelled dataset)
    latent_dim: int = Field(100, ge=1, le=4096)  # size of the noise vector z
    g_widths: list[int] = Field(default_factory=lambda: [256, 512, 1024])  # mlp: G hidden sizes
    d_widths: list[int] = Field(default_factory=lambda: [1024, 512, 256])  # mlp: D hidden sizes
    base_channels: int = Field(64, ge=4, le=1024)  # dcgan, resnet: channels at the highest resolution
    res_blocks: int = Field(1, ge=1, le=8)  # resnet: residual blocks at each resolution, in G and in D
    res_expansion: int = Field(1, ge=1, le=8)  # resnet: a block's middle width is this x its channels (inverted
    # bottleneck, as R3GAN's 2); 1 = as wide as the block
    res_group_channels: int = Field(0, ge=0)  # resnet: channels per group of a block's 3x3 conv (R3GAN: 16); 0 =
    # one group (a dense conv)
    g_norm: NormName = "batch"  # normalisation inside the generator
    d_norm: NormName = "none"  # normalisation inside the discriminator ("spectral" stabilises)
    label_embed_dim: int = Field(16, ge=1, le=512)  # conditional: size of the label embedding
    output_activation: Literal["tanh", "linear"] = "tanh"  # G's last layer; linear outputs are clipped at sampling
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # D dropout after each hidden layer


DEFAULT_KIMG = 200.0  # run length when neither train.kimg nor train.epochs is set
DEFAULT_GP_WEIGHT = 10.0  # train.gp_weight when unset (Gulrajani et al. 2017's lambda)


class TrainConfig(StrictModel):
    kimg: float | None = Field(None, gt=0.0)  # run length: thousands of real images shown to D (StyleGAN2-ADA's unit)
    epochs: int | None = Field(None, ge=1)  # or passes over the training split; set kimg or epochs, not both
    global_batch: int = Field(128, ge=1)  # images per step over all workers (split evenly)
    loss: LossName = "bce"  # adversarial loss
    gp_weight: float | None = Field(None, ge=0.0)  # wgan-gp: gradient penalty weight; unset = 10
    r1_gamma: float = Field(0.0, ge=0.0)  # R1 penalty on D's gradient at real images (StyleGAN2's gamma); 0 = off
    r2_gamma: float = Field(0.0, ge=0.0)  # R2 penalty on D's gradient at generated images (R3GAN); 0 = off
    g_lr: float = Field(2e-4, gt=0.0, lt=1.0)  # generator Adam learning rate
    d_lr: float = Field(2e-4, gt=0.0, lt=1.0)  # discriminator Adam learning rate
    lr_decay: float = Field(1.0, gt=0.0, le=1.0)  # both rates end at this fraction of g_lr/d_lr, cosine; 1 = constant
    gamma_decay: float = Field(1.0, gt=0.0, le=1.0)  # r1_gamma and r2_gamma end at this fraction, cosine; 1 = constant
    beta1: float = Field(0.5, ge=0.0, lt=1.0)  # Adam beta1 (both nets)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)  # Adam beta2 (both nets)
    d_steps: int = Field(1, ge=1, le=10)  # discriminator updates per generator update
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)  # EMA of G weights; 0 turns EMA off
    ema_rampup: float = Field(0.05, ge=0.0)  # EMA half-life at most this fraction of the steps so far; 0 = off
    mode_seeking: float = Field(0.0, ge=0.0)  # weight of the mode-seeking term in G's loss (diversity); 0 = off
    augment: str = "none"  # D's input augmentation (DiffAugment/ADA): comma-separated translation, cutout, color; none
    augment_p: float = Field(1.0, ge=0.0, le=1.0)  # probability each transform applies (ignored with ada_target)
    ada_target: float = Field(0.0, ge=0.0, lt=1.0)  # > 0: ADA adapts p from 0 to keep E[sign(D(real))] here (0.6)
    ada_kimg: float = Field(100.0, gt=0.0)  # ADA: thousands of real images over which p can move from 0 to 1
    steps_per_call: int = Field(8, ge=1, le=1000)  # train steps fused into one tf.function call
    mixed_precision: Precision = "off"  # float16 (GPUs, loss-scaled) or bfloat16 (CPUs with AMX; GPUs) compute
    jit_compile: bool = False  # compile each train step with XLA
    seed: int = 0  # seeds weights, noise and data order
    workers: int = Field(2, ge=1)  # Ray Train workers
    cpus_per_worker: float = Field(1.0, gt=0.0)  # logical CPUs each worker reserves
    intra_op_threads: int = Field(0, ge=0)  # threads one TensorFlow op may split over; 0 = auto (1 for mlp)
    inter_op_threads: int = Field(0, ge=0)  # TensorFlow ops that may run at once; 0 = the worker's CPUs
    gpus_per_worker: float = Field(0.0, ge=0.0)  # GPUs each worker reserves
    placement: Literal["PACK", "SPREAD"] = "PACK"  # Ray placement of the workers (SPREAD: one per node)
    checkpoint_every: int = Field(5, ge=1)  # ticks (kimg, or epochs with train.epochs) between checkpoints
    keep_checkpoints: int = Field(2, ge=1)  # checkpoints kept (the latest, or the best: keep_checkpoints_by)
    keep_checkpoints_by: Literal["latest", "fd"] = "latest"  # "fd": keep/export lowest eval/fd (needs eval_every)
    eval_every: int = Field(0, ge=0)  # ticks between cheap in-training evaluations; 0 = off
    eval_samples: int = Field(500, ge=50)  # samples per in-training evaluation
    max_failures: int = Field(2, ge=0)  # worker-group restarts before the run fails
    data_mode: Literal["auto", "memory", "stream"] = "auto"  # hold each worker's shard in memory, or stream it from
    # Parquet; auto: memory when it fits train.memory_budget_mib (docs/data.md)
    memory_budget_mib: int = Field(0, ge=0)  # a worker's in-memory shard limit; 0 = 25% of its share of its node
    shuffle_buffer: int = Field(4096, ge=0)  # stream mode: rows in each worker's local shuffle buffer
    cache_in_memory: bool = True  # memory mode: keep the shard after the first epoch (false: re-read it each epoch)

    @field_validator("augment")
    @classmethod
    def _known_augment(cls, value: str) -> str:
        return ",".join(parse_augment(value)) or "none"

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _precision_from_bool(cls, value: Any) -> Any:
        """true/false, as configs said before bfloat16 existed: float16 (GPU mixed precision) or off."""
        return {True: "float16", False: "off"}.get(value, value) if isinstance(value, bool) else value


class EvalConfig(StrictModel):
    n_samples: int = Field(2000, ge=100)  # generated images per evaluation
    knn_k: int = Field(3, ge=1, le=50)  # k for k-NN precision/recall
    classifier_epochs: int = Field(30, ge=1)  # epochs for the feature classifier (or autoencoder)
    feature_dim: int = Field(64, ge=2, le=1024)  # size of the feature layer every metric measures in
    fd_pixel_weight: float = Field(0.25, ge=0.0, le=10.0)  # FD also sees pixel detail off the data's PCA subspace
    # (speckles, missing strokes) at this weight relative to the features; 0 = classifier features only
    seed: int = 0  # seeds the feature model's training, sample seeds and subsets


# One batch is one generator call holding up to max_batch_size x max_n images (256 x 1024 = 262,144), and
# max_ongoing_requests must be at least max_batch_size; past 256 a batch outgrows a replica's memory and a
# deployment's concurrency (the shipped configs use 16 and 64), so a larger value is a typo, not a tuning.
MAX_BATCH_SIZE = 256


class ServeConfig(StrictModel):
    model_uri: str = "champion"  # model package URI, or a reference (champion, NAME) resolved once per deploy
    max_n: int = Field(64, ge=1, le=1024)  # largest n one request may ask for
    max_batch_size: int = Field(32, ge=1, le=MAX_BATCH_SIZE)  # requests merged into one generator call
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=5.0)  # how long a batch waits to fill
    api_key_env: str = "GENAI_RAY_API_KEY"  # env var holding the optional bearer key
    api_key_hash: str | None = None  # or the key's salted scrypt hash, so no config holds the key (genai-ray key-hash)
    max_body_bytes: int = Field(16_384, ge=256)  # larger request bodies get 413
    insecure_no_auth: bool = False  # allow serving beyond loopback with no API key (refused otherwise)
    expose_model_uri: bool = False  # name the package's store URI in responses (X-Model-Uri), not only its version

    @model_validator(mode="before")
    @classmethod
    def _no_unsalted_key_hash(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key_sha256" in data:
            raise PydanticCustomError("legacy_key_hash", "api_key_sha256 is an unsalted hash, which a weak key is "
                                      f"recovered from in seconds; delete it and set api_key_hash to what "
                                      f"'{MAKE_HASH}' prints (it reads the key on stdin)")
        return data

    @field_validator("api_key_hash")
    @classmethod
    def _scrypt_hash(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_key_hash(value)
            except UserError as err:
                raise PydanticCustomError("key_hash", str(err).removeprefix("serve.api_key_hash: ")) from None
        return value


class TuneConfig(StrictModel):
    samples: int = Field(8, ge=1)  # trials to run
    scheduler: Literal["asha", "pbt", "fifo"] = "asha"
    search: Literal["random", "optuna"] = "random"
    workers_per_trial: int = Field(1, ge=1)
    max_concurrent: int = Field(2, ge=1)
    grace_epochs: int = Field(2, ge=1)  # ASHA: epochs before a trial can be stopped
    reduction_factor: int = Field(2, ge=2)  # ASHA: 1 in this many trials goes on at each rung
    perturbation_interval: int = Field(2, ge=1)  # PBT: epochs between exploit/explore
    seed: int = 0  # seeds the search: the same seed and space sample the same trials in the same order


class Config(StrictModel):
    """The whole resolved config. Saved as JSON with every run and model package."""

    preset: str = "default"
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        t = self.train
        if t.kimg is not None and t.epochs is not None:
            raise ValueError(f"train.kimg={t.kimg:g} and train.epochs={t.epochs} both set the run's length; "
                             "set one of them")
        if t.global_batch % t.workers:
            raise ValueError(
                f"train.global_batch={t.global_batch} is not divisible by train.workers={t.workers}; "
                "pick a batch that splits evenly"
            )
        if t.mode_seeking and (t.global_batch // t.workers) % 2:
            raise ValueError(
                f"train.mode_seeking pairs the images of each worker's batch, but global_batch={t.global_batch} "
                f"over {t.workers} workers gives an odd per-worker batch; pick a batch that splits into even parts"
            )
        if t.loss == "rpgan" and t.gp_weight is not None:
            raise ValueError(f"train.gp_weight={t.gp_weight:g} weights WGAN-GP's penalty, which train.loss=rpgan does "
                             "not use; unset it and regularise D with train.r1_gamma and train.r2_gamma")
        m = self.model
        middle = m.base_channels * m.res_expansion  # a resnet block's narrowest middle width (at full resolution)
        if m.family == "resnet" and m.res_group_channels and middle % m.res_group_channels:
            raise ValueError(f"model.res_group_channels={m.res_group_channels} must divide a resnet block's middle "
                             f"width, model.base_channels x model.res_expansion = {middle}")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    # Small and fast: tests and laptops.
    "tiny": {  # in epochs: tests count on a fixed number of passes
        "model": {"latent_dim": 16, "g_widths": [32, 64], "d_widths": [64, 32], "base_channels": 8},
        "train": {"epochs": 2, "global_batch": 64, "checkpoint_every": 1, "steps_per_call": 4},
        "eval": {"n_samples": 300, "classifier_epochs": 5},
    },
    # The demo path on digits: conditional hinge GAN with spectral-norm D, an EMA generator and a mode-seeking
    # term (0.2), which lifts held-out recall above the KDE baseline's. Batch 64 and 768 kimg (12k steps):
    # precision keeps rising until then, and a length in kimg gives a small dataset as many steps as a large
    # one (counted in epochs, half the data got half the steps). No normalisation in G: nothing to synchronise
    # between workers (synced batch norm costs all-reduces every step), so 1 and 2 workers make the same
    # updates up to float rounding (tests/test_gan_trainer.py).
    "default": {
        "model": {"conditional": True, "latent_dim": 64, "g_widths": [256, 512], "d_widths": [512, 256],
                  "g_norm": "none", "d_norm": "spectral"},
        "train": {"kimg": 768, "global_batch": 64, "loss": "hinge", "g_lr": 2e-4, "d_lr": 2e-4,
                  "beta1": 0.5, "beta2": 0.999, "ema_decay": 0.998, "mode_seeking": 0.2, "checkpoint_every": 32},
    },
    # GPU workers: convolutional, mixed precision, bigger batches. In kimg like the default: 2,000 kimg shows the
    # same images on any dataset size (100 epochs of 20,000 images); the fitted default sizes GPU runs from the
    # rate table instead (genai_ray/train/defaults.py).
    "gpu": {
        "model": {"family": "dcgan", "conditional": True, "latent_dim": 128, "base_channels": 64,
                  "d_norm": "spectral"},
        "train": {"kimg": 2000, "global_batch": 512, "loss": "hinge", "mixed_precision": "float16",
                  "gpus_per_worker": 1, "workers": 1, "steps_per_call": 16},
    },
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def without_length(preset: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset minus its run length when the user sets the other measure: ``--set train.epochs=5`` on a
    preset in kimg means 5 epochs, not a conflict. Setting both yourself is still an error."""
    user = set(overrides.get("train") or {})
    if not {"kimg", "epochs"} & user:
        return preset
    drop = {"kimg", "epochs"} - user
    return {**preset, "train": {k: v for k, v in preset.get("train", {}).items() if k not in drop}}


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{source}: {where}: {msg}" + (f" (got {first['input']!r})" if first["type"] != "extra_forbidden" and
                                          not isinstance(first.get("input"), dict) else "")


def build_config(
    preset: str | None = None, overrides: dict[str, Any] | None = None, source: str = "config",
    fitted: dict[str, Any] | None = None,
) -> Config:
    """Preset (with ``fitted``, the dataset's choices, over it), then YAML/flag overrides, validated. Unknown keys and
    bad values raise ``UserError``."""
    overrides = dict(overrides or {})
    preset = preset or overrides.pop("preset", None) or "default"
    overrides.pop("preset", None)
    if preset not in PRESETS:
        raise UserError(f"{source}: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = deep_merge(PRESETS[preset], fitted) if fitted else PRESETS[preset]
    merged = deep_merge(without_length(base, overrides), overrides)
    merged["preset"] = preset
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise UserError(_format_validation_error(err, source)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections (model:, train:, ...)")
    return data


def load_config(
    path: str | Path | None = None, preset: str | None = None, overrides: dict[str, Any] | None = None,
    fitted: dict[str, Any] | None = None,
) -> Config:
    """Read a YAML config (optional), apply flag overrides, validate. ``fitted`` (genai_ray/train/defaults.py)
    applies only when neither ``preset`` nor the YAML names a preset."""
    data = load_yaml(path) if path else {}
    file_preset = data.pop("preset", None)
    merged = deep_merge(data, overrides or {})
    chosen = preset or file_preset
    return build_config(chosen, merged, source=str(path) if path else "config", fitted=None if chosen else fitted)


def parse_set_option(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--set train.g_lr=1e-4`` style overrides to a nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, for example --set train.epochs=5")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise UserError(f"--set {item!r}: {key.strip()!r} is not a dotted key like train.epochs")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({getattr(err, 'problem', err)}); "
                            "fix it or quote it as a string, for example KEY='\"[text\"'") from None
        node = out
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: {'.'.join(parts[: i + 1])} was already set to a value, "
                                "so it has no keys to set")
        node[parts[-1]] = value
    return out
