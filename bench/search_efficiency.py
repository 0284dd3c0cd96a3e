"""``python -m bench.search_efficiency``: how soon a campaign finds a good generator, ASHA against FIFO, and
what inline trials save over a Ray Train run per trial.

For each search seed, both campaigns run in this process, one after the other, on the same local Ray: the
same space, the same seeded random search (so the same trials in the same order), the same number of
trials and epochs and the same concurrency. Only the scheduler differs, and which one runs first alternates
between seeds. Every trial reports the held-out Frechet distance every ``train.eval_every`` epochs; "time to
target" is the wall time from the campaign's start to the first report at or below ``--target``. Without
``--target``, each seed's target is the worse of its two campaigns' best FD, so both reach it. With ``--out``,
every report and every trial's timeline is saved as JSON after each campaign, so other targets can be
scored without rerunning and a run cut short keeps what it measured. "Trial time before 1st report" is where
a campaign's time goes that a scheduler can't save: a stopped trial has paid it in full.

Trials run inline (``--runner inline``, each in a reused Tune actor) unless told otherwise. With
``--compare-runners``, the first seed's ASHA campaign also runs with a Ray Train run per trial, at the same
settings and epochs, and the two campaigns' wall times are compared. Every inline trial's time from its start
to its first step (set-up plus the first traced call, as it reports) is listed, marked by whether its actor
had run a trial before.

Time to target depends on where the good trials fall in the order, which the seed decides: that is why the
verdict is the median over seeds, not one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import machine, table
from genai_ray.tune.campaign import METRIC

SPACE = Path(__file__).resolve().parent / "search_space.yaml"


def run(scheduler: str, seed: int, space, dataset, store: str, samples: int, concurrent: int,
        runner: str = "inline") -> dict:
    """One campaign: its wall time, every (seconds since start, fd) report of every trial, and each trial's
    timeline (start, first report, end, epochs: seconds since the campaign's start; its process, its time
    to the first step, and its curve: (seconds since the trial's start, epoch, fd) per report)."""
    from genai_ray.config import build_config
    from genai_ray.tune.campaign import TrialMode, build_tuner

    tune = {**space.base.get("tune", {}), "samples": samples, "scheduler": scheduler, "max_concurrent": concurrent,
            "seed": seed}
    tune_cfg = build_config(space.preset, {"tune": tune}).tune
    started = time.time()
    name = f"bench-{scheduler}-{seed}-{runner}"
    results = build_tuner(space, dataset, store, name, tune_cfg, resume=False, mode=TrialMode(runner=runner)).fit()
    wall = time.time() - started
    reports, trials = [], []
    for result in results:
        history = result.metrics_dataframe
        if history is None or METRIC not in history:
            continue
        times = [float(t) - started for t in history["timestamp"]]
        # time_total_s counts from the trial's own start, so the first row dates the trial's launch
        first = history.iloc[0]
        to_step = sum(float(first[k]) for k in ("startup/setup_s", "startup/first_call_s") if k in history)
        trials.append({"trial": str(first.get("trial_id", "")), "start": times[0] - float(first["time_total_s"]),
                       "first_report": times[0],
                       "end": times[-1], "epochs": int(history["epoch"].max()), "pid": int(first["pid"]),
                       "first_step_s": to_step,
                       "curve": [(float(s), int(e), float(v)) for s, e, v in zip(
                           history["time_total_s"], history["epoch"], history[METRIC], strict=True) if v == v]})
        reports += [(t, float(v)) for t, v in zip(times, history[METRIC], strict=True) if v == v]
    return {"wall": wall, "reports": sorted(reports), "trials": sorted(trials, key=lambda t: t["start"]),
            "epochs": sum(t["epochs"] for t in trials), "best": min(v for _, v in reports)}


def start_up_share(trials: list[dict]) -> float:
    """The share of all trial-seconds spent before a trial's first report (its Ray Train start-up, tracing and
    first ``eval_every`` epochs): the part of a trial no scheduler can save by stopping it."""
    total = sum(t["end"] - t["start"] for t in trials)
    return sum(t["first_report"] - t["start"] for t in trials) / total if total else 0.0


def idle_share(trials: list[dict], wall: float, slots: int) -> float:
    """The share of the campaign's slot-seconds in which an actor that had run a trial waited for its next one:
    time neither trial trained in, which the controller, Tune's actor reuse and a trial's teardown cost."""
    by_actor: dict[int, list[dict]] = {}
    for trial in trials:
        by_actor.setdefault(trial["pid"], []).append(trial)
    idle = 0.0
    for runs in by_actor.values():
        runs.sort(key=lambda t: t["start"])
        idle += sum(max(0.0, b["start"] - a["end"]) for a, b in itertools.pairwise(runs))
    return idle / (wall * slots) if wall else 0.0


def save(path: str, runs: dict[tuple[int, str], dict]) -> None:
    """Every campaign so far, written after each one (atomically), so a run cut short keeps what it measured."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(out.suffix + ".partial")
    partial.write_text(json.dumps([{"seed": seed, "scheduler": s, **r} for (seed, s), r in runs.items()]))
    partial.replace(out)


def first_steps(trials: list[dict]) -> list[tuple[float, bool]]:
    """(time from a trial's start to its first step, whether its actor had already run a trial), in start order."""
    seen, out = set(), []
    for trial in sorted(trials, key=lambda t: t["start"]):
        out.append((trial["first_step_s"], trial["pid"] in seen))
        seen.add(trial["pid"])
    return out


def time_to(target: float, reports: list[tuple[float, float]]) -> float | None:
    return next((t for t, v in reports if v <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8, help="trials per campaign")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--seeds", default="0", help="search seeds, comma-separated: one ASHA/FIFO pair each")
    parser.add_argument("--target", type=float, help="FD to reach (default: per seed, the worse campaign's best)")
    parser.add_argument("--space", default=str(SPACE))
    parser.add_argument("--runner", choices=["inline", "train"], default="inline", help="how trials run")
    parser.add_argument("--compare-runners", action="store_true",
                        help="also run the first seed's ASHA campaign with the other runner")
    parser.add_argument("--out", help="JSON file for every report, e.g. bench/results/search_efficiency.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    from genai_ray.data.prepare import prepare
    from genai_ray.data.reader import open_dataset
    from genai_ray.data.sources import open_source
    from genai_ray.evaluation.evaluate import prepare_features
    from genai_ray.ray_runtime import ensure_ray
    from genai_ray.tune.space import load_space

    space = load_space(args.space)
    runs: dict[tuple[int, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="genai-ray-bench-") as store:
        uri = f"{store}/datasets/digits"
        prepare(open_source("digits"), uri, name="digits", progress=False)
        dataset = open_dataset(uri)
        ensure_ray(None)
        prepare_features(dataset, space.config_for({}).eval)  # trained once, outside every timing
        for i, seed in enumerate(seeds):
            for scheduler in ("asha", "fifo") if i % 2 == 0 else ("fifo", "asha"):
                runs[seed, scheduler] = run(scheduler, seed, space, dataset, store, args.samples, args.max_concurrent,
                                            args.runner)
                print(f"seed {seed} {scheduler}: best fd {runs[seed, scheduler]['best']:.2f}, "
                      f"{runs[seed, scheduler]['wall']:.0f} s", flush=True)
                if args.out:
                    save(args.out, runs)
        other = "train" if args.runner == "inline" else "inline"
        if args.compare_runners:
            runs[seeds[0], other] = run("asha", seeds[0], space, dataset, store, args.samples, args.max_concurrent,
                                        other)
            print(f"seed {seeds[0]} asha, {other} runner: {runs[seeds[0], other]['wall']:.0f} s", flush=True)
            if args.out:
                save(args.out, runs)
    rows, ratios = [], []
    for seed in seeds:
        target = args.target if args.target is not None else max(runs[seed, s]["best"] for s in ("asha", "fifo"))
        reached = {s: time_to(target, runs[seed, s]["reports"]) for s in ("asha", "fifo")}
        for scheduler in ("asha", "fifo"):
            r = runs[seed, scheduler]
            rows.append([seed, scheduler, args.samples, r["epochs"], f"{r['best']:.2f}", f"{target:.2f}",
                         f"{reached[scheduler]:.0f}" if reached[scheduler] is not None else "not reached",
                         f"{r['wall']:.0f}", f"{start_up_share(r['trials']):.0%}",
                         f"{idle_share(r['trials'], r['wall'], args.max_concurrent):.0%}"])
        if reached["asha"] is not None and reached["fifo"]:
            ratios.append(reached["asha"] / reached["fifo"])
    print(f"\nsearch efficiency on digits, {args.space}; {machine()}")
    print(table(["seed", "scheduler", "trials", "epochs trained", "best fd", "target fd", "s to target",
                 "campaign s", "trial time before 1st report", "slots idle between trials"], rows))
    print(f"\ntime from trial start to first step ({args.runner} runner), in start order; * = a reused actor:")
    for (seed, scheduler), r in runs.items():
        if scheduler in ("asha", "fifo"):
            steps = first_steps(r["trials"])
            reused = [s for s, again in steps if again]
            print(f"  seed {seed} {scheduler}: " + ", ".join(f"{s:.1f}{'*' if again else ''}" for s, again in steps)
                  + (f"; median on reused actors {statistics.median(reused):.2f} s (target <= 3 s)" if reused else ""))
    if args.compare_runners:
        inline_wall = runs[seeds[0], "asha" if args.runner == "inline" else other]["wall"]
        train_wall = runs[seeds[0], other if args.runner == "inline" else "asha"]["wall"]
        print(f"{args.samples}-trial ASHA campaign, seed {seeds[0]}: inline {inline_wall:.0f} s, Ray Train per trial "
              f"{train_wall:.0f} s: inline is {train_wall / inline_wall:.2f}x faster end to end (target >= 2.5x)")
    walls = [runs[s, "asha"]["wall"] / runs[s, "fifo"]["wall"] for s in seeds]
    if ratios:
        print(f"ASHA reaches the target in {statistics.median(ratios):.2f}x FIFO's time, median over {len(ratios)} "
              f"seed(s) ({', '.join(f'{r:.2f}' for r in ratios)}; reported, not a target: it follows the trials' "
              f"order); whole campaign {statistics.median(walls):.2f}x")


if __name__ == "__main__":
    main()
