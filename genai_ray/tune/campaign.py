"""A search campaign: Ray Tune trials, then the leaderboard and promotion.

Two ways to run a trial, sharing one training loop (``train/loop.py``):

- inline (single-worker trials): the trial trains inside its own Tune actor, and actors are reused between
  trials (``tune/inline.py``);
- a Ray Train run per trial (multi-worker trials). Train V2 can't be passed to
  a Tuner, so the trial is a function that builds and fits the same ``TensorflowTrainer`` as ``genai-ray
  train`` (docs/ray-notes.md). A small callback forwards rank 0's evaluation reports, with their checkpoint
  paths, from the Train controller to the trial through a Ray queue; the trial reports them to Tune as real
  Tune checkpoints.

Either way every evaluation is a Tune checkpoint. That is what lets PBT exploit: a losing trial is restarted
from the winner's checkpoint (weights and optimiser state) and its perturbed learning rates are applied after
the restore. ``TrialMode`` switches how trials run, for benchmarks and tests to compare; campaigns use its
defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, replace
from typing import Any, Literal

import ray.tune
from ray import tune
from ray.train.v2.api.callback import UserCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.util.queue import Empty, Queue

from genai_ray import ray_runtime, storage
from genai_ray.config import TuneConfig
from genai_ray.data.reader import Dataset, open_dataset, resolve_dataset_uri
from genai_ray.errors import UserError
from genai_ray.evaluation.evaluate import evaluate_package, prepare_features
from genai_ray.names import check_name
from genai_ray.package.export import export_checkpoint
from genai_ray.ray_runtime import cluster_resources
from genai_ray.train.loop import run_length, thread_counts
from genai_ray.train.run import build_trainer, plan_run, runs_uri
from genai_ray.tune.inline import run_inline
from genai_ray.tune.inline import scalar as _scalar
from genai_ray.tune.leftovers import live_placement_groups, release_leftovers
from genai_ray.tune.progress import CampaignProgress
from genai_ray.tune.promote import promote
from genai_ray.tune.report import curves_png, leaderboard_csv, leaderboard_rows, leaderboard_text
from genai_ray.tune.space import SearchSpace, candidate_values

METRIC, MODE = "eval/fd", "min"
POLL_S = 0.5
TRIAL_DRIVER_CPU = 0.01  # a trial only waits on its Train run; its workers reserve the real CPUs
SPACE_FILE = "space.json"  # the campaign's search space as it started, checked by --resume
# Seconds between uploads of Tune's experiment state (trial statuses and their latest checkpoints), which is
# what --resume restores: Tune's default (10 s at least) let a killed campaign forget that many seconds of
# checkpoints. The upload runs in the background.
STATE_SYNC_ENV, STATE_SYNC_S = "TUNE_GLOBAL_CHECKPOINT_S", "2"


@dataclass(frozen=True)
class TrialMode:
    """How trials run. Not user settings: every campaign runs the defaults; bench/search_efficiency.py and the
    tests switch them to measure or check what each choice costs."""

    runner: Literal["inline", "train"] = "inline"  # train: a Ray Train run even for a 1-worker trial
    reuse_actors: bool = True  # inline trials run one after another in the same Tune actors (false: a fresh one each)
    pbt_sync: bool = False  # PBT: perturb all trials at the same tick, pausing early ones (skewed starts)


DEFAULT_MODE = TrialMode()


@dataclass
class CampaignResult:
    campaign_uri: str
    leaderboard: list[dict[str, Any]]
    best_trial: str | None
    best_score: float | None
    package_uri: str | None
    promoted: bool
    message: str


def campaign_uri(store: str, name: str) -> str:
    return storage.join(store, "campaigns", name)


def _forwarding_callback(queue):
    """A Ray Train callback that hands rank 0's evaluation reports to the trial that started the run."""
    class ForwardEvaluations(UserCallback):
        def after_report(self, run_context, metrics, checkpoint) -> None:
            if METRIC in metrics[0]:
                queue.put((dict(metrics[0]), checkpoint.path if checkpoint else None))

    return ForwardEvaluations()


