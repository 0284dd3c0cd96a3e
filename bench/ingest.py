"""``python -m bench.ingest [--count 20000] [--small 2000]``: ``data prepare`` of a folder of JPEGs, single process
vs Ray Data on 1 and 2 CPUs, from a local folder and from a moto S3 bucket.

The images are ``shapes`` rendered at mixed sizes (64 to 512 px a side, non-square) and saved as JPEG; each run
prepares them at 64x64 with ``--crop``. The reference is the single-process loop that came before the pipeline
(``folder_source``'s full decode and resize, one file after another), reading through ``genai_ray.storage`` so
that it reads S3 too. A second single-process row decodes as the pipeline does (``decode_image``, which decodes
JPEGs at a reduced scale), so the table separates what the decoder gains from what parallelism gains.
Every run is its own process tree; the parent samples every process of the tree (the driver, and for Ray its
daemons and workers) from /proc and reports each one's peak RSS, at ``--small`` and at ``--count`` images.
Targets: Ray Data on 2 CPUs >= 1.6x the single process's images/s; peak RSS within 1.2x between the sizes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import machine, moto_s3, table
from bench.process_cpu import short_name

CHILD = """
import json, sys, time
mode, cpus, source, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
shard_rows = int(sys.argv[5]) or None
if mode in ("single", "reduced"):
    from bench.ingest import reference_source
    from genai_ray.data.prepare import prepare
    start = time.monotonic()
    prepare(reference_source(source, 64, reduced=mode == "reduced"), out, name="bench", progress=False,
            shard_rows=shard_rows)
    setup = 0.0
else:
    import ray
    from genai_ray.data.ingest import open_store_source, prepare_store
    t0 = time.monotonic()
    for attempt in range(3):  # a loaded machine can miss Ray's 30 s start-up deadline
        try:
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
            break
        except Exception:
            if attempt == 2:
                raise
    setup = time.monotonic() - t0
    start = time.monotonic()
    prepare_store(open_store_source(source, image_size=64, crop=True), out, name="bench", progress=False,
                  shard_rows=shard_rows)
print("RESULT " + json.dumps({"seconds": time.monotonic() - start, "setup": setup}), flush=True)
"""


def reference_source(uri: str, size: int, reduced: bool = False):
    """The single-process folder loop, one file after another, reading through the storage layer; ``reduced``
    decodes with the pipeline's ``decode_image`` instead of a full decode and resize."""
    from genai_ray import storage
    from genai_ray.data.decode import DecodeSpec, decode_image
    from genai_ray.data.sources import Chunk, Source, _resize, chunk_rows

    _, base = storage.resolve(uri)
    prefix = "s3://" if storage.is_s3(uri) else ""
    files = sorted(prefix + i.path for i in storage.walk(uri) if i.path.endswith(".jpg"))
    step = chunk_rows((size, size, 3))
    spec = DecodeSpec(size, size, "RGB", size, crop=True, seed=0, holdout=0.1)

    def chunks():
        for i in range(0, len(files), step):
            batch = []
            for f in files[i : i + step]:
                if reduced:
                    batch.append(decode_image(storage.read_bytes(f), spec))
                    continue
                with Image.open(io.BytesIO(storage.read_bytes(f))) as im:
                    arr = np.asarray(im.convert("RGB"))
                batch.append(_resize(arr[None], size, crop=True)[0])
            yield Chunk(np.stack(batch), np.full(len(batch), -1, np.int64))

    return Source("folder", {"kind": "folder", "path": uri}, len(files), (size, size, 3), None, chunks)


def make_jpegs(count: int, folder: Path, seed: int = 0) -> None:
    """``count`` shapes at mixed sizes (each side 64..512 px), as JPEG files in ``folder``."""
    from genai_ray.data.sources import render_shapes

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for start in range(0, count, 8):  # 8 images share a rendering size, so rendering stays cheap
        n = min(8, count - start)
        h, w = rng.integers(64, 513, 2)
        chunk = render_shapes(n, int(max(h, w)), seed, start)
        for i, img in enumerate(chunk.images):
            Image.fromarray(img[: int(h), : int(w)]).save(folder / f"{start + i:07d}.jpg", quality=90)


