"""Plain-text tables of metrics, for ``genai-ray evaluate`` and the demo's summary."""

from __future__ import annotations

HEADLINE = ["fd", "precision", "recall", "density", "coverage", "memorisation", "nn_train_ratio", "classifier_score",
            "class_coverage", "class_balance", "cond_acc"]  # table order; per-class rows and details follow


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
