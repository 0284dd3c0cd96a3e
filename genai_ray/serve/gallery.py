"""The gallery page at ``GET /``: one self-contained HTML file (no external assets).

It shows samples (a row per class for conditional models) and a form to generate more through
``/v1/generate``. ``#status[data-state]`` turns ``ready`` when a request has finished, so headless
browsers and tests can wait on it.
"""

from __future__ import annotations

import json

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genai-ray gallery</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
form{display:flex;gap:.8rem;flex-wrap:wrap;align-items:end;margin:1rem 0}
label{display:flex;flex-direction:column;font-size:.8rem}
input,select,button{font-size:1rem;padding:.2rem .4rem}
section{margin:.6rem 0}h2{font-size:.9rem;margin:.2rem 0;color:#555}
figure{display:inline-block;margin:2px;text-align:center;font-size:.7rem;color:#666}
figure img{width:64px;height:64px;image-rendering:pixelated;display:block;background:#000}
#status[data-state=error]{color:#b00}
</style></head><body>
<h1>genai-ray gallery</h1>
<p id="model">loading model...</p>
<form id="controls">
<label>images<input id="n" type="number" min="1" value="8"></label>
<label>class<select id="label"><option value="">any</option></select></label>
<label>seed<input id="seed" type="number" min="0" placeholder="random"></label>
<label>API key<input id="key" type="password" autocomplete="off" placeholder="if required"></label>
<button id="generate" type="submit">Generate</button>
</form>
<p id="status" data-state="busy" data-images="0"></p>
<div id="gallery"></div>
<script>
const BASE = __BASE__;
const $ = (id) => document.getElementById(id);
let classes = null;

async function api(path, body) {
  const headers = {"Content-Type": "application/json"};
  const key = $("key").value;
  if (key) headers["Authorization"] = "Bearer " + key;
  const init = body ? {method: "POST", headers, body: JSON.stringify(body)} : {headers};
  const r = await fetch(BASE + path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(r.status + ": " + (data.detail || r.statusText));
  return data;
}

function show(title, data) {
  const section = document.createElement("section");
  const h = document.createElement("h2");
  h.textContent = title + " (" + data.model.name + "/" + data.model.version + ", seeds " +
    data.seeds[0] + ".." + data.seeds[data.seeds.length - 1] + ")";
  section.appendChild(h);
  for (const im of data.images) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + im.png;
    img.dataset.seed = im.seed;
    if (im.label !== null) img.dataset.label = im.label;
    const cap = document.createElement("figcaption");
    cap.textContent = "seed " + im.seed + (im.label !== null && classes ? " \\u00b7 " + classes[im.label] : "");
    fig.append(img, cap);
    section.appendChild(fig);
  }
  $("gallery").prepend(section);
  const st = $("status");
  st.dataset.images = String(Number(st.dataset.images) + data.images.length);
}

async function run(task) {
  const st = $("status");
  st.dataset.state = "busy"; st.textContent = "generating...";
  try { await task(); st.dataset.state = "ready"; st.textContent = ""; }
  catch (e) { st.dataset.state = "error"; st.textContent = String(e.message || e); }
}

async function init() {
  const m = await api("v1/model");
  classes = m.conditional ? m.class_names : null;
  const metrics = Object.entries(m.metrics || {}).map(([k, v]) => k + "=" + Number(v).toFixed(3)).join(", ");
  $("model").textContent = m.name + "/" + m.version + (metrics ? " \\u2014 " + metrics : "");
  if (classes) {
    classes.forEach((c, i) => { const o = document.createElement("option"); o.value = i; o.textContent = c;
                                $("label").appendChild(o); });
    const rows = await Promise.all(classes.map((c, i) =>
      api("v1/generate", {n: 6, seed: 0, label: i, format: "json"})));
    rows.reverse().forEach((d, j) => show("class " + classes[classes.length - 1 - j], d));
  } else {
    show("samples", await api("v1/generate", {n: 16, seed: 0, format: "json"}));
  }
}

$("controls").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const body = {n: Number($("n").value) || 1, format: "json"};
  if ($("label").value !== "") body.label = Number($("label").value);
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  run(async () => show(body.label !== undefined ? "class " + classes[body.label] : "generated",
                       await api("v1/generate", body)));
});
run(init);
</script></body></html>
"""


def page(base: str) -> str:
    """The gallery HTML; ``base`` is the app's route prefix, so it works under any prefix."""
    base = base.rstrip("/") + "/"
    return _PAGE.replace("__BASE__", json.dumps(base).replace("<", "\\u003c"))
