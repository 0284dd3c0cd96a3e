"""Promotion: the store's ``models/<name>/champion.json`` names the generator that Serve runs.

A candidate that scores worse than the current champion is refused unless forced. Every promotion is
recorded in ``models/<name>/promotions.json`` (who beat whom, with what score). The pointer is written
last, atomically, so a failed promotion never leaves a half-written champion.

Promotions of one model are serialised by the model's lock (``genai_ray.store_lock``, which exports hold too):
read champion, compare, append to the history and write the pointer happen as one step, so two promotions at
once lose no entry and the pointer names the history's last entry.
"""

from __future__ import annotations

import getpass
import json
from typing import Any

from genai_ray import storage
from genai_ray.data.manifest import now_iso
from genai_ray.errors import UserError
from genai_ray.names import check_name
from genai_ray.package.format import champion_uri, read_champion, read_meta
from genai_ray.store_lock import model_lock

HISTORY_FILE = "promotions.json"


def better(candidate: float, incumbent: float, mode: str) -> bool:
    return candidate < incumbent if mode == "min" else candidate > incumbent


def promote(store: str, name: str, package_uri: str, *, metric: str = "eval/fd", mode: str = "min",
            score: float | None = None, force: bool = False, campaign: str | None = None) -> dict[str, Any]:
    """Make ``package_uri`` the champion of ``name``. Returns the new pointer."""
    check_name(name, "model name")
    meta = read_meta(package_uri)  # refuses a package without a valid model.json
    if score is None:
        if metric not in meta.metrics:
            raise UserError(f"{package_uri} has no '{metric}' in model.json; run 'genai-ray evaluate' on it first")
        score = float(meta.metrics[metric])
    with model_lock(store, name):
        current = read_champion(store, name)
        if current and current.get("metric") == metric and not force and not better(score, current["score"], mode):
            raise UserError(
                f"refusing to promote {meta.name}/{meta.version} ({metric}={score:.4g}): the champion "
                f"{current.get('version')} scores {current['score']:.4g} ({'lower' if mode == 'min' else 'higher'} "
                "is better); pass --force to promote anyway"
            )
        pointer = {
            "uri": package_uri, "name": meta.name, "version": meta.version, "metric": metric, "mode": mode,
            "score": score, "promoted_at": now_iso(), "promoted_by": _who(), "campaign": campaign,
            "forced": bool(force and current is not None), "previous": current and
            {k: current.get(k) for k in ("uri", "version", "score")},
        }
        history_uri = storage.join(store, "models", name, HISTORY_FILE)
        history = json.loads(storage.read_bytes(history_uri)) if storage.exists(history_uri) else []
        storage.write_bytes(history_uri, json.dumps([*history, pointer], indent=2).encode())
        storage.write_bytes(champion_uri(store, name), json.dumps(pointer, indent=2).encode())
    return pointer


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
