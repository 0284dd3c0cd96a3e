"""Helpers for the serving tests: tiny real model packages, apps on the session's Serve, HTTP, headless Chromium.
The fixtures that deploy them (``serve_root``, ``packages``, ``cond``, ``locked``) are in ``conftest.py``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from genai_ray.config import ServeConfig
from tests.helpers import run, toy_package

KEY_ENV = "GENAI_RAY_TEST_SERVE_KEY"
KEY = "s3cret-test-key-7f1c9a"
SMALL = {"ray_actor_options": {"num_cpus": 0.5}}
CLASSES = ["zero", "one", "two"]
# What an evaluated package records: headline scores, the KDE baseline's, and many more (class shares...).
COND1_METRICS = {"eval/fd": 1.5, "eval/precision": 0.81, "eval/recall": 0.42, "eval/memorisation": 0.004,
                 "baseline/kde/eval/fd": 1.05, "baseline/kde/eval/recall": 0.76,
                 **{f"eval/class_share/{i}": 0.1 for i in range(10)}, "eval/coverage": 0.7}
LOCAL_CONFIG = Path(__file__).resolve().parents[1] / "serve_configs" / "local.yaml"


def make_package(store: str, name: str, version: str, conditional: bool, seed: int = 0,
                 metrics: dict[str, float] | None = None) -> str:
    """The toy package (``helpers.toy_package``) with three named classes drawn 20/30/50%; returns its URI."""
    return toy_package(store, name, version, conditional=conditional, class_names=CLASSES,
                       class_probs=[0.2, 0.3, 0.5], seed=seed, metrics=metrics)


def deploy(name: str, cfg: ServeConfig, **options: Any) -> None:
    """Run the app at ``/<name>`` on the session's Serve, with half a CPU per replica unless ``options`` say."""
    from ray import serve

    from genai_ray.serve.app import application

    serve.run(application(cfg, {**SMALL, **options}), name=name, route_prefix=f"/{name}")


def post(url: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/generate", timeout=120, **kw)


def npy(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


def replica_states(app: str) -> dict[str, int]:
    from ray import serve

    return {str(k): v for k, v in serve.status().applications[app].deployments["Generator"].replica_states.items()}


def wait_replicas(app: str, running: int, timeout_s: float = 180) -> float:
    """Poll Serve until ``running`` replicas run and none starts or stops; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        states = replica_states(app)
        if states.get("RUNNING", 0) == running and sum(states.values()) == running:
            return time.monotonic() - t0
        threading.Event().wait(0.2)
    raise AssertionError(f"{app} never settled at {running} replica(s): {replica_states(app)}")


def cli_serve(store: str, model: str, port: int, capsys, config: str = str(LOCAL_CONFIG)) -> tuple[int, str, str]:
    """``genai-ray serve --no-blocking`` in this process: (exit code, stdout, stderr)."""
    return run(capsys, "--store", store, "serve", "--model", model, "--config", config, "--port", str(port),
               "--no-blocking")


class Chromium:
    """Headless Chromium driven over the DevTools protocol (websockets), one page."""

    BINARY = "/usr/bin/chromium"

    @classmethod
    def available(cls) -> bool:
        return os.access(cls.BINARY, os.X_OK) or shutil.which("chromium") is not None

    @classmethod
    def require(cls) -> None:
        """Skip a browser test when Chromium is missing, but fail it under ``CI=true``: a CI run must not go
        green without the browser test (.ci/run installs Chromium)."""
        if cls.available():
            return
        reason = "chromium is not installed (Debian package 'chromium'); the gallery test needs it"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)

    def __enter__(self) -> Chromium:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        exe = self.BINARY if os.access(self.BINARY, os.X_OK) else shutil.which("chromium")
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self._id = 0
        return self

    def send(self, method: str, **params: Any) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                return msg["result"]

    def eval(self, expression: str) -> Any:
        """Evaluate JS (promises awaited) and return its JSON value."""
        res = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in res, res["exceptionDetails"]
        return res["result"].get("value")

    def wait_for(self, condition: str, timeout_ms: int = 60_000) -> Any:
        """Poll a JS condition inside the page until it is truthy; returns its value."""
        return self.eval(f"""new Promise((ok, fail) => {{
            const t0 = Date.now();
            const tick = () => {{ let v; try {{ v = ({condition}); }} catch (e) {{ v = null; }}
              if (v) ok(v);
              else if (Date.now() - t0 > {timeout_ms}) fail(new Error("timeout: " + {json.dumps(condition)}));
              else setTimeout(tick, 50); }};
            tick(); }})""")

    def __exit__(self, *exc: Any) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
