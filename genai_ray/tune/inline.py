"""Single-worker trials that train inside their own Tune actor: no Train controller, no worker group.

Ray's guidance for single-process trials is to train in the trial's actor; a Train run per trial paid its
controller, worker group and TensorFlow import before every first step (docs/ray-notes.md). An inline trial
calls the same loop functions as Ray Train's worker (``train/loop.py``); only the glue differs: the split is
read once per actor with ``Dataset.read_numpy`` and held in memory, and reports and checkpoints go to
``ray.tune.report``.

Tune reuses actors between trials (``reuse_actors=True``; a function trainable's reset waits for the previous
trial's thread, then calls the function again). So TensorFlow is imported, and the dataset read, once per
actor, while everything a trial owns is rebuilt: Keras' global state is cleared, and a fresh ``GanTrainer``
(weights, optimiser slots, step counters) is seeded from the trial's config. TensorFlow's thread pools can
only be set once per process; the campaign refuses a space whose trials would need different ones
(``check_thread_settings``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import keras
import numpy as np
import ray.tune

from genai_ray.config import Config
from genai_ray.data.reader import Dataset
from genai_ray.train.loop import MemoryInput, RunPlan, configure_tensorflow, local_folder, make_strategy, set_up, train

# Tune waits this long (its default: 2 s) for the previous trial's thread before reusing an actor; a trial
# stopped at a report ends at once, but one told to stop mid-epoch (evaluation included) needs longer.
RESET_WAIT_ENV, RESET_WAIT_S = "TUNE_FUNCTION_THREAD_TIMEOUT_S", "60"
_ARRAYS: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # dataset URI -> its training split, read once per actor


def training_arrays(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    if dataset.uri not in _ARRAYS:
        _ARRAYS.clear()
        _ARRAYS[dataset.uri] = dataset.read_numpy("train")
    return _ARRAYS[dataset.uri]


def quiet_trial_logs() -> None:
    """The campaign prints each report; Ray logs every checkpoint it persists and restores at INFO."""
    for name in ("ray.train", "ray.tune", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fresh_process_state(cfg: Config) -> None:
    """What one trial must not inherit from the last one in this actor."""
    configure_tensorflow(cfg)  # the same settings every time (check_thread_settings), so a no-op after the first
    keras.backend.clear_session()  # the previous trial's models, layer names and graph state


def report_to_tune(metrics: dict[str, Any], folder: str | None) -> None:
    """The loop's sink for an inline trial: Tune copies the checkpoint folder into the trial's storage."""
    checkpoint = ray.tune.Checkpoint.from_directory(folder) if folder else None
    ray.tune.report({k: v for k, v in metrics.items() if scalar(v)}, checkpoint=checkpoint)


def run_inline(cfg: Config, plan: RunPlan, dataset: Dataset, checkpoint) -> None:
    """Train one trial (or its continuation from ``checkpoint``: a PBT winner's or its own) in this process."""
    os.environ.setdefault(RESET_WAIT_ENV, RESET_WAIT_S)
    entered = time.time()
    quiet_trial_logs()
    fresh_process_state(cfg)
    arrays = training_arrays(dataset)
    with local_folder(checkpoint) as folder:
        # From a checkpoint the config's learning rates win: after a PBT exploit they are the perturbed ones, and
        # on resuming its own checkpoint a trial's config holds the rates it already ran at.
        session = set_up(cfg, plan, make_strategy(1), 0, folder, exploit=checkpoint is not None)
    session.startup["startup/setup_s"] = time.time() - entered  # TensorFlow (first trial only), data, model
    train(session, MemoryInput(arrays, cfg.train.seed, 0), report_to_tune, progress=False)


def scalar(value: Any) -> bool:
    """What Tune can record and compare: finite numbers."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
