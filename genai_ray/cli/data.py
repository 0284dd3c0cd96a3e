"""``genai-ray data prepare|inspect``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from genai_ray import storage
from genai_ray.data import ingest
from genai_ray.data.prepare import check_options, prepare
from genai_ray.data.reader import open_dataset, resolve_dataset_uri
from genai_ray.data.sources import open_source
from genai_ray.errors import UserError
from genai_ray.images import grid_png
from genai_ray.names import check_name, safe_name


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
@click.option("--skip-bad", is_flag=True,
              help="Skip unreadable images (folders, s3://, tables) instead of failing; the manifest records them.")
@click.option("--image-column", help="Parquet tables: the column of encoded images, when it can't be guessed.")
@click.option("--label-column", help="Parquet tables: the int or string label column. Default: 'label' if present.")
@click.option("--address", metavar="RAY_ADDRESS",
              help="Folders, s3:// and tables: decode on this Ray cluster instead of a private local Ray.")
@click.pass_obj
def prepare_cmd(obj, source, out_uri, name, shards, shard_size, image_size, crop, holdout, seed, count, labels_path,
                overwrite, skip_bad, image_column, label_column, address) -> None:
    """Turn SOURCE (digits, mnist, shapes, photos, a folder or s3:// prefix of images, a Parquet table of encoded
    images, a .npz or an IDX file) into a dataset."""
    check_options(holdout, shards, shard_size)
    store_source = source not in ("digits", "mnist", "shapes", "photos") and ingest.is_store_source(source)
    if not store_source and (skip_bad or image_column or label_column):
        raise UserError("--skip-bad, --image-column and --label-column apply to folders, s3:// prefixes and "
                        "Parquet tables only")
    given = Path(source.rstrip("/")).expanduser()
    name = check_name(name, "--name") if name else safe_name(given.name if given.is_dir() else given.stem, "dataset")
    out_uri = out_uri or storage.join(obj.store, "datasets", name)
    if store_source:
        src = ingest.open_store_source(source, image_size=image_size, crop=crop, seed=seed, holdout=holdout,
                                       image_column=image_column, label_column=label_column)
        manifest, report = ingest.prepare_store(src, out_uri, name=name, shards=shards, shard_rows=shard_size,
                                                overwrite=overwrite, skip_bad=skip_bad, address=address)
        ingest.print_skipped(report)
    else:
        src = open_source(source, image_size=image_size, count=count, seed=seed, labels=labels_path, crop=crop)
        manifest = prepare(src, out_uri, name=name, holdout=holdout, seed=seed, shards=shards,
                           shard_rows=shard_size, overwrite=overwrite)
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
    ds = open_dataset(resolve_dataset_uri(uri, obj.store), verify=True, checksums=verify)
    click.echo(json.dumps(ds.manifest.model_dump(mode="json"), indent=2))
    x, _ = ds.read_numpy("train", limit=64)
    preview = preview or f"{ds.manifest.name}-preview.png"
    Path(preview).write_bytes(grid_png(x, {"dataset": ds.manifest.name}))
    click.echo(f"preview grid: {preview}" + ("; all shard checksums match" if verify else ""))
