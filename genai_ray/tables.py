"""Plain-text tables of metrics, for ``genai-ray evaluate`` and the demo's summary."""

from __future__ import annotations

HEADLINE = ["fd", "precision", "recall", "density", "coverage", "memorisation", "nn_train_ratio", "classifier_score",
            "class_coverage", "class_balance", "cond_acc"]  # table order; per-class rows and details follow
# The rows a person reads first: fidelity (FD, precision), diversity (recall, coverage) and copying (memorisation).
# The other ~35 (per-class, feature-model checks, sample counts) are behind --verbose / --all / --json.
KEY_METRICS = ("fd", "precision", "recall", "coverage", "memorisation")


def key_metrics(columns: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each column cut to its KEY_METRICS rows, whatever their prefix (``eval/fd``, ``eval_train/fd``)."""
    return {name: {k: v for k, v in values.items() if k.split("/", 1)[-1] in KEY_METRICS}
            for name, values in columns.items()}


def format_key_table(columns: dict[str, dict[str, float]], more: str) -> str:
    """The KEY_METRICS table, then a line saying how many rows were left out and ``more``: how to see them."""
    shown = key_metrics(columns)
    left = len({k for values in columns.values() for k in values} - {k for values in shown.values() for k in values})
    return format_table(shown) + (f"\n({left} more metrics: {more})" if left else "")


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """Metrics as rows, one column per evaluated thing; blank where a metric does not apply."""
    keys: list[str] = []
    for values in columns.values():
        keys += [k for k in values if k not in keys]

    def rank(key: str) -> tuple[int, int]:
        name = key.split("/", 1)[-1]
        return (0, HEADLINE.index(name)) if name in HEADLINE else (1 + name.count("/"), 0)

    keys.sort(key=rank)
    width = max(len(k) for k in keys) if keys else 6
    widths = [max(10, len(name)) for name in columns]
    lines = ["metric".ljust(width) + "".join(f"  {name:>{w}}" for name, w in zip(columns, widths, strict=True))]
    for key in keys:
        cells = [f"{values[key]:.4f}" if key in values else "" for values in columns.values()]
        lines.append(key.ljust(width) + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)
