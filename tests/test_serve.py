"""The generation endpoint over real HTTP on Ray Serve (session Ray, a free port, real model packages)."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import itertools
import json
import os
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import Chromium, make_package

from genai_ray.config import ServeConfig
from genai_ray.images import png_text
from genai_ray.package.format import load_package
from genai_ray.ray_runtime import free_port
from genai_ray.serve.http import UNAUTHORIZED
from genai_ray.serve.keyhash import hash_key

KEY_ENV = "GENAI_RAY_TEST_SERVE_KEY"
KEY = "s3cret-test-key-7f1c9a"
SMALL = {"ray_actor_options": {"num_cpus": 0.5}}
# What an evaluated package records: headline scores, the KDE baseline's, and many more (class shares...).
COND1_METRICS = {"eval/fd": 1.5, "eval/precision": 0.81, "eval/recall": 0.42, "eval/memorisation": 0.004,
                 "baseline/kde/eval/fd": 1.05, "baseline/kde/eval/recall": 0.76,
                 **{f"eval/class_share/{i}": 0.1 for i in range(10)}, "eval/coverage": 0.7}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    store = str(tmp_path_factory.mktemp("serve-store"))
    corrupt = make_package(store, "broken", "v0001", True, seed=3)
    with open(os.path.join(corrupt, "generator.keras"), "ab") as f:
        f.write(b"tampered")
    return {"store": store, "cond1": make_package(store, "cond", "v0001", True, seed=1, metrics=COND1_METRICS),
            "cond2": make_package(store, "cond", "v0002", True, seed=2), "corrupt": corrupt,
            "uncond": make_package(store, "uncond", "v0001", False, seed=4)}


@pytest.fixture(scope="module")
def serve_root(ray_local) -> str:
    """Serve's HTTP proxy on a free loopback port (never 8000); apps are deleted by their fixtures."""
    from ray import serve

    from genai_ray.serve.app import http_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{http_port(port)}"


def deploy(name: str, cfg: ServeConfig, **options) -> None:
    from ray import serve

    from genai_ray.serve.app import application

    serve.run(application(cfg, {**SMALL, **options}), name=name, route_prefix=f"/{name}")


@pytest.fixture(scope="module")
def cond(serve_root: str, packages: dict[str, str]):
    """A conditional model, no API key, batches of up to 16 that wait 50 ms to fill."""
    from ray import serve

    deploy("t-cond", ServeConfig(model_uri=packages["cond1"], max_n=64, max_batch_size=16, batch_wait_timeout_s=0.05),
           max_ongoing_requests=32)
    yield f"{serve_root}/t-cond"
    serve.delete("t-cond")


@pytest.fixture(scope="module")
def locked(serve_root: str, packages: dict[str, str]):
    """An unconditional model behind an API key, with room for one request and one in the queue; its responses name
    the package URI (serve.expose_model_uri)."""
    from ray import serve

    os.environ[KEY_ENV] = KEY  # the builder reads it here and sends only its scrypt hash to the replica
    try:
        deploy("t-locked", ServeConfig(model_uri=packages["uncond"], max_batch_size=1, api_key_env=KEY_ENV,
                                       expose_model_uri=True),
               max_ongoing_requests=1, max_queued_requests=1)
    finally:
        os.environ.pop(KEY_ENV)
    yield f"{serve_root}/t-locked"
    serve.delete("t-locked")


