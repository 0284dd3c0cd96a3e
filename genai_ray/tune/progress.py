"""Campaign progress a person can follow: one line per trial event, with its params, score and the counts.

Tune's own status tables (``verbose=1``) reprint every trial every few seconds; the campaign runs with
``verbose=0`` and this callback prints instead, e.g.::

    [0 done / 2 running / 14 pending] start  a1b2c3  g_lr=3.2e-04 d_lr=1.1e-03 latent_dim=16
    [0 done / 2 running / 14 pending] report a1b2c3  epoch 2/8  eval/fd 3.412 (best 3.412)
    [1 done / 2 running / 13 pending] stop   a1b2c3  at epoch 2/8 by the scheduler  best eval/fd 3.412
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import Callback

from genai_ray.train.loop import STARTUP

DONE, RUNNING = ("TERMINATED", "ERROR"), ("RUNNING",)


def short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if value and (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:.4g}"
    return str(value)


class CampaignProgress(Callback):
    """Prints trial events; ``total`` is the campaign's number of trials (Tune creates them lazily)."""

    def __init__(self, params: list[str], total: int, max_epochs: int, metric: str, mode: str = "min") -> None:
        self.params, self.total, self.max_epochs = params, total, max_epochs
        self.metric, self.sign = metric, 1.0 if mode == "min" else -1.0
        self.best: dict[str, float] = {}
        self.first: set[str] = set()  # trials (re)started whose first report is still to come
        self.started = time.monotonic()

    def counts(self, trials, ending=None) -> str:
        status = {t.trial_id: t.status for t in trials}
        if ending is not None:  # Tune calls back before it marks the trial done
            status[ending.trial_id] = "TERMINATED"
        done = sum(s in DONE for s in status.values())
        running = sum(s in RUNNING for s in status.values())
        return f"[{done} done / {running} running / {max(self.total, len(trials)) - done - running} pending]"

    def say(self, trials, event: str, trial, text: str) -> None:
        elapsed = time.monotonic() - self.started
        counts = self.counts(trials, trial if event in ("stop", "finish", "error") else None)
        print(f"{elapsed:6.0f} s {counts} {event:<6} {trial.trial_id}  {text}", flush=True)

    def describe(self, trial) -> str:
        return " ".join(f"{key.split('.')[-1]}={short(trial.config.get(key))}" for key in self.params)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.first.add(trial.trial_id)
        resumed = trial.checkpoint is not None
        self.say(trials, "start", trial, self.describe(trial) + ("  (from a checkpoint)" if resumed else ""))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        score = result.get(self.metric)
        if not isinstance(score, int | float) or not math.isfinite(score):
            return
        best = self.best.get(trial.trial_id)
        if best is None or self.sign * score < self.sign * best:
            self.best[trial.trial_id] = best = score
        startup = [result[k] for k in STARTUP if isinstance(result.get(k), int | float)]
        self.say(trials, "report", trial, f"epoch {result.get('epoch')}/{self.max_epochs}  "
                                          f"{self.metric} {score:.4f} (best {best:.4f})"
                                          + (f"  start-up {sum(startup):.1f} s" if trial.trial_id in self.first
                                             and startup else ""))
        self.first.discard(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        epoch = (trial.last_result or {}).get("epoch", 0)
        best = self.best.get(trial.trial_id)
        score = f"best {self.metric} {best:.4f}" if best is not None else f"no {self.metric}"
        if epoch and epoch < self.max_epochs:
            self.say(trials, "stop", trial, f"at epoch {epoch}/{self.max_epochs} by the scheduler  {score}")
        else:
            self.say(trials, "finish", trial, f"{epoch} epochs  {score}")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.say(trials, "error", trial, f"see {trial.local_path or trial.path}/error.txt")
