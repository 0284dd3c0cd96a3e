"""Model packages: write a real Keras generator, verify and load it, refuse tampering, order versions by number."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from genai_ray import storage
from genai_ray.errors import IntegrityError, UserError
from genai_ray.package.format import (
    GENERATOR_FILE,
    META_FILE,
    latents,
    load_package,
    next_version,
    resolve_model_uri,
    sorted_versions,
    write_package,
)
from tests.helpers import LATENT, toy_generator

CLASSES = [str(i) for i in range(10)]


def meta_fields(name: str = "toy", version: str = "v0001") -> dict:
    return {"name": name, "version": version, "image_shape": (8, 8, 1), "latent_dim": LATENT, "conditional": True,
            "class_names": CLASSES, "class_probs": [0.1] * 10, "dataset_uri": "memory://digits",
            "dataset_sha256": "0" * 64, "config": {"preset": "tiny"}, "metrics": {"eval/fd": 12.5},
            "created_at": datetime.now(UTC).isoformat()}


@pytest.fixture(scope="module")
def generator():
    return toy_generator(conditional=True)


def write(store: str, generator, name: str = "toy", version: str = "v0001") -> str:
    uri = storage.join(store, "models", name, version)
    write_package(uri, generator, meta_fields(name, version), b"\x89PNG not checked")
    return uri


def test_a_written_package_loads_verified_and_generates_what_its_generator_does(tmp_path: Path, generator) -> None:
    uri = write(str(tmp_path), generator)
    on_disk = json.loads((Path(uri) / META_FILE).read_text())
    assert on_disk["generator_sha256"] == storage.sha256_bytes((Path(uri) / GENERATOR_FILE).read_bytes())
    package = load_package(uri)
    assert (package.meta.name, package.meta.version, package.meta.metrics) == ("toy", "v0001", {"eval/fd": 12.5})
    images, seeds, labels = package.sample(5, seed=3, label="7")
    assert seeds == [3, 4, 5, 6, 7] and labels.tolist() == [7] * 5
    # The loaded generator is the written one: the same latents and labels give the in-memory model's pixels.
    # (float32 weights copied bit for bit; the traced graph may order sums differently: ulps of [0, 1] pixels, so
    # atol=1e-6, while another weight or latent changes pixels by > 1e-2.)
    expected = np.asarray(generator([latents(seeds, LATENT), np.full(5, 7, np.int32)], training=False))
    np.testing.assert_allclose(images, (expected + 1) / 2, atol=1e-6)
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.float32 and 0 <= images.min() <= images.max() <= 1
    one, _, _ = package.sample(1, seed=5, label=7)
    np.testing.assert_array_equal(one[0], images[2])  # image i depends only on seed + i, bit for bit


def test_a_refused_write_leaves_nothing(tmp_path: Path, generator) -> None:
    uri = str(tmp_path / "models" / "toy" / "v0001")
    with pytest.raises(ValidationError, match="latent_dim"):
        write_package(uri, generator, {**meta_fields(), "latent_dim": "wide"}, b"png")
    assert not Path(uri).exists()
    with pytest.raises(UserError, match="model.json is missing"):
        load_package(uri)


def test_a_modified_generator_is_refused_by_sha256(tmp_path: Path, generator) -> None:
    uri = write(str(tmp_path), generator)
    path = Path(uri) / GENERATOR_FILE
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match=r"generator\.keras: sha256 .* does not match model\.json"):
        load_package(uri)
    # A different, valid generator in its place is refused just the same.
    path.write_bytes((Path(write(str(tmp_path / "other"), toy_generator(False))) / GENERATOR_FILE).read_bytes())
    with pytest.raises(IntegrityError, match="does not match model.json"):
        load_package(uri)


def test_a_generator_that_matches_its_hash_but_is_not_keras_is_refused(tmp_path: Path, generator) -> None:
    uri = write(str(tmp_path), generator)
    junk = b"PK\x03\x04 not a keras archive"
    (Path(uri) / GENERATOR_FILE).write_bytes(junk)
    meta = json.loads((Path(uri) / META_FILE).read_text())
    (Path(uri) / META_FILE).write_text(json.dumps({**meta, "generator_sha256": storage.sha256_bytes(junk)}))
    with pytest.raises(IntegrityError, match=r"generator\.keras: cannot load the generator"):
        load_package(uri)


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda meta: "{ not json", "not a valid model.json"),
    (lambda meta: json.dumps({k: v for k, v in meta.items() if k != "latent_dim"}), "not a valid model.json"),
    (lambda meta: json.dumps({**meta, "latent_dim": "wide"}), "not a valid model.json"),
    (lambda meta: json.dumps({**meta, "run_shell": "rm -rf /"}), "not a valid model.json"),  # unknown keys too
    (lambda meta: "\udcff", "not a valid model.json"),  # not UTF-8
], ids=["not-json", "missing-field", "bad-type", "unknown-key", "not-utf8"])
def test_a_broken_model_json_is_one_integrity_error(tmp_path: Path, generator, damage, expected: str) -> None:
    uri = write(str(tmp_path), generator)
    meta_path = Path(uri) / META_FILE
    meta_path.write_bytes(damage(json.loads(meta_path.read_text())).encode("utf-8", "surrogateescape"))
    with pytest.raises(IntegrityError) as err:
        load_package(uri)
    assert expected in str(err.value) and str(err.value).startswith(str(meta_path)) and "\n" not in str(err.value)


def test_versions_sort_by_number_not_as_text() -> None:
    names = ["v9999", "champion.json", "v10000", "v0002", "vnext", "v12", "v0010"]
    assert sorted_versions(names) == ["v0002", "v0010", "v9999", "v10000"]  # v12 is not a vNNNN name


@pytest.mark.parametrize("where", ["local", "s3"])
def test_next_version_and_latest_follow_numeric_order(where: str, tmp_path: Path, s3_bucket: str, generator) -> None:
    store = str(tmp_path / "store") if where == "local" else f"{s3_bucket}/store"
    models = storage.join(store, "models")
    assert next_version(models, "toy") == "v0001"
    for version in ("v0002", "v9999", "v10000"):
        write(store, generator, version=version)
    assert next_version(models, "toy") == "v10001"  # text order would say v0002 is last: v0003
    # A version whose model.json is not written yet (an export in progress) is not "latest".
    storage.write_bytes(storage.join(models, "toy", "v10001", GENERATOR_FILE), b"half-written")
    latest = resolve_model_uri("toy", store)
    assert latest == storage.join(models, "toy", "v10000")
    assert load_package(latest).meta.version == "v10000"
    assert resolve_model_uri("toy/v9999", store) == storage.join(models, "toy", "v9999")
    with pytest.raises(UserError, match="no exported model named 'nothing'"):
        resolve_model_uri("nothing", store)
