"""The driver side of training: validate, build the ``TensorflowTrainer``, fit, export.

Every user mistake is refused here, before any worker starts. ``build_trainer`` is separate from ``fit``
so tuning can wrap the same trainer in its own trials.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.tensorflow import TensorflowTrainer

from genai_ray import ray_runtime, storage
from genai_ray.config import Config
from genai_ray.data.manifest import Manifest
from genai_ray.data.reader import Dataset, open_dataset, resolve_dataset_uri
from genai_ray.errors import UserError
from genai_ray.evaluation.evaluate import prepare_features
from genai_ray.gan import family
from genai_ray.names import check_name
from genai_ray.package.export import class_probs, export_checkpoint
from genai_ray.package.format import read_meta, sorted_versions
from genai_ray.ray_runtime import cluster_resources
from genai_ray.train import input as data_input
from genai_ray.train.backend import TensorflowConfig
from genai_ray.train.loop import RunPlan, run_length
from genai_ray.train.worker import FAULT_ENV, train_loop_per_worker

RUN_CONFIG_FILE = "genai-ray-run.json"  # the run's resolved config, written before the first worker starts
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's registered checkpoints
SCORES = {"fd": ("eval/fd", "min")}  # train.keep_checkpoints_by -> (reported metric, which end is best)


@dataclass
class TrainResult:
    run_uri: str
    epochs: int  # epochs completed
    metrics: dict[str, Any]  # the last checkpointed report
    checkpoint_uri: str
    resumed_from: int  # epoch this (last) attempt started from: 0 for a fresh run
    package_uri: str | None  # the exported model package, when exported
    export_checkpoint_uri: str = ""  # the checkpoint exported: the latest, or the best by train.keep_checkpoints_by
    already_finished: bool = False  # the run had reached train.epochs before this call: nothing was trained


def default_run_name(dataset: Dataset, cfg: Config) -> str:
    return f"{dataset.manifest.name}-{cfg.model.family}"


def length_trained(result: TrainResult, counts_epochs: bool) -> str:
    """What a run trained in its own unit: kimg (thousands of real images shown), or epochs when the run counts
    epochs. ``result.epochs`` counts ticks in a kimg run (about 1 kimg each), which are not passes over the data."""
    if counts_epochs:
        return f"{result.epochs} epochs"
    return f"{float(result.metrics.get('kimg') or 0):g} kimg"


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
    if t.keep_checkpoints_by != "latest" and not t.eval_every:
        raise UserError(f"train.keep_checkpoints_by={t.keep_checkpoints_by} ranks checkpoints by held-out "
                        f"{SCORES[t.keep_checkpoints_by][0]}, which needs in-training evaluation; set train.eval_every")
    if m.train_count // t.global_batch < 1:
        raise UserError(f"train.global_batch={t.global_batch} is larger than the {m.train_count} training images of "
                        f"{m.name}; lower train.global_batch")
    if m.train_count // t.workers < t.global_batch // t.workers:
        raise UserError(f"dataset {m.name} is too small for {t.workers} workers at batch {t.global_batch}")
    length = run_length(t.kimg, t.epochs, m.train_count, t.global_batch)
    return RunPlan(run_uri=run_uri, image_shape=tuple(m.shape), num_classes=max(m.num_classes, 1),
                   steps_per_epoch=length.steps_per_tick, ticks=length.ticks, total_steps=length.total_steps,
                   in_kimg=t.epochs is None, dataset_name=m.name, dataset_uri=dataset.uri,
                   class_probs=class_probs(dataset))


def check_resources(cfg: Config) -> None:
    """Refuse requests the cluster can never satisfy, instead of waiting forever for them."""
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
        if saved.train.keep_checkpoints_by != cfg.train.keep_checkpoints_by:  # Ray keeps its saved ranking
            raise UserError(f"run {run_uri} keeps checkpoints by {saved.train.keep_checkpoints_by}; re-run it with "
                            f"train.keep_checkpoints_by={saved.train.keep_checkpoints_by} or choose another --name")
    storage.write_bytes(uri, cfg.model_dump_json(indent=2).encode())


def plan_input(cfg: Config, dataset: Dataset, plan: RunPlan) -> RunPlan:
    """Resolve train.data_mode against the workers' memory (Ray must be up), say which mode and why, and add
    what stream mode's workers need. ``memory`` over budget raises ``UserError``."""
    t, m = cfg.train, dataset.manifest
    budget, why_budget = data_input.worker_memory_budget(t.memory_budget_mib, t.workers, t.cpus_per_worker)
    need = data_input.shard_bytes(m.train_count, tuple(m.shape), t.workers)
    mode, why = data_input.choose_mode(t.data_mode, need, budget, why_budget)
    print(f"data: {mode} mode ({why})", flush=True)
    if mode == "memory":
        return replace(plan, data_mode="memory", stream=None)
    groups = data_input.row_groups(dataset.shard_uris("train"))
    spec = data_input.StreamSpec(groups, m.train_count // t.global_batch, t.shuffle_buffer)  # whole data epochs
    return replace(plan, data_mode="stream", stream=spec.to_json())


def build_trainer(cfg: Config, dataset: Dataset, plan: RunPlan, name: str, store: str, callbacks: list | None = None):
    """The ``TensorflowTrainer`` for one run (storage, failures and checkpoint retention from the config)."""
    t = cfg.train
    plan = plan if plan.data_mode else plan_input(cfg, dataset, plan)
    fs, runs_path = storage.resolve(runs_uri(store))
    resources = {"CPU": t.cpus_per_worker}
    scored = {}  # keep the best train.keep_checkpoints by score; Ray also always keeps the latest (for resume)
    if t.keep_checkpoints_by in SCORES:
        metric, order = SCORES[t.keep_checkpoints_by]
        scored = {"checkpoint_score_attribute": metric, "checkpoint_score_order": order}
    if t.gpus_per_worker:
        resources["GPU"] = t.gpus_per_worker
    plan = replace(plan, launched_at=time.time())  # the caller fits it next
    fault = {FAULT_ENV: os.environ[FAULT_ENV]} if FAULT_ENV in os.environ else {}  # tests' fault injection
    return TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "plan": asdict(plan)},
        tensorflow_config=TensorflowConfig(),  # sets up the same workers without TensorFlow in the controller
        scaling_config=ScalingConfig(num_workers=t.workers, use_gpu=t.gpus_per_worker > 0,
                                     resources_per_worker=resources, placement_strategy=t.placement),
        datasets={"train": dataset.to_ray("train")} if plan.data_mode == "memory" else None,
        run_config=RunConfig(
            name=name,
            storage_path=runs_path,
            storage_filesystem=fs if storage.is_s3(store) else None,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints, **scored),
            callbacks=callbacks,
            worker_runtime_env={"env_vars": fault} if fault else None,
        ),
    )


