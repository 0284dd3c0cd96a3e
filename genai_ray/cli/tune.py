"""``genai-ray tune`` and ``genai-ray promote``."""

from __future__ import annotations

import click

from genai_ray import stops
from genai_ray.config import build_config
from genai_ray.names import check_name, safe_name
from genai_ray.package.format import read_meta, resolve_model_uri
from genai_ray.train.defaults import fitted_for
from genai_ray.train.hardware import detect
from genai_ray.tune.promote import promote
from genai_ray.tune.space import load_space

# genai_ray.tune.campaign (Ray Tune and TensorFlow) is imported once the space and config are valid: `genai-ray
# --help` and config errors stay fast.


@click.command("tune")
@click.option("--data", "data_ref", required=True, metavar="URI", help="Dataset URI or name in the store.")
@click.option("--space", "space_path", required=True, type=click.Path(), help="Search-space YAML file.")
@click.option("--samples", type=int, help="Number of trials.")
@click.option("--scheduler", type=click.Choice(["asha", "pbt", "fifo"]), help="Trial scheduler.")
@click.option("--search", type=click.Choice(["random", "optuna"]), help="Search algorithm.")
@click.option("--workers-per-trial", type=int, help="Ray Train workers in each trial.")
@click.option("--max-concurrent", type=int, help="Trials running at once.")
@click.option("--seed", type=int, help="Seeds the search: the same seed and space sample the same trials.")
@click.option("--name", help="Campaign name (default: <dataset>-<scheduler>).")
@click.option("--model-name", help="Model name the champion is promoted under (default: the dataset's name).")
@click.option("--resume", is_flag=True, help="Continue an interrupted campaign without rerunning finished trials.")
@click.option("--force", is_flag=True, help="Promote the winner even if it scores worse than the champion.")
@click.option("--address", help="Ray cluster address (default: a private local Ray).")
@click.pass_obj
def tune_cmd(obj, data_ref, space_path, samples, scheduler, search, workers_per_trial, max_concurrent, seed,
             name, model_name, resume, force, address) -> None:
    """Search hyperparameters and architectures with Ray Tune, then promote the best generator."""
    for flag, value in (("--name", name), ("--model-name", model_name)):
        if value is not None:
            check_name(value, flag)
    space = load_space(space_path)
    if not space.preset_named:
        gpus = (space.base.get("train") or {}).get("gpus_per_worker")  # the space's own setting wins, as in train
        space.fitted, line = fitted_for(data_ref, obj.store, turn_off="'preset: default' in the space file",
                                        hw=detect(address, gpus))
        space.config_for({})  # the space's keys over the fitted defaults must still make a valid config
        click.echo(line)
    flags = {"samples": samples, "scheduler": scheduler, "search": search, "workers_per_trial": workers_per_trial,
             "max_concurrent": max_concurrent, "seed": seed}
    base_tune = space.base.get("tune", {})
    cfg = build_config(space.preset, {"tune": {**base_tune, **{k: v for k, v in flags.items() if v is not None}}},
                       source="tune flags")
    name = name or safe_name(f"{data_ref.rstrip('/').split('/')[-1]}-{cfg.tune.scheduler}", "campaign")
    stops.set_hint(f"campaign {name} is resumable: rerun the same command{'' if resume else ' with --resume'}")
    from genai_ray.tune.campaign import run_campaign

    result = run_campaign(space, data_ref, name=name, tune_cfg=cfg.tune, store=obj.store, resume=resume,
                          force=force, model_name=model_name, address=address)
    click.echo(f"campaign {name}: best trial {result.best_trial} (eval/fd {result.best_score:.4f})")
    click.echo(f"leaderboard: {result.campaign_uri}/leaderboard.csv   curves: {result.campaign_uri}/curves.png")
    click.echo(f"model: {result.package_uri}")
    click.echo(result.message)


@click.command("promote")
@click.option("--model", "model_ref", required=True, metavar="URI", help="Model package URI or NAME/vNNNN.")
@click.option("--name", help="Model name to promote under (default: the package's own name).")
@click.option("--metric", default="eval/fd", show_default=True, help="model.json metric that decides.")
@click.option("--mode", type=click.Choice(["min", "max"]), default="min", show_default=True)
@click.option("--force", is_flag=True, help="Promote even if it scores worse than the current champion.")
@click.pass_obj
def promote_cmd(obj, model_ref, name, metric, mode, force) -> None:
    """Make an evaluated model package the champion that Serve runs."""
    if name is not None:
        check_name(name, "--name")
    uri = resolve_model_uri(model_ref, obj.store)
    name = name or read_meta(uri).name
    pointer = promote(obj.store, name, uri, metric=metric, mode=mode, force=force)
    click.echo(f"promoted {pointer['name']}/{pointer['version']} as champion of {name} "
               f"({metric}={pointer['score']:.4g})")
