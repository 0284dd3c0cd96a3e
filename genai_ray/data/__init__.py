"""Datasets: image sources, streaming preparation into Parquet shards, manifests and readers."""
