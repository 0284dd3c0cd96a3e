"""``make demo``: the whole service on the embedded default, end to end, in a few minutes on 2 cores.

Prepare the bundled digits into the local store, train the default config on 2 Ray Train workers, export
the generator, score it against the KDE baseline and the real floor, write a sample grid, then serve it on
Ray Serve, send a few HTTP requests and save what came back. TensorFlow's and Ray's start-up noise is hidden
(``--verbose`` shows it); the demo ends with a summary of where everything is and how the GAN scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

from genai_ray import stops, storage
from genai_ray.config import load_config
from genai_ray.data.prepare import prepare
from genai_ray.data.reader import open_dataset
from genai_ray.data.sources import open_source
from genai_ray.errors import UserError
from genai_ray.evaluation.baselines import kde_sampler, real_floor
from genai_ray.evaluation.evaluate import evaluate, evaluate_package
from genai_ray.images import grid_png
from genai_ray.package.format import load_package
from genai_ray.quiet import install as install_quiet
from genai_ray.ray_runtime import free_port
from genai_ray.serve.app import load_serve_file, start
from genai_ray.tables import format_table

# TensorFlow and Ray are imported inside the functions that need them: main() first quiets their start-up logs
# (genai_ray.quiet), which must happen before they load.

RUN_NAME = "digits-demo"
# The summary's scores, tables.KEY_METRICS: (metric, is higher better?). --verbose prints every metric.
SUMMARY = [("eval/fd", False), ("eval/precision", True), ("eval/recall", True), ("eval/coverage", True),
           ("eval/memorisation", False)]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def post_json(url: str, body: dict) -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read(), dict(response.headers)


def summary(package_uri: str, grid: Path, served: Path, url: str, columns: dict[str, dict[str, float]],
            seconds: float, keep_serving: bool) -> str:
    """Where the model, the grids and the endpoint are, and the headline scores against the baselines."""
    ours, kde = columns["genai-ray"], columns["kde"]
    beats = [m.split("/", 1)[1] for m, higher in SUMMARY
             if m in ours and m in kde and (ours[m] > kde[m] if higher else ours[m] < kde[m])]
    headline = {name: {m: values[m] for m, _ in SUMMARY if m in values} for name, values in columns.items()}
    endpoint = url if keep_serving else (f"{url} (stops with the demo; keep one up with: genai-ray serve --model "
                                         f"{package_uri})")
    return "\n".join([
        f"model package  {package_uri}",
        f"sample grid    {grid.resolve()}",
        f"served grid    {served.resolve()}",
        f"endpoint       {endpoint}",
        "",
        format_table(headline),
        "",
        f"genai-ray beats the KDE baseline on {', '.join(beats) or 'none'} of {len(SUMMARY)} headline metrics "
        f"(FD and memorisation lower is better, the others higher); the demo took {seconds / 60:.1f} min",
    ])


def run(out_dir: Path, workers: int, epochs: int | None, keep_serving: bool, verbose: bool = False) -> None:
    from genai_ray.train.run import fit, length_trained, runs_uri

    demo_started = time.monotonic()
    store = storage.default_store()
    out_dir.mkdir(parents=True, exist_ok=True)
    step(f"store: {store}")

    step("prepare the bundled scikit-learn digits")
    data_uri = storage.join(store, "datasets", "digits")
    manifest = prepare(open_source("digits"), data_uri, name="digits", overwrite=True)
    print(f"{manifest.train_count} train / {manifest.holdout_count} holdout images -> {data_uri}")

    step(f"train the default config on {workers} Ray Train workers")
    overrides: dict = {"train": {"workers": workers}}
    if epochs:
        overrides["train"]["epochs"] = epochs
    cfg = load_config(preset="default", overrides=overrides)
    storage.delete(storage.join(runs_uri(store), RUN_NAME))  # the demo's own run: train afresh each time
    started = time.monotonic()
    result = fit(cfg, data_uri, name=RUN_NAME, store=store)
    length = length_trained(result, counts_epochs=bool(cfg.train.epochs))
    print(f"trained {length} in {time.monotonic() - started:.0f} s -> "
          f"{result.package_uri}")

    step("evaluate on the held-out digits: the GAN vs the KDE baseline and the real floor")
    ds = open_dataset(data_uri)
    n = cfg.eval.n_samples
    columns = {
        "real floor": evaluate(real_floor(ds, n), ds, n=n, cfg=cfg.eval),
        "kde": evaluate(kde_sampler(ds), ds, n=n, cfg=cfg.eval),
        "genai-ray": evaluate_package(result.package_uri, ds, cfg.eval),
    }
    if verbose:
        print(format_table(columns))
    else:
        print(f"{len(columns['genai-ray'])} metrics each; the key ones are in the summary below (--verbose: all)")

    step("generate a sample grid")
    package = load_package(result.package_uri)
    images, seeds, _ = package.sample(64, seed=0)
    grid_path = out_dir / "samples.png"
    grid_path.write_bytes(grid_png(images, {"model": f"{package.meta.name}/{package.meta.version}"}))
    print(f"grid: {grid_path.resolve()}")

    step("serve it on Ray Serve and send a few requests")
    serve_file = load_serve_file(Path(__file__).resolve().parent.parent / "serve_configs" / "local.yaml")
    _, url, _ = start(result.package_uri, serve_file, host="127.0.0.1", port=free_port(), address=None, store=store)
    body, headers = post_json(url + "v1/generate", {"n": 16, "seed": 7, "format": "png"})
    served = out_dir / "served.png"
    served.write_bytes(body)
    for label in range(3):
        post_json(url + "v1/generate", {"n": 4, "seed": label, "label": label, "format": "json"})
    with urllib.request.urlopen(url + "v1/model", timeout=30) as response:
        version = json.loads(response.read()).get("version")
    print(f"endpoint: {url}  (gallery page at {url}, API at {url}v1/generate, docs at {url}docs)")
    print(f"served model {version}; a 16-image grid from POST /v1/generate: {served.resolve()}")
    step("summary")
    print(summary(result.package_uri, grid_path, served, url, columns, time.monotonic() - demo_started, keep_serving),
          flush=True)
    if keep_serving:
        stops.set_hint(f"{url} is down")
        print("serving until Ctrl-C", flush=True)
        while True:  # the main thread takes Ctrl-C (genai_ray/stops.py)
            time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genai_ray.demo", description=__doc__)
    parser.add_argument("--out", default="demo-out", help="Folder for the PNGs (default: demo-out).")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (default: 2).")
    parser.add_argument("--epochs", type=int, help="Override the default config's epochs.")
    parser.add_argument("--keep-serving", action="store_true", help="Keep the endpoint up until Ctrl-C.")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="Print every metric, and TensorFlow's and Ray's start-up logs and warnings, hidden by "
                             "default.")
    args = parser.parse_args(argv)
    quiet = install_quiet(args.verbose)  # before TensorFlow or Ray load, here and in Ray's workers
    try:
        stops.run(lambda: run(Path(args.out), args.workers, args.epochs, args.keep_serving, args.verbose) or 0,
                  args.verbose)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if quiet is not None:
            quiet.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