def trial_overrides(tune_cfg: TuneConfig, base_train: dict[str, Any]) -> dict[str, Any]:
    """What every trial sets regardless of the space: its worker count and a report cadence the scheduler
    can act on (PBT needs a checkpoint at every evaluation)."""
    every = tune_cfg.perturbation_interval if tune_cfg.scheduler == "pbt" else base_train.get("eval_every") or 1
    return {"train": {"workers": tune_cfg.workers_per_trial, "eval_every": every, "checkpoint_every": every,
                      "max_failures": base_train.get("max_failures", 2)}}


def runs_inline(tune_cfg: TuneConfig, mode: TrialMode = DEFAULT_MODE) -> bool:
    return mode.runner == "inline" and tune_cfg.workers_per_trial == 1


def make_trainable(space: SearchSpace, dataset: Dataset, store: str, campaign: str, tune_cfg: TuneConfig,
                   mode: TrialMode = DEFAULT_MODE):
    """The Tune function trainable: the trial trains inline, or fits one Ray Train run per trial (re)start."""
    inline = runs_inline(tune_cfg, mode)

    def trial(params: dict[str, Any]) -> None:
        cfg = space.config_for(params, trial_overrides(tune_cfg, space.base.get("train", {})))
        start = ray.tune.get_checkpoint()  # set after a PBT exploit or a campaign resume
        run_name = f"tune-{campaign}-{ray.tune.get_context().get_trial_id()}-{_restart_tag(start)}"
        plan = plan_run(cfg, dataset, storage.join(runs_uri(store), run_name))
        if inline:
            run_inline(cfg, plan, dataset, start)
        else:
            _fit_train_run(cfg, plan, dataset, store, run_name, start)

    return trial


def _fit_train_run(cfg, plan, dataset: Dataset, store: str, run_name: str, start) -> None:
    """One Ray Train run for a trial, its evaluation reports forwarded to Tune as they come."""
    if start is not None:  # weights and optimiser state from the checkpoint; rates from this trial's config
        plan = replace(plan, init_checkpoint=("s3://" if storage.is_s3(store) else "") + start.path)
    queue = Queue(maxsize=0, actor_options={"num_cpus": 0})
    trainer = build_trainer(cfg, dataset, plan, run_name, store, callbacks=[_forwarding_callback(queue)])
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # noqa: BLE001 - re-raised in the trial thread below
            outcome["error"] = err

    runner = threading.Thread(target=fit, daemon=True)
    runner.start()
    fs = storage.resolve(store)[0] if storage.is_s3(store) else None
    while runner.is_alive() or not queue.empty():
        try:
            metrics, ckpt_path = queue.get(timeout=POLL_S)
        except Empty:
            continue
        checkpoint = ray.tune.Checkpoint(ckpt_path, filesystem=fs) if ckpt_path else None
        ray.tune.report({k: v for k, v in metrics.items() if _scalar(v)}, checkpoint=checkpoint)
    runner.join()
    if "error" in outcome:
        raise outcome["error"]


def _restart_tag(start) -> str:
    """Runs of one trial get distinct names: a restart must not resume the previous run's own state."""
    return "r0" if start is None else "r" + hashlib.sha256(start.path.encode()).hexdigest()[:8]