def upload(folder: Path, uri: str) -> None:
    import logging
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: client.put_object(Bucket=bucket, Key=f"{prefix}/{p.name}", Body=p.read_bytes()),
                      sorted(folder.iterdir())))


def tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def peak_rss(pid: int) -> tuple[str, int] | None:
    """(short name, VmHWM in KiB): the process's peak resident set so far."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return short_name(command) if command else "?", hwm


def run(mode: str, cpus: int, source: str, out: str, shard_rows: int = 0) -> dict:
    """One prepare in its own process tree; its time and each process's peak RSS (MiB), by process name."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    peaks: dict[int, tuple[str, int]] = {}
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(cpus), source, out, str(shard_rows)],
                                 env=env, stdout=subprocess.PIPE, stderr=log, text=True)

        def sample() -> None:
            while child.poll() is None:
                for pid in tree(child.pid):
                    got = peak_rss(pid)
                    if got:
                        peaks[pid] = got
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, _ = child.communicate()
        sampler.join()
        if child.returncode != 0 or "RESULT " not in stdout:
            log.seek(0)
            raise RuntimeError(f"{mode} on {cpus} CPUs failed: {stdout[-1000:]} {log.read()[-3000:]}")
    result = json.loads(stdout.split("RESULT ", 1)[1])
    by_name: dict[str, int] = {}
    for name, kib in peaks.values():
        by_name[name] = max(by_name.get(name, 0), kib)
    result["rss_mib"] = {k: round(v / 1024) for k, v in sorted(by_name.items())}
    return result


CONFIGS = [("single", 1), ("reduced", 1), ("ray", 1), ("ray", 2)]
LABELS = {"single": "single process, full decode (the reference)", "reduced": "single process, reduced decode"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="images in the large run")
    parser.add_argument("--small", type=int, default=2_000, help="images in the small run (peak RSS only)")
    parser.add_argument("--shard-size", type=int, default=0,
                        help="images per shard (default: genai-ray's, 5,461 at 64x64x3); a small count fills no "
                             "shard, so pass a smaller shard to see the steady state's memory")
    parser.add_argument("--where", choices=["local", "s3", "both"], default="both", help="which sources to run")
    args = parser.parse_args()
    wheres = ["local", "s3"] if args.where == "both" else [args.where]
    results: dict[tuple, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, moto_s3() as bucket:
        for count in (args.small, args.count):
            folder = Path(tmp) / f"jpegs-{count}"
            make_jpegs(count, folder)
            if "s3" in wheres:
                upload(folder, f"{bucket}/jpegs-{count}")
            for where, source in (("local", str(folder)), ("s3", f"{bucket}/jpegs-{count}")):
                if where not in wheres:
                    continue
                for mode, cpus in CONFIGS:
                    out = f"{tmp}/out-{count}-{where}-{mode}-{cpus}"
                    results[(count, where, mode, cpus)] = run(mode, cpus, source, out, args.shard_size)
                    print(count, where, mode, cpus, json.dumps(results[(count, where, mode, cpus)]), flush=True)
    print(f"\ningest: data prepare of mixed-size JPEGs at 64x64 --crop; machine: {machine()}")
    rows = []
    for where in wheres:
        base = args.count / results[(args.count, where, "single", 1)]["seconds"]
        for mode, cpus in CONFIGS:
            r = results[(args.count, where, mode, cpus)]
            rate = args.count / r["seconds"]
            rows.append([where, LABELS.get(mode, f"Ray Data, {cpus} CPU"),
                         f"{rate:,.0f}", f"{rate / base:.2f}x", f"{r['setup']:.1f}"])
    print(table(["source", "path", "images/s", "vs single", "Ray start (s)"], rows))
    rss_rows = []
    for where in wheres:
        for mode, cpus in CONFIGS:
            small = results[(args.small, where, mode, cpus)]["rss_mib"]
            large = results[(args.count, where, mode, cpus)]["rss_mib"]
            for name in sorted(set(small) | set(large)):
                a, b = small.get(name, 0), large.get(name, 0)
                rss_rows.append([where, f"{mode} {cpus}", name, a, b, f"{b / a:.2f}x" if a else "-"])
    print(table(["source", "run", "process", f"peak RSS MiB @ {args.small:,}", f"@ {args.count:,}", "ratio"],
                rss_rows))


if __name__ == "__main__":
    main()
