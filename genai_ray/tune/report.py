"""Campaign results people look at: the leaderboard (CSV and a printed table) and metric curves (PNG)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

# matplotlib is imported inside curves_png(): it selects the Agg backend before pyplot loads, and only the curves
# need it.

LEADERBOARD_COLUMNS = ("rank", "trial", "status", "epochs", "score", "params")


def leaderboard_rows(trials: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Trials sorted best first; trials with no score go last."""
    def key(t: dict[str, Any]) -> float:
        s = t.get("score")
        if s is None or (isinstance(s, float) and math.isnan(s)):
            return math.inf
        return s if mode == "min" else -s

    rows = []
    for rank, trial in enumerate(sorted(trials, key=key), start=1):
        rows.append({"rank": rank, **{c: trial.get(c) for c in LEADERBOARD_COLUMNS[1:]}})
    return rows


def leaderboard_csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LEADERBOARD_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "params": "; ".join(f"{k}={v}" for k, v in (row["params"] or {}).items())})
    return buf.getvalue().encode()


def leaderboard_text(rows: list[dict[str, Any]], metric: str, limit: int = 20) -> str:
    lines = [f"{'rank':>4}  {'trial':<24} {'status':<10} {'epochs':>6}  {metric:>10}  params"]
    for row in rows[:limit]:
        score = "-" if row["score"] is None else f"{row['score']:.4f}"
        params = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in (row["params"] or {}).items())
        lines.append(f"{row['rank']:>4}  {row['trial']:<24} {row['status']:<10} {row['epochs'] or 0:>6}  "
                     f"{score:>10}  {params}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value).replace(" ", "")


def curves_png(curves: dict[str, list[tuple[float, float]]], metric: str, title: str) -> bytes:
    """One line per trial: metric against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for trial, points in sorted(curves.items()):
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=trial)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) <= 20:
        ax.legend(fontsize=7, ncol=2)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