def check_resources(tune_cfg: TuneConfig, cpus_per_worker: float, gpus_per_worker: float,
                    mode: TrialMode = DEFAULT_MODE) -> None:
    """Refuse a campaign that can never be scheduled, or whose Train runs would starve Ray Data of CPUs
    (docs/ray-notes.md). Inline trials read their data themselves, so they may use every CPU."""
    have = cluster_resources()
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    per_trial_cpu = tune_cfg.workers_per_trial * cpus_per_worker
    per_trial_gpu = tune_cfg.workers_per_trial * gpus_per_worker
    if per_trial_cpu > cpus or per_trial_gpu > gpus:
        raise UserError(
            f"one trial needs {per_trial_cpu:g} CPUs and {per_trial_gpu:g} GPUs ({tune_cfg.workers_per_trial} "
            f"workers), but the cluster has {cpus:g} CPUs and {gpus:g} GPUs; lower --workers-per-trial"
        )
    spare = 0.0 if runs_inline(tune_cfg, mode) else 1.0
    if tune_cfg.max_concurrent * per_trial_cpu > cpus - spare + 1e-9:
        fits = max(1, int((cpus - spare) // per_trial_cpu))
        why = "than the cluster has" if runs_inline(tune_cfg, mode) else "than leave one for Ray Data"
        raise UserError(
            f"--max-concurrent {tune_cfg.max_concurrent} x {per_trial_cpu:g} CPUs per trial is more CPUs {why} "
            f"on a {cpus:g}-CPU cluster; lower --max-concurrent to {fits}"
        )


def check_thread_settings(space: SearchSpace, tune_cfg: TuneConfig, mode: TrialMode = DEFAULT_MODE) -> None:
    """Inline trials share reused actors, and TensorFlow sets its thread pools once per process: refuse a space
    whose trials would need different ones."""
    if not runs_inline(tune_cfg, mode):
        return
    overrides = trial_overrides(tune_cfg, space.base.get("train", {}))
    base = thread_counts(space.config_for({}, overrides))
    for key, value in candidate_values(space):
        if thread_counts(space.config_for({key: value}, overrides)) != base:
            raise UserError(f"{space.source}: params.{key}={value!r} changes TensorFlow's thread settings, which "
                            "a reused trial actor can't; fix train.intra_op_threads and train.inter_op_threads in "
                            "base")


def make_scheduler(space: SearchSpace, tune_cfg: TuneConfig, max_epochs: int, mode: TrialMode = DEFAULT_MODE):
    if tune_cfg.scheduler == "asha":
        return ASHAScheduler(time_attr="epoch", metric=METRIC, mode=MODE, max_t=max_epochs,
                             grace_period=min(tune_cfg.grace_epochs, max_epochs),
                             reduction_factor=tune_cfg.reduction_factor)
    if tune_cfg.scheduler == "pbt":
        mutations = {k: v for k, v in space.tune_space().items() if k.endswith("_lr")}
        if not mutations:
            raise UserError(f"{space.source}: PBT perturbs learning rates, but the space has no train.g_lr or "
                            "train.d_lr; add one or use --scheduler asha")
        return PopulationBasedTraining(time_attr="epoch", metric=METRIC, mode=MODE,
                                       perturbation_interval=tune_cfg.perturbation_interval,
                                       hyperparam_mutations=mutations, synch=mode.pbt_sync)
    return FIFOScheduler()


def make_search(tune_cfg: TuneConfig):
    if tune_cfg.search == "random":
        # Tune ignores max_concurrent_trials for an explicit BasicVariantGenerator: the limit must be given here.
        return BasicVariantGenerator(random_state=tune_cfg.seed, max_concurrent=tune_cfg.max_concurrent)
    if tune_cfg.scheduler == "pbt":
        raise UserError("--search optuna can't drive PBT (PBT mutates configs itself); use --search random")

    search = OptunaSearch(metric=METRIC, mode=MODE, seed=tune_cfg.seed)
    return ConcurrencyLimiter(search, max_concurrent=tune_cfg.max_concurrent)


def tuner_path(store: str, name: str) -> tuple[str, Any]:
    """Where Tune keeps the campaign's state, and the filesystem to pass for it (None: local)."""
    fs, root = storage.resolve(storage.join(store, "campaigns"))
    return f"{root}/{name}", fs if storage.is_s3(store) else None  # with a filesystem: a path in it, no scheme


def check_resume(space: SearchSpace, store: str, name: str) -> None:
    """``--resume`` continues the campaign that exists, with the space it started with."""
    path, fs_arg = tuner_path(store, name)
    if not tune.Tuner.can_restore(path, storage_filesystem=fs_arg):
        raise UserError(f"nothing to resume at {campaign_uri(store, name)}; run without --resume to start it")
    saved_uri = storage.join(campaign_uri(store, name), SPACE_FILE)
    if storage.exists(saved_uri):
        saved = json.loads(storage.read_bytes(saved_uri))
        if {"fitted": None, **saved["space"]} != space_record(space)["space"]:  # older records lack "fitted"
            raise UserError(f"campaign {name} was started with the space {saved['source']}, not {space.source} "
                            f"(they differ); resume it with --space {saved['source']} or start a new --name")


def space_record(space: SearchSpace) -> dict[str, Any]:
    return {"source": space.source, "space": {"preset": space.preset, "base": space.base, "params": space.params,
                                              "fitted": space.fitted_in_use()}}


def build_tuner(space: SearchSpace, dataset: Dataset, store: str, name: str, tune_cfg: TuneConfig, resume: bool,
                callbacks: list | None = None, mode: TrialMode = DEFAULT_MODE):
    fs, root = storage.resolve(storage.join(store, "campaigns"))
    fs_arg = fs if storage.is_s3(store) else None
    inline = runs_inline(tune_cfg, mode)
    base = space.config_for({}, trial_overrides(tune_cfg, space.base.get("train", {}))).train
    resources = {"CPU": base.cpus_per_worker, "GPU": base.gpus_per_worker} if inline else {"CPU": TRIAL_DRIVER_CPU}
    trainable = tune.with_resources(make_trainable(space, dataset, store, name, tune_cfg, mode), resources)
    path, _ = tuner_path(store, name)
    if resume:
        check_resume(space, store, name)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                  param_space=space.tune_space(), storage_filesystem=fs_arg)
    if storage.exists(storage.join(campaign_uri(store, name), "tuner.pkl")):
        raise UserError(f"campaign {name} already exists at {campaign_uri(store, name)}; pass --resume to continue "
                        "it or choose another --name")
    base = space.config_for({}).train  # ticks: epochs, or about 1 kimg each with train.kimg
    max_epochs = run_length(base.kimg, base.epochs, dataset.manifest.train_count, base.global_batch).ticks
    scheduler = make_scheduler(space, tune_cfg, max_epochs, mode)
    needs_metric = tune_cfg.scheduler == "fifo" and tune_cfg.search == "random"
    tuner = tune.Tuner(
        trainable,
        param_space=space.tune_space(),
        tune_config=tune.TuneConfig(
            num_samples=tune_cfg.samples, scheduler=scheduler, search_alg=make_search(tune_cfg),
            max_concurrent_trials=tune_cfg.max_concurrent, reuse_actors=inline and mode.reuse_actors,
            **({"metric": METRIC, "mode": MODE} if needs_metric else {}),
        ),
        run_config=tune.RunConfig(name=name, storage_path=root, storage_filesystem=fs_arg,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=None), verbose=0,
                                  callbacks=callbacks),
    )
    storage.write_bytes(storage.join(campaign_uri(store, name), SPACE_FILE),
                        json.dumps(space_record(space), indent=2).encode())
    return tuner


