"""The dataset manifest: the contract between ``data prepare`` and every reader.

It is written last and atomically, so a dataset without ``manifest.json`` is, by definition, incomplete.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from genai_ray import __version__, storage
from genai_ray.errors import UserError

MANIFEST_NAME = "manifest.json"
FEATURES_DIR = "features"  # the evaluator's feature-model cache, derived from the shards
FORMAT_VERSION = 1
Split = Literal["train", "holdout"]


class ShardInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # relative to the dataset folder
    split: Split
    rows: int
    bytes: int
    sha256: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    name: str
    shape: tuple[int, int, int]  # (H, W, C)
    channels: int
    count: int
    train_count: int
    holdout_count: int
    holdout_fraction: float
    class_names: list[str] | None  # None when unlabelled
    label_counts: dict[str, int] = {}  # train split, by class index
    seed: int
    shards: list[ShardInfo]
    source: dict[str, Any]
    synthetic: bool = False
    provenance: dict[str, Any] | None = None  # for synthetic datasets: which model made them
    created_at: str
    genai_ray_version: str = __version__

    @property
    def labelled(self) -> bool:
        return self.class_names is not None

    @property
    def num_classes(self) -> int:
        return len(self.class_names or [])

    def shards_of(self, split: Split) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def sha256(self) -> str:
        """A stable fingerprint of the dataset, recorded in model packages."""
        return storage.sha256_bytes(self.model_dump_json().encode())


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_manifest(dataset_uri: str, manifest: Manifest) -> None:
    storage.write_bytes(storage.join(dataset_uri, MANIFEST_NAME), manifest.model_dump_json(indent=2).encode())


def read_manifest(dataset_uri: str) -> Manifest:
    uri = storage.join(dataset_uri, MANIFEST_NAME)
    if not storage.exists(uri):
        storage.check_bucket(dataset_uri)  # a missing bucket deserves its own message
        raise UserError(
            f"no dataset at {dataset_uri}: {MANIFEST_NAME} is missing (an unfinished prepare leaves none); "
            "run 'genai-ray data prepare' first"
        )
    try:
        return Manifest.model_validate(json.loads(storage.read_bytes(uri)))
    except (json.JSONDecodeError, ValidationError) as err:
        raise UserError(f"{uri} is not a valid manifest ({str(err).splitlines()[0]}); re-run data prepare") from None
