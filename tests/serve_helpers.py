"""Helpers for the serving tests: tiny real model packages, Serve on a free port, HTTP, headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from genai_ray import storage
from genai_ray.package.format import write_package

SHAPE = (8, 8, 1)
LATENT = 8
CLASSES = ["zero", "one", "two"]


def _generator(conditional: bool, seed: int) -> Any:
    """A tiny generator from plain Keras layers: z (+ int labels) -> tanh images."""
    import keras

    keras.utils.set_random_seed(seed)
    z = keras.Input((LATENT,), name="z")
    inputs: list[Any] = [z]
    h = z
    if conditional:
        labels = keras.Input((), dtype="int32", name="labels")
        inputs.append(labels)
        h = keras.layers.Concatenate()([z, keras.layers.Embedding(len(CLASSES), 4)(labels)])
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dense(int(np.prod(SHAPE)), activation="tanh")(h)
    out = keras.layers.Reshape(SHAPE)(h)
    return keras.Model(inputs if conditional else z, out)


def make_package(store: str, name: str, version: str, conditional: bool, seed: int = 0,
                 metrics: dict[str, float] | None = None) -> str:
    """Write a real package (generator.keras + model.json) and return its URI."""
    uri = storage.join(store, "models", name, version)
    meta = {
        "name": name, "version": version, "image_shape": SHAPE, "latent_dim": LATENT,
        "conditional": conditional, "class_names": CLASSES if conditional else None,
        "class_probs": [0.2, 0.3, 0.5] if conditional else None,
        "dataset_uri": "memory://test", "dataset_sha256": "0" * 64, "config": {},
        "metrics": metrics or {}, "created_at": datetime.now(UTC).isoformat(),
    }
    write_package(uri, _generator(conditional, seed), meta, None)
    return uri


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
