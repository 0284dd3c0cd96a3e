"""The generation API over real HTTP on Ray Serve: formats, seeds, metadata, client errors (listed and fuzzed) and the
API key."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_ray.images import png_text
from genai_ray.package.format import load_package
from genai_ray.serve.http import MAX_SEED, UNAUTHORIZED
from tests.serve_helpers import CLASSES, COND1_METRICS, KEY, npy, post


def test_generate_formats_name_model_and_seeds(cond: str, packages: dict[str, str]) -> None:
    r = post(cond, json={"n": 4, "seed": 11, "label": "one"})  # png by default; no key needed here
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-model"] == "cond/v0001" and r.headers["x-seeds"] == "11,12,13,14"
    text = png_text(r.content)
    assert text["model"] == "cond/v0001" and text["seed"] == "11" and text["labels"] == "1,1,1,1"
    # The version, never the store path, unless serve.expose_model_uri (off by default) says so.
    assert "x-model-uri" not in r.headers and "model-uri" not in text and packages["store"].encode() not in r.content

    images = npy(post(cond, json={"n": 4, "seed": 11, "label": 1, "format": "npy"}))
    expected, _, _ = load_package(packages["cond1"]).sample(4, seed=11, label=1)
    np.testing.assert_array_equal(images, expected)  # the server's pixels are the package's pixels

    r = post(cond, json={"n": 2, "seed": 3, "format": "json"})
    body = r.json()
    assert body["model"]["version"] == "v0001" and body["seeds"] == [3, 4] and len(body["labels"]) == 2
    first = base64.b64decode(body["images"][0]["png"])
    assert png_text(first)["seed"] == "3" and png_text(first)["model"] == "cond/v0001"
    assert packages["store"] not in r.text and "x-model-uri" not in r.headers and "uri" not in body["model"]

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
    (b'{"n": 1, "truncation_psi": 1.5}', 422, "truncation_psi: Input should be less than or equal to 1"),
    (b'{"n": 1, "truncation_psi": -0.1}', 422, "truncation_psi: Input should be greater than or equal to 0"),
    (b'{"n": 1, "truncation_psi": "high"}', 422, "truncation_psi: Input should be a valid number"),
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


ROUTES = [("POST", "/v1/generate"), ("GET", "/v1/model"), ("GET", "/healthz"), ("GET", "/"), ("GET", "/docs"),
          ("GET", "/openapi.json"), ("GET", "/v1/generate"), ("POST", "/v1/model"), ("DELETE", "/healthz"),
          ("GET", "/v1/nothing")]
WRONG_METHOD = {("GET", "/v1/generate"), ("POST", "/v1/model"), ("DELETE", "/healthz")}  # 405
NO_ROUTE = {("GET", "/v1/nothing")}  # 404
FORMATS = ["png", "npy", "json"]
ASCII_INT = re.compile(r"-?[0-9]{1,9}")  # a label string the server reads as an index (Unicode digits are not)
# Printable ASCII without edge whitespace: anything else HTTP clients refuse to send at all.
HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
JUNK = st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)


def field_values(conditional: bool) -> tuple[dict, dict]:
    """(valid, invalid) strategies per request field, for a model with ``CLASSES`` when ``conditional``. Invalid
    values are unambiguous: nothing that lax parsing could turn into a valid one ("3" for n, "0.5" for psi)."""
    names = CLASSES if conditional else []
    good_labels = st.none() | st.sampled_from([0, 1, 2, *names, "0", "2", "-0"]) if conditional else st.none()
    bad_labels = (st.integers(max_value=-1) | st.integers(min_value=len(names))
                  | st.sampled_from(["nine", "²", "٣", "9" * 5000, "7", 1.5])
                  | st.text(max_size=8).filter(lambda s: s not in names and not ASCII_INT.fullmatch(s)) | JUNK)
    if not conditional:  # any label at all: the model is unconditional
        bad_labels = bad_labels | st.sampled_from([0, 1, "one", "0"])
    valid = {"n": st.integers(1, 4), "seed": st.none() | st.integers(0, MAX_SEED), "label": good_labels,
             "format": st.sampled_from(FORMATS), "truncation_psi": st.floats(0, 1) | st.sampled_from([0, 1])}
    invalid = {
        "n": st.integers(max_value=0) | st.integers(65, 5000) | st.sampled_from(["five", "", 1.5, None]) | JUNK,
        "seed": st.integers(max_value=-1) | st.integers(min_value=MAX_SEED + 1) | st.sampled_from(["x", 0.5]) | JUNK,
        "label": bad_labels,
        "format": st.text(max_size=8).filter(lambda s: s not in FORMATS) | st.integers() | JUNK,
        "truncation_psi": st.floats(-10, -0.001) | st.floats(1.001, 10) | st.sampled_from(["high", ""]) | JUNK,
    }
    return valid, invalid


def key_ok(authorization: str | None) -> bool:
    """RFC 6750: the Bearer scheme (any case), then the key."""
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and token.strip() == KEY


@st.composite
def fuzzed(draw, conditional: bool, keyed: bool) -> tuple[str, str, bytes | None, dict, int, set[str]]:
    """One request on any route: (method, path, body, headers, the status it must get, invalid fields).

    The generate body is fields (each omitted, valid or invalid, plus unknown keys), JSON that is not an object,
    or bytes that are not JSON; sent as JSON or as another content type. The expected status follows the order the
    server checks in: the key (401, /v1/* and the API docs only), the route (404, 405), the body (422), else 200.
    """
    method, path = draw(st.sampled_from(ROUTES))
    headers = draw(st.fixed_dictionaries({}, optional={"accept": HEADER_VALUE, "x-request-id": HEADER_VALUE}))
    # The key goes only in Authorization: Serve logs a client's X-Request-ID, and the last test greps logs for it.
    auth = draw(st.none() | HEADER_VALUE | st.sampled_from(
        [f"Bearer {KEY}", f"bearer {KEY}", f"Bearer  {KEY}", "Bearer", "Basic Zm9v", f"bearer {KEY}x"]))
    if auth is not None:
        headers["authorization"] = auth
    json_type = draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "application/x+json"]))
    other_type = draw(st.sampled_from(["text/plain", "multipart/form-data", "application/xml", None]))
    content_type = draw(st.sampled_from([json_type, json_type, json_type, other_type]))
    if content_type is not None:
        headers["content-type"] = content_type

    valid, invalid = field_values(conditional)
    bad: set[str] = set()
    shape = draw(st.sampled_from(["fields", "fields", "fields", "not an object", "not JSON"]))
    if shape == "fields":
        body = {}
        for name in valid:
            pick = draw(st.sampled_from(["omit", "valid", "valid", "invalid"]))
            if pick != "omit":
                body[name] = draw((invalid if pick == "invalid" else valid)[name])
                bad |= {name} if pick == "invalid" else set()
        for key in draw(st.lists(st.text(min_size=1, max_size=6).filter(lambda k: k not in valid), max_size=1)):
            body[key] = draw(st.integers())
            bad.add(key)
        content = json.dumps(body).encode()
    elif shape == "not an object":
        content = json.dumps(draw(st.none() | st.integers() | st.text(max_size=8) | st.lists(st.integers()))).encode()
    else:
        content = draw(st.binary(max_size=40).filter(lambda b: not parses_as_json(b)))

    if keyed and path.startswith(("/v1/", "/docs", "/openapi.json")) and not key_ok(auth):
        status = 401
    elif (method, path) in WRONG_METHOD:
        status = 405
    elif (method, path) in NO_ROUTE:
        status = 404
    elif (method, path) != ("POST", "/v1/generate"):
        status = 200
    else:
        status = 422 if bad or shape != "fields" or content_type != json_type else 200
    return method, path, content if method != "GET" else None, headers, status, bad


def parses_as_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return False
    return True


@pytest.mark.parametrize("app", ["cond", "locked"])
def test_fuzzed_requests_get_the_exact_status(app: str, request: pytest.FixtureRequest) -> None:
    """Every route with fuzzed bodies, fields, headers (keys, content types) and labels (Unicode digits: "²", "٣"):
    each request gets exactly the status its worst part calls for, 401, 404, 405, 422 or 200, and a 422 for one
    invalid field names that field."""
    url = request.getfixturevalue(app)
    conditional, keyed = app == "cond", app == "locked"

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=fuzzed(conditional, keyed))
    def check(case) -> None:
        method, path, content, headers, status, bad = case
        r = httpx.request(method, f"{url}{path}", content=content, headers=headers, timeout=120)
        assert r.status_code == status, (case, r.status_code, r.text)
        if status >= 400:
            detail = r.json()["detail"]
            assert detail, r.text
            if status == 422 and len(bad) == 1 and content_type_is_json(headers):
                assert next(iter(bad)) in detail, (case, detail)

    check()


def content_type_is_json(headers: dict[str, str]) -> bool:
    return "json" in headers.get("content-type", "")


def test_auth_protects_v1_routes_and_key_is_never_logged(locked: str, packages: dict[str, str], ray_local) -> None:
    good = {"Authorization": f"Bearer {KEY}"}
    # The API docs describe every route and field: with a key set, they need it too.
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.get(f"{locked}{path}", headers=headers)
            assert r.status_code == 401 and r.json() == {"detail": UNAUTHORIZED}, (path, headers, r.text)
    assert httpx.get(f"{locked}/docs", headers=good).status_code == 200
    paths = httpx.get(f"{locked}/openapi.json", headers=good).json()["paths"]
    routes = [(method, path) for path, ops in paths.items() if path.startswith("/v1/") for method in ops]
    assert sorted(routes) == [("get", "/v1/model"), ("post", "/v1/generate")], routes  # a new route joins here
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        for method, path in routes:
            r = httpx.request(method, f"{locked}{path}", json={"n": 1}, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path, r.text)
    r = post(locked, json={"n": 2, "seed": 1}, headers=good)
    assert r.headers["x-model"] == "uncond/v0001" and r.headers["x-model-uri"] == packages["uncond"]  # exposed here
    assert png_text(r.content)["model-uri"] == packages["uncond"]
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
