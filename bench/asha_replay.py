"""``python -m bench.asha_replay RESULTS.json``: how much of ASHA's time to target is the trial order.

Time to target counts to the first report at or below the target, so it depends on where the best trial
falls in the campaign: when it starts first, no scheduler can be faster than FIFO; when it starts last, ASHA
has stopped most trials before it. ``bench.search_efficiency`` measures three orders (three search seeds);
this replays many. It reads the FIFO campaigns that ``search_efficiency --out`` saved (every trial's full
curve of (seconds since its start, epoch, fd) reports, which ASHA's trials repeat exactly: same configs,
same seeds), draws campaigns of ``--samples`` trials from the pooled trials, and replays each with ``--slots``
trials at a time, once as FIFO and once with Ray's own ASHA bracket (``_Bracket`` from
``ray.tune.schedulers.async_hyperband``, the class ``ASHAScheduler`` decides with) at the space's grace period
and reduction factor. A trial stopped at a report frees its slot then; the next starts ``--gap`` seconds
later, and each drawn campaign's trials get ``--jitter`` of timing noise. The recorded seeds' own orders are
replayed too, without noise, as a check against what their ASHA campaigns measured: async rungs compare a
trial with those that reached the rung before it, so a second or two can keep or stop a trial.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
from dataclasses import dataclass

from bench.common import table
from bench.search_efficiency import SPACE, time_to

Curve = list[tuple[float, int, float]]  # (seconds since the trial's start, epoch, fd) per report


@dataclass(frozen=True)
class _Trial:
    trial_id: str  # all _Bracket reads of a trial


def replay(curves: list[Curve], asha: tuple[int, int, int] | None, slots: int, gap: float) -> list[tuple[float, float]]:
    """Every (seconds since the campaign's start, fd) report of one campaign, the trials started in order.
    ``asha``: (grace, reduction factor, max epochs) for ASHA, ``None`` for FIFO."""
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.schedulers.async_hyperband import _Bracket

    bracket = _Bracket(asha[0], asha[2], asha[1], 0) if asha else None
    waiting = list(range(len(curves)))
    running: list[tuple[float, int, int]] = []  # (time of the report, trial, report index)
    reports = []

    def start(trial: int, at: float) -> None:
        heapq.heappush(running, (at + curves[trial][0][0], trial, 0))

    for _ in range(min(slots, len(waiting))):
        start(waiting.pop(0), 0.0)
    while running:
        at, trial, k = heapq.heappop(running)
        _, epoch, fd = curves[trial][k]
        reports.append((at, fd))
        done = k == len(curves[trial]) - 1
        if not done and bracket is not None:  # ASHA maximises its reward: -fd, as ASHAScheduler passes it
            done = bracket.on_result(_Trial(str(trial)), epoch, -fd) == TrialScheduler.STOP
        if done:
            if waiting:
                start(waiting.pop(0), at + gap)
        else:
            heapq.heappush(running, (at + curves[trial][k + 1][0] - curves[trial][k][0], trial, k + 1))
    return sorted(reports)


def jittered(curves: list[Curve], rng: random.Random, jitter: float) -> list[Curve]:
    """Each trial's times scaled by its own factor in [1 - jitter, 1 + jitter]: a rerun's timing noise, which
    decides which trial reaches a rung first, and so whom ASHA's async rungs compare it with."""
    out = []
    for curve in curves:
        k = 1.0 + rng.uniform(-jitter, jitter)
        out.append([(t * k, e, fd) for t, e, fd in curve])
    return out


def compare(curves: list[Curve], asha: tuple[int, int, int], slots: int, gap: float) -> tuple[float, bool]:
    """ASHA's time to target over FIFO's, and whether ASHA stopped the trial with FIFO's best fd. The target is
    the worse of the two campaigns' best fd, as in ``search_efficiency``."""
    runs = [replay(curves, asha, slots, gap), replay(curves, None, slots, gap)]
    bests = [min(fd for _, fd in r) for r in runs]
    asha_s, fifo_s = (time_to(max(bests), r) for r in runs)
    return asha_s / fifo_s, bests[0] > bests[1]


def quantile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a search_efficiency --out JSON with its FIFO campaigns")
    parser.add_argument("--samples", type=int, default=32, help="trials per replayed campaign")
    parser.add_argument("--orders", type=int, default=1000, help="campaigns drawn from the pooled trials")
    parser.add_argument("--slots", type=int, default=2, help="trials at a time")
    parser.add_argument("--gap", type=float, default=0.4, help="seconds from a trial's end to the next one's start")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter", type=float, default=0.05, help="per-trial timing noise of drawn campaigns")
    parser.add_argument("--rf", default="2", help="reduction factors to replay, comma-separated")
    args = parser.parse_args()

    from genai_ray.tune.space import load_space

    base = load_space(str(SPACE)).config_for({})
    grace, max_t = base.tune.grace_epochs, base.train.epochs
    with open(args.results) as f:
        campaigns = {run["seed"]: run for run in json.load(f) if run["scheduler"] == "fifo"}
    for run in campaigns.values():  # the searcher's order (trial ids), where the results have them; else by start
        run["trials"].sort(key=lambda t: t.get("trial", ""))
    # A campaign's first trial on each actor also imported TensorFlow; drawn into other positions, it would not.
    pool = [t["curve"] for run in campaigns.values() for t in run["trials"][args.slots:]]
    rows = []
    for rf in (int(r) for r in args.rf.split(",")):
        asha = (grace, rf, max_t)
        own = [compare([t["curve"] for t in run["trials"]], asha, args.slots, args.gap)[0]
               for run in campaigns.values()]
        rng = random.Random(args.seed)
        drawn = [compare(jittered(rng.sample(pool, args.samples), rng, args.jitter), asha, args.slots, args.gap)
                 for _ in range(args.orders)]
        ratios = [r for r, _ in drawn]
        rows.append([f"{grace} / {rf}", ", ".join(f"{r:.2f}" for r in own), f"{statistics.median(ratios):.2f}",
                     " / ".join(f"{quantile(ratios, p):.2f}" for p in (0.25, 0.75, 0.9)),
                     f"{sum(r <= 0.5 for r in ratios) / len(ratios):.0%}",
                     f"{sum(lost for _, lost in drawn) / len(drawn):.0%}"])
    print(f"ASHA's time to target over FIFO's, replayed from {args.results}: {len(pool)} trials pooled, "
          f"{args.orders} campaigns of {args.samples}, {args.slots} at a time, timing jitter {args.jitter:.0%}")
    print(table(["grace / reduction factor", "recorded orders, replayed", "median", "p25 / p75 / p90", "<= 0.5x",
                 "ASHA stopped FIFO's best trial"], rows))


if __name__ == "__main__":
    main()