def summarise(results, space: SearchSpace) -> tuple[list[dict[str, Any]], dict[str, list[tuple[float, float]]]]:
    """One row per trial (best score over its reports) and its metric curve."""
    trials, curves = [], {}
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id") or result.path.rstrip("/").split("/")[-1]
        history = result.metrics_dataframe
        points: list[tuple[float, float]] = []
        if history is not None and METRIC in history:
            points = [(float(e), float(v)) for e, v in zip(history["epoch"], history[METRIC], strict=True)
                      if _scalar(v)]
        curves[trial_id] = points
        best = min((v for _, v in points), default=None)
        trials.append({"trial": trial_id, "status": "ERROR" if result.error else "TERMINATED",
                       "epochs": int(max((e for e, _ in points), default=0)), "score": best,
                       "params": {k: result.config.get(k) for k in space.params}, "result": result})
    return trials, curves


def run_campaign(space: SearchSpace, data: str, *, name: str, tune_cfg: TuneConfig, store: str | None = None,
                 resume: bool = False, force: bool = False, model_name: str | None = None,
                 address: str | None = None, mode: TrialMode = DEFAULT_MODE) -> CampaignResult:
    """Run (or resume) a campaign, write its leaderboard and curves, export and promote the best generator."""
    store = store or storage.default_store()
    check_name(name, "campaign name")
    if model_name is not None:
        check_name(model_name, "model name")
    dataset = open_dataset(resolve_dataset_uri(data, store))
    base = space.config_for({}, trial_overrides(tune_cfg, space.base.get("train", {})))
    plan_run(base, dataset, storage.join(runs_uri(store), "check"))  # refuse a bad base before any trial
    check_thread_settings(space, tune_cfg, mode)
    make_scheduler(space, tune_cfg, base.train.epochs, mode)  # these two refuse combinations Tune can't run
    make_search(tune_cfg)
    if resume:
        check_resume(space, store, name)
    ray_runtime.ensure_ray(address)
    check_resources(tune_cfg, base.train.cpus_per_worker, base.train.gpus_per_worker, mode)
    storage.check_writable(store)
    prepare_features(dataset, base.eval)  # every trial's rank 0 then only loads the feature model
    before = live_placement_groups()
    os.environ.setdefault(STATE_SYNC_ENV, STATE_SYNC_S)  # read by the Tuner's controller in this process
    progress = CampaignProgress(list(space.params), tune_cfg.samples, base.train.epochs, METRIC, MODE)
    results = build_tuner(space, dataset, store, name, tune_cfg, resume, callbacks=[progress], mode=mode).fit()
    if released := release_leftovers(before):
        print(f"released {released} placement group(s) that trials stopped during start-up left reserved", flush=True)
    trials, curves = summarise(results, space)
    return finish(space, dataset, store, name, tune_cfg, trials, curves, force, model_name or dataset.manifest.name)


