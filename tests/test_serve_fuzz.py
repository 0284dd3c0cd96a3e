"""Fuzzed requests against the endpoint over real HTTP on Ray Serve."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve_helpers import KEY

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
