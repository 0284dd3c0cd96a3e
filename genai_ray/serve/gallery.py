"""The gallery page at ``GET /``: one self-contained HTML file (no external assets).

It shows the model and its key scores in a small table (FD, precision, recall, memorisation, with the KDE
baseline's where model.json records them), every metric behind an "all metrics" disclosure, samples (a row per
class for conditional models) and a form to generate more through ``/v1/generate``. ``#status[data-state]``
turns ``ready`` when a request has finished, so headless browsers and tests can wait on it. With an API key set,
``/v1/model`` answers 401 until the key is entered: the page says so (``data-state="key"``) and the form's button
loads the model with the key typed in.
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
#model[data-state=key]{color:#b00;font-weight:600}
#header{display:flex;gap:2rem;align-items:flex-start;flex-wrap:wrap}
table{border-collapse:collapse;font-size:.85rem}
th,td{padding:.15rem .6rem;text-align:right;border-bottom:1px solid #ddd}
th:first-child,td:first-child{text-align:left}
#scores td:last-child{text-align:left;color:#888;font-size:.75rem}
thead th{color:#555;font-weight:600}
details{font-size:.8rem;color:#444}
details table{margin-top:.3rem;font-size:.75rem}
</style></head><body>
<h1>genai-ray gallery</h1>
<div id="header">
<div><p id="model">loading model...</p>
<details id="all-metrics"><summary>all metrics</summary><table><tbody></tbody></table></details></div>
<table id="scores" hidden><thead><tr><th>score</th><th>this model</th><th>KDE baseline</th>
<th></th></tr></thead><tbody></tbody></table>
</div>
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
let loaded = false;  // /v1/model answered: the button generates; until then it (re)loads the model

async function api(path, body) {
  const headers = {"Content-Type": "application/json"};
  const key = $("key").value;
  if (key) headers["Authorization"] = "Bearer " + key;
  const init = body ? {method: "POST", headers, body: JSON.stringify(body)} : {headers};
  const r = await fetch(BASE + path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(r.status + ": " + (data.detail || r.statusText));
    err.status = r.status;
    throw err;
  }
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
  catch (e) {
    if (e.status === 401 && !loaded) { askForKey(); st.dataset.state = "key"; st.textContent = ""; }
    else { st.dataset.state = "error"; st.textContent = String(e.message || e); }
  }
}

// With a key set, the model's details need it too: say so instead of staying on "loading model...".
function askForKey() {
  const tried = $("key").value !== "";
  $("model").textContent = tried ? "That API key was refused: check it and press Load model."
    : "This endpoint needs an API key to load the model: enter it in the API key field and press Load model.";
  $("model").dataset.state = "key";
  $("generate").textContent = "Load model";
  $("key").placeholder = "required";
  $("key").focus();
}

// The headline scores, the KDE baseline's beside them where model.json records one (a key naming "kde" that ends
// like the score's, e.g. baseline/kde/eval/fd); everything else stays behind the "all metrics" disclosure.
const KEY_SCORES = [["FD", "eval/fd", "lower is better"], ["precision", "eval/precision", "higher is better"],
                    ["recall", "eval/recall", "higher is better"],
                    ["memorisation", "eval/memorisation", "share of near-copies; lower is better"]];

function cell(row, text, tag = "td") {
  const c = document.createElement(tag);
  c.textContent = text;
  row.appendChild(c);
  return c;
}

function showScores(metrics) {
  const fmt = (v) => v === undefined ? "\u2013" : Number(v).toFixed(3);
  const body = $("scores").querySelector("tbody");
  for (const [label, key, hint] of KEY_SCORES) {
    if (!(key in metrics)) continue;
    const tail = key.split("/").pop();
    const kde = Object.keys(metrics).find((k) => k !== key && /kde/i.test(k) && k.split("/").pop() === tail);
    const row = document.createElement("tr");
    row.dataset.metric = key;
    cell(row, label, "th");
    cell(row, fmt(metrics[key]));
    cell(row, fmt(kde && metrics[kde]));
    cell(row, hint);
    body.appendChild(row);
  }
  $("scores").hidden = body.children.length === 0;
  const all = $("all-metrics").querySelector("tbody");
  for (const [k, v] of Object.entries(metrics).sort()) {
    const row = document.createElement("tr");
    cell(row, k);
    cell(row, fmt(v));
    all.appendChild(row);
  }
  $("all-metrics").hidden = all.children.length === 0;
  $("all-metrics").querySelector("summary").textContent = "all metrics (" + all.children.length + ")";
}

async function init() {
  $("model").textContent = "loading model...";
  const m = await api("v1/model");
  loaded = true;
  $("model").dataset.state = "loaded";
  $("generate").textContent = "Generate";
  classes = m.conditional ? m.class_names : null;
  $("model").textContent = "model " + m.name + "/" + m.version;
  showScores(m.metrics || {});
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
  if (!loaded) { run(init); return; }
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