def checkpoint_uri(checkpoint, store: str) -> str:
    return f"s3://{checkpoint.path}" if storage.is_s3(store) else checkpoint.path


def recorded_checkpoints(run_uri: str) -> tuple[Any, list[tuple[Any, dict]]] | None:
    """The run's registered checkpoints from Ray Train's snapshot, without starting Ray Train: (latest (checkpoint,
    metrics), every kept (checkpoint, metrics)). None for a new run or a snapshot this code cannot read."""
    uri = storage.join(run_uri, SNAPSHOT_FILE)
    if not storage.exists(uri):
        return None

    def entry(state: dict) -> tuple[Any, dict]:
        fs, path = storage.resolve(storage.join(run_uri, state["checkpoint_dir_name"]))
        return ray.train.Checkpoint(path, filesystem=fs), dict(state["metrics"])

    try:
        snapshot = json.loads(storage.read_bytes(uri))
        if not snapshot.get("latest_checkpoint_result"):
            return None
        return entry(snapshot["latest_checkpoint_result"]), [entry(s) for s in snapshot["checkpoint_results"]]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # a Ray version with another snapshot format: run Ray Train, which resumes and stops at once


def pick_export(latest: tuple[Any, dict], kept: list[tuple[Any, dict]], keep_by: str) -> tuple[Any, dict]:
    """The checkpoint to export: the latest, or the kept one with the best score (ties: the later one)."""
    if keep_by not in SCORES:
        return latest
    metric, order = SCORES[keep_by]
    candidates = [(c, m) for c, m in [*kept, latest]
                  if isinstance(m.get(metric), int | float) and math.isfinite(m[metric])]
    if not candidates:
        return latest
    sign = 1.0 if order == "min" else -1.0
    return min(candidates, key=lambda cm: (sign * cm[1][metric], -int(cm[1].get("epoch", 0))))


