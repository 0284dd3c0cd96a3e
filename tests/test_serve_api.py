"""The generation API over real HTTP on Ray Serve: formats, seeds, metadata, client errors and the API key."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from genai_ray.images import png_text
from genai_ray.package import load_package
from tests.serve_helpers import COND1_METRICS, KEY, npy, post


def test_generate_formats_name_model_and_seeds(cond: str, packages: dict[str, str]) -> None:
    r = post(cond, json={"n": 4, "seed": 11, "label": "one"})  # png by default; no key needed here
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-model"] == "cond/v0001" and r.headers["x-seeds"] == "11,12,13,14"
    text = png_text(r.content)
    assert text["model"] == "cond/v0001" and text["seed"] == "11" and text["labels"] == "1,1,1,1"

    images = npy(post(cond, json={"n": 4, "seed": 11, "label": 1, "format": "npy"}))
    expected, _, _ = load_package(packages["cond1"]).sample(4, seed=11, label=1)
    np.testing.assert_array_equal(images, expected)  # the server's pixels are the package's pixels

    body = post(cond, json={"n": 2, "seed": 3, "format": "json"}).json()
    assert body["model"]["version"] == "v0001" and body["seeds"] == [3, 4] and len(body["labels"]) == 2
    first = base64.b64decode(body["images"][0]["png"])
    assert png_text(first)["seed"] == "3" and png_text(first)["model"] == "cond/v0001"

    r = post(cond, json={"n": 1})
    assert r.status_code == 200 and int(r.headers["x-seed"]) >= 0  # a random seed, reported


def test_model_health_docs_and_gallery_html(cond: str) -> None:
    meta = httpx.get(f"{cond}/v1/model").json()
    assert meta["name"] == "cond" and meta["metrics"] == COND1_METRICS and meta["class_names"][1] == "one"
    assert httpx.get(f"{cond}/healthz").json()["model"] == "cond/v0001"
    schema = httpx.get(f"{cond}/openapi.json").json()
    assert "/v1/generate" in schema["paths"] and "GenerateRequest" in schema["components"]["schemas"]
    assert httpx.get(f"{cond}/docs").status_code == 200
    page = httpx.get(f"{cond}/").text
    assert '"/t-cond/"' in page and "http" not in page.split("<script>")[1]  # no external assets


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 422, "JSON"),
    (b'{"n": 2, "colour": "red"}', 422, "colour: Extra inputs are not permitted"),
    (b'{"n": 0}', 422, "n: Input should be greater than or equal to 1"),
    (b'{"n": 65}', 422, "over this server's limit of 64"),
    (b'{"n": 1, "seed": -1}', 422, "seed"),
    (b'{"n": 1, "format": "gif"}', 422, "format"),
    (b'{"n": 1, "label": "nine"}', 422, "unknown label 'nine'"),
    (b'{"n": 1, "label": 7}', 422, "label 7 is out of range"),
    (b'{"n": 1, "label": 1.5}', 422, "label"),
    (b"[1, 2]", 422, "dictionary"),
    (b'{"n": 1, "pad": "' + b"x" * 20_000 + b'"}', 413, "over 16384 bytes"),
])
def test_client_errors_are_4xx_with_a_message(cond: str, body: bytes, status: int, message: str) -> None:
    r = post(cond, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_streamed_oversized_body_is_413(cond: str) -> None:
    def chunks():
        yield b'{"n": 1, "pad": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'

    r = post(cond, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_auth_protects_v1_routes_and_key_is_never_logged(locked: str, ray_local) -> None:
    good = {"Authorization": f"Bearer {KEY}"}
    paths = httpx.get(f"{locked}/openapi.json").json()["paths"]
    routes = [(method, path) for path, ops in paths.items() if path.startswith("/v1/") for method in ops]
    assert sorted(routes) == [("get", "/v1/model"), ("post", "/v1/generate")], routes  # a new route joins here
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        for method, path in routes:
            r = httpx.request(method, f"{locked}{path}", json={"n": 1}, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path, r.text)
    assert post(locked, json={"n": 2, "seed": 1}, headers=good).headers["x-model"] == "uncond/v0001"
    assert httpx.get(f"{locked}/v1/model", headers=good).json()["conditional"] is False
    r = post(locked, json={"n": 1, "label": 0}, headers=good)
    assert r.status_code == 422 and "unconditional" in r.json()["detail"]
    # 401 before the body is read or validated: a client without the key learns nothing about the API.
    for body in (b"{not json", b'{"n": 0, "colour": "red"}', b'{"n": 1, "pad": "' + b"x" * 20_000 + b'"}'):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = post(locked, content=body, headers={"content-type": "application/json", **headers})
            assert r.status_code == 401 and "colour" not in r.text and "JSON" not in r.text, r.text
    # Probes need no key, and learn only ok or not: no model name, no URI, no load error.
    anonymous = httpx.get(f"{locked}/healthz")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    assert httpx.get(f"{locked}/healthz", headers={"Authorization": "Bearer wrong"}).json() == {"status": "ok"}
    assert httpx.get(f"{locked}/healthz", headers=good).json()["model"] == "uncond/v0001"
    logs = Path(ray_local._private.worker._global_node.get_logs_dir_path())
    leaked = [p for p in logs.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaked == []
