"""The gallery page in headless Chromium, against the endpoint on Ray Serve."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tests.serve_helpers import COND1_METRICS, KEY, Chromium


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    """Skip (or fail, under CI) before the module deploys its app, not after."""
    Chromium.require()


def test_gallery_renders_and_generates_in_chromium(cond: str, tmp_path: Path) -> None:
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
