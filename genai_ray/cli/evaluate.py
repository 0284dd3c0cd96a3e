"""``genai-ray evaluate``: a model package or a baseline, scored on a dataset's held-out split."""

from __future__ import annotations

import json

import click

from genai_ray.config import load_config, parse_set_option
from genai_ray.data.reader import open_dataset, resolve_dataset_uri
from genai_ray.errors import UserError
from genai_ray.evaluation.baselines import kde_sampler, real_floor
from genai_ray.evaluation.evaluate import evaluate, evaluate_package, split_prefix
from genai_ray.package.format import check_truncation, read_meta, resolve_model_uri
from genai_ray.tables import format_key_table, format_table

BASELINES = ("real", "kde")


@click.command("evaluate")
@click.option("--model", "model_ref", metavar="URI|NAME|champion",
              help="Model package: a URI, NAME (latest version), NAME/vNNNN, champion or champion:NAME.")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(BASELINES),
              help="Evaluate a baseline instead (repeatable): 'real' (the training split, the floor) or 'kde'.")
@click.option("--data", "data_ref", metavar="URI|NAME",
              help="Dataset. Default for --model: the dataset the model was trained on.")
@click.option("--n", type=int, help="Samples to draw. Default: eval.n_samples.")
@click.option("--split", type=click.Choice(["holdout", "train"]), default="holdout", show_default=True,
              help="Real split to compare with.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sample i uses seed SEED + i.")
@click.option("--config", "config_path", type=click.Path(), help="YAML config (its eval: section is used).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. eval.knn_k=5.")
@click.option("--truncation-psi", type=float, default=1.0, show_default=True,
              help="Models: pull latents toward the mean, in [0, 1] (1 = none; lower = fidelity over diversity).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--all", "all_rows", is_flag=True,
              help="Print every metric (per class, feature-model checks), not only FD, precision, recall, coverage "
                   "and memorisation.")
@click.option("--no-write", is_flag=True, help="Don't record the metrics in the package's model.json.")
@click.pass_obj
def evaluate_cmd(obj, model_ref, baselines, data_ref, n, split, seed, config_path, sets, truncation_psi, as_json,
                 all_rows, no_write) -> None:
    """Score a model (or a baseline) on a dataset: Frechet distance, precision/recall, coverage, memorisation."""
    if bool(model_ref) == bool(baselines):
        raise UserError("pass either --model URI|NAME|champion or --baseline real|kde (not both, not neither)")
    if n is not None and n < 10:
        raise UserError(f"--n {n}: evaluate at least 10 samples (the default is eval.n_samples)")

    check_truncation(truncation_psi)
    if baselines and truncation_psi != 1.0:
        raise UserError("--truncation-psi applies to --model only; baselines have no latents to truncate")
    cfg = load_config(config_path, None, parse_set_option(sets)).eval
    if model_ref:
        columns = {model_ref: _evaluate_model(obj.store, model_ref, data_ref, n, split, seed, cfg, not no_write,
                                              truncation_psi)}
    else:
        if not data_ref:
            raise UserError("--baseline needs --data URI|NAME: the dataset to fit the baseline on")
        columns = _evaluate_baselines(obj.store, baselines, data_ref, n, split, seed, cfg)
    if as_json:
        click.echo(json.dumps(columns, indent=2))
    else:
        click.echo(format_table(columns) if all_rows else format_key_table(columns, "--all, or --json"))


def _evaluate_model(store, model_ref, data_ref, n, split, seed, cfg, write, psi) -> dict[str, float]:
    uri = resolve_model_uri(model_ref, store)
    meta = read_meta(uri)
    ds = open_dataset(resolve_dataset_uri(data_ref, store) if data_ref else meta.dataset_uri)
    if ds.manifest.sha256() != meta.dataset_sha256:
        click.echo(f"note: {ds.uri} is not the dataset {meta.name}/{meta.version} was trained on; "
                   "memorisation is measured against its training split", err=True)
    result = evaluate_package(uri, ds, cfg, split=split, n=n, seed=seed, write=write, truncation_psi=psi)
    if write:
        click.echo(f"wrote {len(result)} metrics to {uri}/model.json", err=True)
    return result


def _evaluate_baselines(store, baselines, data_ref, n, split, seed, cfg) -> dict[str, dict[str, float]]:
    ds = open_dataset(resolve_dataset_uri(data_ref, store))
    n = n or cfg.n_samples
    columns = {}
    for name in dict.fromkeys(baselines):
        source = real_floor(ds, n, seed) if name == "real" else kde_sampler(ds, seed)
        columns[name] = evaluate(source, ds, split=split, n=n, seed=seed, cfg=cfg, prefix=split_prefix(split))
    return columns
