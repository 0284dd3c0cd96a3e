"""Parquet dataset -> worker tensors, from local storage and from an S3 endpoint: images/s.

What a training worker does per epoch when it streams: Ray Data reads the shards and hands out large
numpy batches, which become TensorFlow tensors. Also the plain pyarrow read (no Ray) for reference.
Run: python -m bench.data_pipeline [--count 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from bench.common import machine, moto_s3, table


def _prepare(uri: str, count: int) -> None:
    from genai_ray.data.prepare import prepare
    from genai_ray.data.sources import open_source

    prepare(open_source("shapes", count=count, seed=0), uri, name="bench-shapes", holdout=0.0, progress=False)


def _ray_rate(uri: str, repeats: int = 2) -> float:
    import tensorflow as tf

    from genai_ray.data.reader import open_dataset

    ds = open_dataset(uri)
    best = 0.0
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for batch in ds.to_ray("train").iter_batches(batch_size=4096, batch_format="numpy"):
            n += len(tf.convert_to_tensor(batch["image"]))
        best = max(best, n / (time.perf_counter() - start))
    return best


def _pyarrow_rate(uri: str) -> float:
    from genai_ray.data.reader import open_dataset

    ds = open_dataset(uri)
    start = time.perf_counter()
    x, _ = ds.read_numpy("train")
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    from genai_ray.ray_runtime import ensure_ray

    rows = []
    with moto_s3() as bucket, tempfile.TemporaryDirectory() as tmp:
        ensure_ray()  # after moto, so workers inherit the endpoint
        for where, uri in (("local", f"{tmp}/shapes"), ("s3 (moto)", f"{bucket}/shapes")):
            _prepare(uri, args.count)
            rows.append([where, "Ray Data iter_batches(4096) -> tf", f"{_ray_rate(uri):,.0f}"])
            rows.append([where, "pyarrow read_table -> numpy", f"{_pyarrow_rate(uri):,.0f}"])
    print(f"data_pipeline: {args.count} shapes images 32x32x3; machine: {machine()}")
    print(table(["storage", "path", "images/s"], rows))


if __name__ == "__main__":
    main()