def finish(space: SearchSpace, dataset: Dataset, store: str, name: str, tune_cfg: TuneConfig,
           trials: list[dict[str, Any]], curves: dict[str, list[tuple[float, float]]], force: bool,
           model_name: str) -> CampaignResult:
    """Leaderboard CSV, curves PNG, then the best trial exported, evaluated in full and promoted."""
    out = campaign_uri(store, name)
    rows = leaderboard_rows([{k: v for k, v in t.items() if k != "result"} for t in trials], MODE)
    storage.write_bytes(storage.join(out, "leaderboard.csv"), leaderboard_csv(rows))
    storage.write_bytes(storage.join(out, "curves.png"), curves_png(curves, METRIC, f"campaign {name}"))
    print(leaderboard_text(rows, METRIC), flush=True)
    scored = [t for t in trials if t["score"] is not None]
    if not scored:
        raise UserError(f"no trial of campaign {name} reported {METRIC}; see the trial logs under {out}")
    best = min(scored, key=lambda t: t["score"])
    checkpoint = best["result"].get_best_checkpoint(METRIC, MODE)
    if checkpoint is None:
        raise UserError(f"the best trial {best['trial']} kept no checkpoint; see its logs under {out}")
    cfg = space.config_for(best["params"], trial_overrides(tune_cfg, space.base.get("train", {})))
    summary = {"campaign": name, "trial": best["trial"], "campaign_score": best["score"], "epochs": best["epochs"]}
    package_uri = export_checkpoint(checkpoint, cfg, dataset, model_name, store, summary)
    metrics = evaluate_package(package_uri, dataset, cfg.eval)
    promoted, message = True, ""
    try:
        pointer = promote(store, model_name, package_uri, metric=METRIC, mode=MODE, force=force, campaign=name)
        message = f"promoted {pointer['name']}/{pointer['version']} ({METRIC}={pointer['score']:.4f})"
    except UserError as refusal:
        promoted, message = False, str(refusal)
    summary_doc = {"name": name, "metric": METRIC, "mode": MODE, "best_trial": best["trial"],
                   "best_campaign_score": best["score"], "package_uri": package_uri, "package_metrics": metrics,
                   "promoted": promoted, "message": message, "scheduler": tune_cfg.scheduler,
                   "search": tune_cfg.search, "trials": len(trials)}
    storage.write_bytes(storage.join(out, "campaign.json"), json.dumps(summary_doc, indent=2).encode())
    return CampaignResult(out, rows, best["trial"], best["score"], package_uri, promoted, message)
