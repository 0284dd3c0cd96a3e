"""``genai-ray data prepare|inspect``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from genai_ray import storage


@click.group()
def data() -> None:
    """Prepare and inspect datasets (Parquet shards plus a manifest)."""


@data.command("prepare")
@click.argument("source")
@click.option("--out", "out_uri", metavar="URI", help="Dataset location. Default: <store>/datasets/<name>.")
@click.option("--name", help="Dataset name. Default: derived from SOURCE.")
@click.option("--shards", type=int, help="Split the training images into at most N shards.")
@click.option("--shard-size", type=int, help="Images per shard. Default: 8192, or fewer to stay under 64 MiB.")
@click.option("--image-size", type=int,
              help="Resize every image to SxS pixels (squashed unless --crop). photos: 32 unless set.")
@click.option("--crop", is_flag=True,
              help="With --image-size: centre-crop each image to a square first, so mixed-size photos keep their "
                   "proportions instead of being squashed.")
@click.option("--holdout", type=float, default=0.1, show_default=True, help="Fraction held out for evaluation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split and procedural sources.")
@click.option("--count", type=int, default=20000, show_default=True, help="Images to make (shapes and photos sources).")
@click.option("--labels", "labels_path", type=click.Path(),
              help="Labels file for an IDX image file. Default: MNIST's *-labels-idx1-ubyte[.gz] beside it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
@click.pass_obj
def prepare_cmd(obj, source, out_uri, name, shards, shard_size, image_size, crop, holdout, seed, count, labels_path,
                overwrite) -> None:
    """Turn SOURCE (digits, mnist, shapes, photos, a folder, a .npz or an IDX file) into a dataset."""
    from genai_ray.data.prepare import check_options, prepare
    from genai_ray.data.sources import open_source
    from genai_ray.names import check_name, safe_name

    check_options(holdout, shards, shard_size)
    src = open_source(source, image_size=image_size, count=count, seed=seed, labels=labels_path, crop=crop)
    given = Path(source.rstrip("/")).expanduser()
    name = check_name(name, "--name") if name else safe_name(given.name if given.is_dir() else given.stem, "dataset")
    out_uri = out_uri or storage.join(obj.store, "datasets", name)
    manifest = prepare(src, out_uri, name=name, holdout=holdout, seed=seed, shards=shards, shard_rows=shard_size,
                       overwrite=overwrite)
    h, w, c = manifest.shape
    click.echo(f"prepared {manifest.name}: {manifest.count} images {h}x{w}x{c}, "
               f"{manifest.train_count} train / {manifest.holdout_count} holdout, "
               f"{len(manifest.shards)} shards -> {out_uri}")


@data.command("inspect")
@click.argument("uri")
@click.option("--preview", type=click.Path(dir_okay=False), help="Where to write the preview grid PNG.")
@click.option("--verify", is_flag=True, help="Also check every shard's sha256.")
@click.pass_obj
def inspect_cmd(obj, uri, preview, verify) -> None:
    """Print a dataset's manifest and write a preview grid PNG."""
    from genai_ray.data.reader import open_dataset, resolve_dataset_uri
    from genai_ray.images import grid_png

    ds = open_dataset(resolve_dataset_uri(uri, obj.store), verify=True, checksums=verify)
    click.echo(json.dumps(ds.manifest.model_dump(mode="json"), indent=2))
    x, _ = ds.read_numpy("train", limit=64)
    preview = preview or f"{ds.manifest.name}-preview.png"
    Path(preview).write_bytes(grid_png(x, {"dataset": ds.manifest.name}))
    click.echo(f"preview grid: {preview}" + ("; all shard checksums match" if verify else ""))
