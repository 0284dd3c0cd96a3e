"""``genai-ray train`` and ``genai-ray generate``. Thin: parse flags, call ``genai_ray.train``."""

from __future__ import annotations

import time

import click

from genai_ray import stops
from genai_ray.config import DEFAULT_KIMG, deep_merge, load_config, load_yaml, parse_set_option
from genai_ray.data.reader import open_dataset, resolve_dataset_uri
from genai_ray.names import check_name
from genai_ray.package.generate import generate as run
from genai_ray.train.defaults import fitted_for, open_manifest
from genai_ray.train.hardware import detect
from genai_ray.train.rates import estimate, estimate_report

# genai_ray.train.run (TensorFlow and Ray) is imported once the config is valid: `genai-ray --help` and config
# errors stay fast.


@click.command("train")
@click.option("--data", required=True, metavar="URI|NAME",
              help="Prepared dataset: a URI or a name under <store>/datasets.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--preset", help="Config preset: tiny, default or gpu.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.g_lr=1e-4.")
@click.option("--workers", type=int, help="Ray Train workers (train.workers).")
@click.option("--gpus-per-worker", type=float, help="GPUs per worker (train.gpus_per_worker).")
@click.option("--kimg", type=float, help="Run length in thousands of real images shown (train.kimg).")
@click.option("--epochs", type=int, help="Run length in passes over the data (train.epochs), instead of --kimg.")
@click.option("--name", help="Run name; re-using one resumes that run. Default: <dataset>-<family>.")
@click.option("--address", metavar="RAY_ADDRESS", help="Join this Ray cluster instead of starting a local one.")
@click.option("--no-export", is_flag=True, help="Only train; do not export a model package.")
@click.pass_obj
def train(obj, data, config_path, preset, sets, workers, gpus_per_worker, kimg, epochs, name, address,
          no_export) -> None:
    """Train a GAN on Ray Train workers and export its generator as a model package."""
    if name is not None:
        check_name(name, "--name")
    flags = {k: v for k, v in {"workers": workers, "gpus_per_worker": gpus_per_worker, "kimg": kimg,
                               "epochs": epochs}.items() if v is not None}
    overrides = deep_merge(parse_set_option(sets), {"train": flags} if flags else {})
    cfg = load_config(config_path, preset, overrides)  # the user's keys are checked before the dataset is read

    users = deep_merge(load_yaml(config_path) if config_path else {}, overrides)
    hw = detect(address, (users.get("train") or {}).get("gpus_per_worker"))  # joins --address; starts no Ray
    if cfg.preset == "default" and not preset and not (config_path and "preset" in users):
        fitted, line = fitted_for(data, obj.store, hw=hw)
        cfg = load_config(config_path, preset, overrides, fitted=fitted)
        click.echo(line)
    from genai_ray.train.run import default_run_name, fit, length_trained

    t = cfg.train
    expected = estimate(cfg, open_manifest(data, obj.store), hw)
    click.echo(f"training {cfg.model.family}{' (conditional)' if cfg.model.conditional else ''} on {data}: "
               f"{t.workers} worker(s), global batch {t.global_batch}, "
               f"{f'{t.epochs} epochs' if t.epochs else f'{t.kimg or DEFAULT_KIMG:g} kimg'}, loss {t.loss}"
               f"{f', {expected.text}' if expected else ''}")
    run = name or default_run_name(open_dataset(resolve_dataset_uri(data, obj.store)), cfg)
    stops.set_hint(f"run {run} is resumable: rerun the same command")
    began = time.monotonic()
    result = fit(cfg, data, name=run, store=obj.store, address=address, export=not no_export)
    took = time.monotonic() - began
    m = result.metrics
    length = length_trained(result, counts_epochs=bool(t.epochs))
    if result.already_finished:
        where = f"epoch {result.epochs} (train.epochs={t.epochs})" if t.epochs else length
        click.echo(f"run {result.run_uri.rstrip('/').rsplit('/', 1)[-1]} already finished at {where}: nothing to "
                   "train; raise --kimg (or --epochs) to train further")
    else:
        click.echo(f"finished {length}: loss/d {m['loss/d']:.4f}, loss/g {m['loss/g']:.4f}, "
                   f"{m['perf/images_per_s']:,.0f} images/s")
    click.echo(f"run: {result.run_uri}  (tensorboard --logdir {result.run_uri}/tensorboard)")
    click.echo(f"checkpoint: {result.checkpoint_uri}")
    if result.export_checkpoint_uri != result.checkpoint_uri:
        click.echo(f"best checkpoint (train.keep_checkpoints_by={t.keep_checkpoints_by}): "
                   f"{result.export_checkpoint_uri}")
    if result.package_uri:
        click.echo(f"model: {result.package_uri}")
    if not result.already_finished:
        click.echo(estimate_report(took, expected))


@click.command("generate")
@click.option("--model", default="champion", show_default=True, metavar="URI|NAME|champion",
              help="Model package: a URI, NAME (latest version), NAME/vNNNN, champion or champion:NAME.")
@click.option("--n", "n", type=int, default=16, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Image i uses seed + i.")
@click.option("--label", help="Class index or name (conditional models). Default: training proportions.")
@click.option("--out", required=True, metavar="FILE.png|FILE.npy|DATASET_URI", help="Where to write the images.")
@click.option("--truncation-psi", type=float, default=1.0, show_default=True,
              help="Pull latents toward the mean, in [0, 1]: 1 = none, lower = cleaner but less varied images.")
@click.pass_obj
def generate(obj, model, n, seed, label, out, truncation_psi) -> None:
    """Generate images: a PNG grid, a float32 [0, 1] .npy array, or a synthetic dataset."""
    click.echo(run(model, n, out, seed=seed, label=label, store=obj.store, truncation_psi=truncation_psi))
