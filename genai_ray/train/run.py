"""The driver side of training: validate, build the ``TensorflowTrainer``, fit, export.

Every user mistake is refused here, before any worker starts. ``build_trainer`` is separate from ``fit``
so tuning can wrap the same trainer in its own trials.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from genai_ray import storage
from genai_ray.config import Config
from genai_ray.data.manifest import Manifest
from genai_ray.data.reader import Dataset, open_dataset, resolve_dataset_uri
from genai_ray.errors import UserError
from genai_ray.gan import family
from genai_ray.train.export import class_probs
from genai_ray.train.worker import RunPlan, train_loop_per_worker

RUN_CONFIG_FILE = "genai-ray-run.json"  # the run's resolved config, written before the first worker starts


@dataclass
class TrainResult:
    run_uri: str
    epochs: int  # epochs completed
    metrics: dict[str, Any]  # the last checkpointed report
    checkpoint_uri: str
    resumed_from: int  # epoch this (last) attempt started from: 0 for a fresh run
    package_uri: str | None  # the exported model package, when exported


def runs_uri(store: str) -> str:
    return storage.join(store, "runs")


def plan_run(cfg: Config, dataset: Dataset, run_uri: str) -> RunPlan:
    """Check the config against the dataset; raise ``UserError`` naming the fix."""
    m: Manifest = dataset.manifest
    family(cfg.model.family).check_image_shape(tuple(m.shape))
    if cfg.model.conditional and not m.labelled:
        raise UserError(f"model.conditional=true needs labels, but dataset {m.name} ({dataset.uri}) is unlabelled; "
                        "set model.conditional=false or prepare a labelled dataset")
    t = cfg.train
    steps = m.train_count // t.global_batch
    if steps < 1:
        raise UserError(f"train.global_batch={t.global_batch} is larger than the {m.train_count} training images of "
                        f"{m.name}; lower train.global_batch")
    if m.train_count // t.workers < t.global_batch // t.workers:
        raise UserError(f"dataset {m.name} is too small for {t.workers} workers at batch {t.global_batch}")
    return RunPlan(run_uri=run_uri, image_shape=tuple(m.shape), num_classes=max(m.num_classes, 1),
                   steps_per_epoch=steps, dataset_name=m.name, dataset_uri=dataset.uri,
                   class_probs=class_probs(dataset))


def check_resources(cfg: Config) -> None:
    """Refuse requests the cluster can never satisfy, instead of waiting forever for them."""
    from genai_ray.ray_runtime import cluster_resources

    t = cfg.train
    have = cluster_resources()
    for key, per_worker in (("GPU", t.gpus_per_worker), ("CPU", t.cpus_per_worker)):
        need = per_worker * t.workers
        if need > have.get(key, 0.0) + 1e-9:
            flag = "--gpus-per-worker" if key == "GPU" else "train.cpus_per_worker"
            raise UserError(f"{t.workers} workers x {per_worker:g} {key} = {need:g} {key}s requested, but the Ray "
                            f"cluster has {have.get(key, 0.0):g}; lower --workers or {flag}")


def check_run_config(run_uri: str, cfg: Config) -> None:
    """A re-run with the same name resumes, so its model and batch must match the saved run's."""
    uri = storage.join(run_uri, RUN_CONFIG_FILE)
    if storage.exists(uri):
        saved = Config.model_validate(json.loads(storage.read_bytes(uri)))
        if saved.model != cfg.model or saved.train.global_batch != cfg.train.global_batch:
            raise UserError(f"run {run_uri} already exists with a different model or batch size; it would resume "
                            "from incompatible checkpoints. Choose another --name")
    storage.write_bytes(uri, cfg.model_dump_json(indent=2).encode())


def build_trainer(cfg: Config, dataset: Dataset, plan: RunPlan, name: str, store: str, callbacks: list | None = None):
    """The ``TensorflowTrainer`` for one run (storage, failures and checkpoint retention from the config)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    t = cfg.train
    fs, runs_path = storage.resolve(runs_uri(store))
    resources = {"CPU": t.cpus_per_worker}
    if t.gpus_per_worker:
        resources["GPU"] = t.gpus_per_worker
    return TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "plan": asdict(plan)},
        scaling_config=ScalingConfig(num_workers=t.workers, use_gpu=t.gpus_per_worker > 0,
                                     resources_per_worker=resources, placement_strategy=t.placement),
        datasets={"train": dataset.to_ray("train")},
        run_config=RunConfig(
            name=name,
            storage_path=runs_path,
            storage_filesystem=fs if storage.is_s3(store) else None,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
            callbacks=callbacks,
        ),
    )


def checkpoint_uri(checkpoint, store: str) -> str:
    return f"s3://{checkpoint.path}" if storage.is_s3(store) else checkpoint.path


def fit(cfg: Config, data: str, name: str | None = None, store: str | None = None, address: str | None = None,
        export: bool = True) -> TrainResult:
    """Train on ``data`` (a dataset URI or name) and export the generator; the same as ``genai-ray train``.

    Re-running with the same ``name`` resumes from the run's last checkpoint.
    """
    from genai_ray.ray_runtime import ensure_ray
    from genai_ray.train.export import export_checkpoint

    store = store or storage.default_store()
    dataset = open_dataset(resolve_dataset_uri(data, store))
    name = name or f"{dataset.manifest.name}-{cfg.model.family}"
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only")
    run_uri = storage.join(runs_uri(store), name)
    plan = plan_run(cfg, dataset, run_uri)
    ensure_ray(address)
    check_resources(cfg)
    storage.check_writable(store)
    check_run_config(run_uri, cfg)
    if cfg.train.eval_every:
        from genai_ray.evaluate import prepare_features

        prepare_features(dataset, cfg.eval)  # train the feature model once here, not on rank 0 mid-run
    result = build_trainer(cfg, dataset, plan, name, store).fit()
    if result.checkpoint is None:
        raise UserError(f"run {name} finished without a checkpoint; check its logs under {run_uri}")
    with result.checkpoint.as_directory() as folder, open(f"{folder}/meta.json") as f:
        meta = json.load(f)
    epochs = int(meta["epoch"])
    ckpt_uri = checkpoint_uri(result.checkpoint, store)
    package_uri = None
    if export:
        summary = {"run": name, "run_uri": run_uri, "checkpoint": ckpt_uri, "epochs": epochs,
                   "workers": cfg.train.workers, **{k: v for k, v in meta["metrics"].items() if "/" in k}}
        package_uri = export_checkpoint(result.checkpoint, cfg, dataset, name, store, summary)
    return TrainResult(run_uri, epochs, meta["metrics"], ckpt_uri, int(meta["resumed_from"]), package_uri)