def read_checkpoint_meta(checkpoint) -> tuple[dict, str]:
    """A checkpoint's ``meta.json`` and its sha256 (which identifies the checkpoint in model packages)."""
    with checkpoint.as_directory() as folder, open(f"{folder}/meta.json", "rb") as f:
        raw = f.read()
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


def exported_package(store: str, name: str, checkpoint_sha256: str) -> str | None:
    """The newest package of ``name`` already exported from this exact checkpoint, if any."""
    models = storage.join(store, "models", name)
    for version in reversed(sorted_versions(storage.list_dir(models))):
        uri = storage.join(models, version)
        if storage.exists(storage.join(uri, "model.json")) and \
                read_meta(uri).training.get("checkpoint_sha256") == checkpoint_sha256:
            return uri
    return None


def fit(cfg: Config, data: str, name: str | None = None, store: str | None = None, address: str | None = None,
        export: bool = True) -> TrainResult:
    """Train on ``data`` (a dataset URI or name) and export the generator; the same as ``genai-ray train``.

    Re-running with the same ``name`` resumes from the run's last checkpoint. A run that already reached
    ``train.epochs`` trains nothing: it returns at once (``already_finished``), with the package already
    exported from the checkpoint it would export, or a new export when there is none.
    """
    store = store or storage.default_store()
    if name is not None:
        check_name(name, "run name")  # before any work
    dataset = open_dataset(resolve_dataset_uri(data, store))
    name = check_name(name or default_run_name(dataset, cfg), "run name")
    run_uri = storage.join(runs_uri(store), name)
    plan = plan_run(cfg, dataset, run_uri)
    ray_runtime.ensure_ray(address)
    check_resources(cfg)
    plan = plan_input(cfg, dataset, plan)  # may refuse train.data_mode=memory: before anything is written
    storage.check_writable(store)
    check_run_config(run_uri, cfg)
    recorded = recorded_checkpoints(run_uri)
    finished = recorded is not None and int(recorded[0][1].get("epoch", 0)) >= plan.ticks
    if finished:
        latest, kept = recorded
    else:
        if cfg.train.eval_every:
            prepare_features(dataset, cfg.eval)  # train the feature model once here, not on rank 0 mid-run
        result = build_trainer(cfg, dataset, plan, name, store).fit()
        if result.checkpoint is None:
            raise UserError(f"run {name} finished without a checkpoint; check its logs under {run_uri}")
        latest, kept = (result.checkpoint, result.metrics or {}), list(result.best_checkpoints or [])
    meta, _ = read_checkpoint_meta(latest[0])
    epochs = int(meta["epoch"])
    ckpt_uri = checkpoint_uri(latest[0], store)
    chosen = pick_export(latest, kept, cfg.train.keep_checkpoints_by)[0]
    chosen_meta, chosen_sha = read_checkpoint_meta(chosen)
    chosen_uri = checkpoint_uri(chosen, store)
    package_uri = None
    if export:
        package_uri = exported_package(store, name, chosen_sha)
        if package_uri is None:
            summary = {"run": name, "run_uri": run_uri, "checkpoint": chosen_uri, "checkpoint_sha256": chosen_sha,
                       "epochs": int(chosen_meta["epoch"]), "run_epochs": epochs,
                       "kimg": chosen_meta["metrics"].get("kimg"),  # images shown to D, thousands
                       "kept_by": cfg.train.keep_checkpoints_by, "workers": cfg.train.workers,
                       **{k: v for k, v in chosen_meta["metrics"].items() if "/" in k and not k.startswith("startup/")}}
            package_uri = export_checkpoint(chosen, cfg, dataset, name, store, summary)
    return TrainResult(run_uri, epochs, meta["metrics"], ckpt_uri, int(meta["resumed_from"]), package_uri,
                       chosen_uri, finished)