def post(url: str, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/generate", timeout=120, **kw)


def npy(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


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


def test_concurrent_requests_batch_and_keep_pixels(cond: str) -> None:
    requests = [{"n": 1 + i % 3, "seed": 100 * i, "label": [None, 0, "two"][i % 3], "format": "npy"} for i in range(48)]
    with cf.ThreadPoolExecutor(24) as pool:
        together = list(pool.map(lambda b: post(cond, json=b), requests))
    sizes = [int(r.headers["x-batch-size"]) for r in together]
    assert max(sizes) > 1, sizes
    for body, r in zip(requests[:12], together[:12], strict=True):
        alone = post(cond, json=body)
        assert alone.headers["x-batch-size"] == "1"
        np.testing.assert_array_equal(npy(r), npy(alone))
        assert r.headers["x-labels"] == alone.headers["x-labels"]
    stats = httpx.get(f"{cond}/v1/model").json()["serving"]
    assert stats["largest_batch"] > 1 and stats["requests"] >= 60



def test_a_poisoned_request_fails_alone_and_its_batch_mates_get_200(cond: str) -> None:
    """Labels that pass ``str.isdigit()`` but not ``int()`` ("²", 5,000 digits), sent at once with good requests:
    each poisoned one gets its own 422, the good ones their images, and the replica saw batches that mixed both."""
    poisons = ["²", "9" * 5000, "٣"]

    def mixed() -> int:
        return httpx.get(f"{cond}/v1/model").json()["serving"]["mixed_batches"]

    def send(body: dict, start: threading.Barrier) -> httpx.Response:
        start.wait()
        return post(cond, json=body)

    before, rounds = mixed(), 0
    while rounds < 3:  # 15 requests land within the 50 ms batch wait; a retry covers a slow thread start
        rounds += 1
        bodies = [{"n": 1, "seed": i, "label": poisons[i // 5] if i % 5 == 2 else i % 3} for i in range(15)]
        start = threading.Barrier(len(bodies))
        with cf.ThreadPoolExecutor(len(bodies)) as pool:
            responses = list(pool.map(send, bodies, [start] * len(bodies)))
        for body, r in zip(bodies, responses, strict=True):
            if isinstance(body["label"], str):
                assert r.status_code == 422 and "unknown label" in r.json()["detail"], r.text
            else:
                assert r.status_code == 200, r.text
        if mixed() > before:
            break
    assert mixed() > before, f"no batch mixed a poisoned request with good ones in {rounds} rounds"
    assert max(int(r.headers["x-batch-size"]) for r in responses if r.status_code == 200) > 1


def test_batches_fill_while_a_slow_model_computes_and_keep_dcgan_pixels(serve_root: str, tmp_path: Path) -> None:
    """Ray's batcher forms the next batch as soon as a request arrives, so with a 1 ms wait a slow model saw
    batches of 1-2 under load; the replica waits about one model call while busy (about 60 ms here).

    The same real generator (a DCGAN with batch norm) gives the same pixels to a request served in a batch
    and alone: batch norm must use its moving statistics, not the batch's."""
    from ray import serve

    from bench.serve_load import untrained_package

    uri = untrained_package(str(tmp_path), "dcgan")  # the gpu preset's generator at 32x32x3
    layers = [type(layer).__name__ for layer in load_package(uri).model.layers]
    assert "BatchNormalization" in layers, layers
    deploy("t-slow", ServeConfig(model_uri=uri, max_batch_size=32, batch_wait_timeout_s=0.001),
           max_ongoing_requests=64)
    try:
        url = f"{serve_root}/t-slow"
        bodies = [{"n": 1 + i % 2, "seed": 7 * i, "label": i % 10, "format": "npy"} for i in range(192)]
        with cf.ThreadPoolExecutor(32) as pool:
            together = list(pool.map(lambda b: post(url, json=b), bodies))
        assert [r.status_code for r in together] == [200] * 192
        stats = httpx.get(f"{url}/v1/model").json()["serving"]
        assert stats["requests"] / stats["batches"] >= 4, stats["batch_sizes"]
        batched = [(b, r) for b, r in zip(bodies, together, strict=True) if int(r.headers["x-batch-size"]) > 1]
        assert len(batched) >= 8, [r.headers["x-batch-size"] for r in together]
        for body, r in batched[:: max(1, len(batched) // 8)][:8]:
            alone = post(url, json=body)
            assert alone.headers["x-batch-size"] == "1"
            np.testing.assert_array_equal(npy(r), npy(alone))  # bit-identical, not just close
    finally:
        serve.delete("t-slow")


ROUTES = [("POST", "/v1/generate"), ("GET", "/v1/model"), ("GET", "/healthz"), ("GET", "/"), ("GET", "/docs"),
          ("GET", "/openapi.json"), ("GET", "/v1/generate"), ("POST", "/v1/model"), ("DELETE", "/healthz"),
          ("GET", "/v1/nothing")]


@pytest.mark.parametrize("app", ["cond", "locked"])
def test_fuzzed_requests_never_get_a_500(app: str, request: pytest.FixtureRequest) -> None:
    """Bodies, headers (keys, content types) and labels (Unicode digits: "²", "٣") on every route: 4xx or 200."""
    url = request.getfixturevalue(app)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                       max_size=3), max_leaves=6)
    digits = st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=6)
    labels = values | digits | st.sampled_from(["one", "zero", 2, "²", "-0", "9" * 5000])
    fields = st.fixed_dictionaries({}, optional={
        "n": values | st.integers(-2, 70), "seed": values, "label": labels,
        "format": values | st.sampled_from(["png", "npy", "json"]), "truncation_psi": values | st.floats(-1, 2)})
    # Printable ASCII without edge whitespace: anything else HTTP clients refuse to send at all.
    header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
    # The key goes only in Authorization: Serve logs a client's X-Request-ID, and the last test greps logs for it.
    headers = st.fixed_dictionaries({}, optional={
        "authorization": header_value | st.sampled_from([f"Bearer {KEY}", "Bearer", "Basic Zm9v", f"bearer {KEY}x"]),
        "content-type": header_value | st.sampled_from(["application/json", "text/plain", "multipart/form-data"]),
        "accept": header_value, "x-request-id": header_value})

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(route=st.sampled_from(ROUTES), body=fields | values, raw=st.binary(max_size=40) | st.none(),
           extra=headers)
    def check(route, body, raw, extra) -> None:
        method, path = route
        content = raw if raw is not None else json.dumps(body).encode()
        r = httpx.request(method, f"{url}{path}", content=content if method != "GET" else None,
                          headers={"content-type": "application/json", **extra}, timeout=120)
        assert r.status_code < 500 or (r.status_code == 503 and path == "/healthz"), \
            (route, body, raw, extra, r.status_code, r.text)
        if r.status_code in (401, 413, 422):
            assert r.json()["detail"]

    check()


def test_gallery_renders_and_generates_in_chromium(cond: str, tmp_path: Path) -> None:
    Chromium.require()
    with Chromium() as browser:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=f"{cond}/")
        browser.wait_for("document.querySelector('#status')?.dataset.state === 'ready'")
        shown = browser.eval("""[...document.querySelectorAll('#gallery img')].map(
            i => [i.complete && i.naturalWidth, i.dataset.label])""")
        assert len(shown) == 18 and all(w == 8 for w, _ in shown)  # 3 classes x 6, all decoded
        assert sorted({lab for _, lab in shown}) == ["0", "1", "2"]
        assert "cond/v0001" in browser.eval("document.querySelector('#model').textContent")
        # The header: a small table of key scores, the KDE baseline's beside them; the rest behind a disclosure.
        scores = browser.eval("""[...document.querySelectorAll('#scores tbody tr')].map(
            r => [...r.children].slice(0, 3).map(c => c.textContent))""")
        assert scores == [["FD", "1.500", "1.050"], ["precision", "0.810", "\u2013"], ["recall", "0.420", "0.760"],
                          ["memorisation", "0.004", "\u2013"]], scores
        assert browser.eval("!document.querySelector('#scores').hidden && "
                            "document.querySelector('#scores').getBoundingClientRect().height > 0")
        assert browser.eval("document.querySelector('#all-metrics').open") is False
        assert browser.eval("document.querySelectorAll('#all-metrics tbody tr').length") == len(COND1_METRICS)
        shot = browser.send("Page.captureScreenshot", format="png")["data"]
        out = Path(os.environ.get("GENAI_RAY_TEST_ARTIFACTS", tmp_path)) / "gallery.png"
        out.write_bytes(base64.b64decode(shot))
        print(f"gallery screenshot: {out}")
        browser.eval("""document.querySelector('#label').value = '2'; document.querySelector('#n').value = '5';
                        document.querySelector('#generate').click(); true""")
        browser.wait_for("document.querySelector('#status').dataset.images === '23' && "
                         "document.querySelector('#status').dataset.state === 'ready'")
        newest = browser.eval("""[...document.querySelector('#gallery section').querySelectorAll('img')].map(
            i => [i.complete && i.naturalWidth, i.dataset.label])""")
        assert newest == [[8, "2"]] * 5


def test_gallery_says_a_key_is_needed_and_loads_the_model_with_it_in_chromium(locked: str) -> None:
    Chromium.require()
    model = "document.querySelector('#model').textContent"
    with Chromium() as browser:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=f"{locked}/")
        browser.wait_for("document.querySelector('#status')?.dataset.state === 'key'")
        assert "needs an API key" in browser.eval(model)
        assert browser.eval("document.querySelector('#generate').textContent") == "Load model"
        assert browser.eval("document.querySelectorAll('#gallery img').length") == 0
        press = "document.querySelector('#key').value = {}; document.querySelector('#generate').click(); true"
        browser.eval(press.format(json.dumps("wrong")))
        browser.wait_for(f"{model}.includes('refused')")
        assert browser.eval("document.querySelector('#status').dataset.state") == "key"
        browser.eval(press.format(json.dumps(KEY)))
        browser.wait_for("document.querySelector('#status').dataset.state === 'ready'")
        assert "uncond/v0001" in browser.eval(model)
        assert browser.eval("document.querySelectorAll('#gallery img').length") == 16
        assert browser.eval("document.querySelector('#generate').textContent") == "Generate"


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


@pytest.mark.slow  # minutes of load against Serve
def test_load_beyond_the_queue_gets_fast_503s_and_memory_stays_bounded(locked: str) -> None:
    """Fault: 64 concurrent n=64 requests against room for 2, three times. Expect: 200 or 503, nothing
    else, and the replica's memory does not grow from burst to burst."""
    good = {"Authorization": f"Bearer {KEY}"}

    def burst() -> list[int]:
        with cf.ThreadPoolExecutor(32) as pool:
            return list(pool.map(lambda _: post(locked, json={"n": 64}, headers=good).status_code, range(64)))

    def rss_mib() -> float:
        pid = httpx.get(f"{locked}/v1/model", headers=good).json()["serving"]["pid"]
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    codes = burst()
    assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0, codes
    after_first = rss_mib()
    codes = burst() + burst()
    grown = rss_mib() - after_first
    assert set(codes) <= {200, 503}, codes
    assert grown < 64, f"replica RSS grew {grown:.0f} MiB over two more overload bursts"


@pytest.mark.slow  # minutes of load against Serve
def test_replica_killed_under_load_is_replaced(serve_root: str, packages: dict[str, str]) -> None:
    """Fault: SIGKILL one of two replicas under load. Expect: Serve replaces it, the other keeps serving,
    and only requests in flight on the killed process fail (measured and reported)."""
    import signal
    import time

    from ray import serve

    deploy("t-crash", ServeConfig(model_uri=packages["uncond"], batch_wait_timeout_s=0.01),
           max_ongoing_requests=8, autoscaling_config={"min_replicas": 2, "max_replicas": 2},
           ray_actor_options={"num_cpus": 0.25})
    url = f"{serve_root}/t-crash"
    try:
        pids: set[int] = set()
        for _ in range(200):
            pids.add(httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, f"expected two replica processes, saw {pids}"
        victim = min(pids)
        stop = threading.Event()
        seen: list[tuple[float, int]] = []

        def hammer(worker: int) -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                try:
                    code = post(url, json={"n": 1, "seed": worker * 10_000 + i}).status_code
                except httpx.HTTPError:
                    code = -1  # a hang or a dropped connection counts as a failure too
                seen.append((time.monotonic(), code))

        with cf.ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(hammer, w) for w in range(4)]
            try:
                while len(seen) < 20:
                    threading.Event().wait(0.05)
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                new_pids: set[int] = set()
                for _ in range(600):  # until a replacement process answers
                    new_pids.add(httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["pid"])
                    if new_pids - pids:
                        break
                    threading.Event().wait(0.1)
                recovered_at = time.monotonic()
                before = len(seen)
                while len(seen) < before + 20:
                    threading.Event().wait(0.05)
            finally:
                stop.set()
                for w in workers:
                    w.result()
        failed = [(t - killed_at, c) for t, c in seen if c != 200]
        report = (f"{len(seen)} requests, {len(failed)} failed (codes {sorted({c for _, c in failed})}) "
                  f"within {max((t for t, _ in failed), default=0):.1f} s of the kill; "
                  f"replacement answering after {recovered_at - killed_at:.1f} s")
        print(f"replica crash: {report}")
        assert new_pids - pids, f"no replacement replica appeared: {report}"
        assert len(failed) <= 8, f"more failures than the killed replica had in flight (8): {report}"
        assert all(c == 200 for _, c in seen[-20:]), f"still failing after recovery: {report}"
    finally:
        serve.delete("t-crash")


def test_failed_load_marks_replica_unhealthy_naming_the_uri(serve_root: str, packages: dict[str, str]) -> None:
    from ray import serve

    with pytest.raises(RuntimeError, match="Deploying application t-bad failed"):
        deploy("t-bad", ServeConfig(model_uri=packages["corrupt"]), health_check_period_s=1)
    try:
        status = serve.status().applications["t-bad"].deployments["Generator"]
        assert status.status == "DEPLOY_FAILED"
        assert f"model {packages['corrupt']} failed to load" in status.message and "sha256" in status.message
    finally:
        serve.delete("t-bad")


class Load:
    """Closed-loop clients in threads, each recording (start time, status, X-Model, replica pid); resizable."""

    def __init__(self, url: str, body: dict) -> None:
        self.url, self.body = url, body
        self.seen: list[tuple[float, int, str | None]] = []
        self.stops: list[threading.Event] = []
        self.threads: list[threading.Thread] = []

    def _client(self, stop: threading.Event, worker: int) -> None:
        import time

        with httpx.Client(timeout=120) as client:
            for i in itertools.count():
                if stop.is_set():
                    return
                started = time.monotonic()
                try:
                    r = client.post(f"{self.url}/v1/generate", json={**self.body, "seed": worker * 100_000 + i})
                    self.seen.append((started, r.status_code, r.headers.get("x-model")))
                except httpx.HTTPError:
                    self.seen.append((started, -1, None))  # a dropped connection or a hang is a failure too

    def resize(self, clients: int) -> None:
        while len(self.stops) < clients:
            stop = threading.Event()
            thread = threading.Thread(target=self._client, args=(stop, len(self.stops)), daemon=True)
            self.stops.append(stop)
            self.threads.append(thread)
            thread.start()
        while len(self.stops) > clients:
            self.stops.pop().set()
            self.threads.pop().join()

    def wait_for(self, more: int) -> None:
        target = len(self.seen) + more
        while len(self.seen) < target:
            threading.Event().wait(0.05)

    def failures(self) -> list[tuple[float, int, str | None]]:
        return [s for s in self.seen if s[1] != 200]


def replica_states(app: str) -> dict[str, int]:
    from ray import serve

    return {str(k): v for k, v in serve.status().applications[app].deployments["Generator"].replica_states.items()}


def wait_replicas(app: str, running: int, timeout_s: float = 180) -> float:
    """Poll Serve until ``running`` replicas run and none starts or stops; returns the seconds it took."""
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        states = replica_states(app)
        if states.get("RUNNING", 0) == running and sum(states.values()) == running:
            return time.monotonic() - t0
        threading.Event().wait(0.2)
    raise AssertionError(f"{app} never settled at {running} replica(s): {replica_states(app)}")


def test_autoscaling_1_to_2_and_back_with_no_failed_request_and_one_version(
        serve_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load scales the deployment from 1 replica to 2 and, when it drops, back to 1, with no failed request.
    A new champion promoted meanwhile is not served: the replica added by autoscaling serves the version the
    deployment resolved ``champion`` to, like the first one, until the next deploy."""
    from ray import serve

    from genai_ray.tune.promote import promote

    store = str(tmp_path / "store")
    monkeypatch.setenv("GENAI_RAY_STORE", store)
    v1 = make_package(store, "cond", "v0001", True, seed=1)
    v2 = make_package(store, "cond", "v0002", True, seed=2)
    promote(store, "cond", v1, score=2.0)
    # Scale out when a replica averages over 2 requests in flight; react within about a second either way.
    auto = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2, "upscale_delay_s": 1,
            "downscale_delay_s": 3, "look_back_period_s": 1, "metrics_interval_s": 0.5}
    deploy("t-auto", ServeConfig(model_uri="champion:cond", batch_wait_timeout_s=0.01), max_ongoing_requests=16,
           autoscaling_config=auto, graceful_shutdown_wait_loop_s=0.5)
    url = f"{serve_root}/t-auto"
    load = Load(url, {"n": 4})
    try:
        assert replica_states("t-auto") == {"RUNNING": 1}
        promote(store, "cond", v2, score=1.0)  # the new champion: not for this deployment
        load.resize(8)
        up_s = wait_replicas("t-auto", 2)
        pids = {httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["pid"] for _ in range(40)}
        serving = httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]
        assert len(pids) == 2 and serving["replicas"] == {"RUNNING": 2}, (pids, serving)  # both replicas serve
        load.wait_for(40)
        load.resize(1)  # about one request in flight: under target, so one replica is enough
        down_s = wait_replicas("t-auto", 1)
        load.wait_for(10)
    finally:
        load.resize(0)
        serve.delete("t-auto")
    print(f"autoscaling: {len(load.seen)} requests, up in {up_s:.1f} s, down in {down_s:.1f} s")
    assert load.failures() == [], load.failures()[:5]
    assert {m for _, _, m in load.seen} == {"cond/v0001"}


def test_hot_reload_at_load_two_replicas_32_clients(serve_root: str, packages: dict[str, str]) -> None:
    """Reload to a new version the way users do (``genai-ray serve`` again) while 32 clients hammer 2 replicas:
    no failed request, the same two replicas swap the model in place, and every request sent after the reload
    returned is answered by the new version."""
    import time

    from ray import serve

    from genai_ray.serve.app import load_serve_file, start

    spec = load_serve_file(Path(__file__).resolve().parents[1] / "serve_configs" / "local.yaml")
    spec.name, spec.route_prefix = "t-reload", "/t-reload"
    spec.deployment.update(autoscaling_config={"min_replicas": 2, "max_replicas": 2}, max_ongoing_requests=32,
                           ray_actor_options={"num_cpus": 0.5})
    port = int(serve_root.rsplit(":", 1)[1])
    _, url, _ = start(packages["cond1"], spec, None, port, None, packages["store"])
    url = url.rstrip("/")
    load = Load(url, {"n": 1})
    try:
        replicas = {httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["replica"] for _ in range(30)}
        load.resize(32)
        load.wait_for(64)
        start(packages["cond2"], spec, None, port, None, packages["store"])
        reloaded_at = time.monotonic()
        load.wait_for(128)
        after = {httpx.get(f"{url}/v1/model", timeout=30).json()["serving"]["replica"] for _ in range(30)}
    finally:
        load.resize(0)
        serve.delete("t-reload")
    print(f"hot reload: {len(load.seen)} requests from 32 clients, {len(load.failures())} failed")
    assert load.failures() == [], load.failures()[:5]
    models = [m for _, _, m in sorted(load.seen)]
    assert models[0] == "cond/v0001" and models[-1] == "cond/v0002"
    late = {m for t, _, m in load.seen if t > reloaded_at}
    assert late == {"cond/v0002"}, late
    assert after == replicas and len(replicas) == 2  # swapped in place: the same two replicas


LOCAL_CONFIG = Path(__file__).resolve().parents[1] / "serve_configs" / "local.yaml"


def cli_serve(store: str, model: str, port: int, capsys, config: str = str(LOCAL_CONFIG)) -> tuple[int, str, str]:
    from genai_ray.cli import main

    code = main(["--store", store, "serve", "--model", model, "--config", config, "--port", str(port),
                 "--no-blocking"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow  # minutes of load against Serve
def test_cli_serves_and_hot_swaps_under_load_with_zero_failed_requests(
        serve_root: str, packages: dict[str, str], capsys, tmp_path: Path, monkeypatch) -> None:
    """`genai-ray serve` deploys the way `serve deploy` does; a second run only changes user_config.model_uri."""
    from ray import serve

    store, port = packages["store"], int(serve_root.rsplit(":", 1)[1])
    stop = threading.Event()
    seen: list[tuple[int, str | None]] = []

    def hammer(url: str, worker: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            r = post(url, json={"n": 2, "seed": worker * 10_000 + i})
            seen.append((r.status_code, r.headers.get("x-model")))

    try:
        code, out, err = cli_serve(store, "cond/v0001", port, capsys)
        assert code == 0, err
        url = out.split(" at ")[1].split()[0]
        assert url == f"{serve_root}/"
        base = url.rstrip("/")
        replica = httpx.get(f"{base}/v1/model").json()["serving"]["replica"]
        with cf.ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(hammer, base, w) for w in range(4)]
            try:
                while len(seen) < 8:
                    threading.Event().wait(0.05)
                code, _, err = cli_serve(store, "cond", port, capsys)  # NAME: the latest complete version
                assert code == 0, err
                before = len(seen)
                while len(seen) < before + 8:
                    threading.Event().wait(0.05)
            finally:
                stop.set()
                for w in workers:
                    w.result()
        assert {c for c, _ in seen} == {200}, [s for s in seen if s[0] != 200][:5]
        versions = [v for _, v in seen]
        assert versions[0] == "cond/v0001" and versions[-1] == "cond/v0002"
        after = httpx.get(f"{base}/v1/model").json()
        assert after["version"] == "v0002" and after["serving"]["replica"] == replica  # swapped in place

        # A swap to a corrupt package is refused in one line naming the URI; v0002 keeps serving.
        code, _, err = cli_serve(store, packages["corrupt"], port, capsys)
        assert code == 2 and f"model {packages['corrupt']} failed to load" in err
        assert "still serving cond/v0002" in err
        assert post(base, json={"n": 1}).headers["x-model"] == "cond/v0002"

        # A config holding only the key's hash, and no key in this shell: /healthz hides load details from an
        # anonymous caller, so the CLI says it could not check the load instead of reporting success.
        monkeypatch.delenv("GENAI_RAY_API_KEY", raising=False)
        hashed = tmp_path / "hashed.yaml"
        stored = hash_key("k")
        hashed.write_text(LOCAL_CONFIG.read_text().replace(
            "api_key_env: GENAI_RAY_API_KEY", f"api_key_env: GENAI_RAY_API_KEY\n      api_key_hash: '{stored}'"))
        code, _, err = cli_serve(store, "cond/v0001", port, capsys, config=str(hashed))
        assert code == 0 and "not checked that the replicas loaded" in err, err
        assert post(base, json={"n": 1}).status_code == 401
        assert post(base, json={"n": 1}, headers={"Authorization": "Bearer k"}).headers["x-model"] == "cond/v0001"
    finally:
        serve.delete("genai-ray")
    code, _, err = cli_serve(store, "nothing-here", port, capsys)
    assert code == 2 and "no exported model named 'nothing-here'" in err


@pytest.mark.slow  # two deploys through the CLI
def test_cli_with_a_key_keeps_the_deployed_hash_so_a_model_swap_stays_in_place(
        serve_root: str, packages: dict[str, str], capsys, monkeypatch) -> None:
    """A fresh salt on every `genai-ray serve` would change the app's args and replace every replica; the running
    app's hash is kept while it matches the key, so only user_config changes (a hot swap)."""
    from ray import serve
    from ray.serve.context import _get_global_client

    from genai_ray.serve.app import deployed_key_hash
    from genai_ray.serve.keyhash import verify

    store, port = packages["store"], int(serve_root.rsplit(":", 1)[1])
    key = "swap-test-key-5d2e"
    good = {"Authorization": f"Bearer {key}"}
    monkeypatch.setenv("GENAI_RAY_API_KEY", key)
    try:
        code, out, err = cli_serve(store, "cond/v0001", port, capsys)
        assert code == 0, err
        base = out.split(" at ")[1].split()[0].rstrip("/")
        before = httpx.get(f"{base}/v1/model", headers=good).json()["serving"]["replica"]
        stored = deployed_key_hash(_get_global_client(), "genai-ray")
        assert stored and stored.startswith("scrypt$") and verify(stored, key) and key not in stored
        code, _, err = cli_serve(store, "cond/v0002", port, capsys)
        assert code == 0, err
        assert deployed_key_hash(_get_global_client(), "genai-ray") == stored
        after = httpx.get(f"{base}/v1/model", headers=good).json()
        assert after["version"] == "v0002" and after["serving"]["replica"] == before  # swapped in place
        assert post(base, json={"n": 1}).status_code == 401
        monkeypatch.setenv("GENAI_RAY_API_KEY", "another-key")  # a new key gets a new hash
        code, _, err = cli_serve(store, "cond/v0002", port, capsys)
        assert code == 0, err
        assert deployed_key_hash(_get_global_client(), "genai-ray") != stored
    finally:
        serve.delete("genai-ray")
