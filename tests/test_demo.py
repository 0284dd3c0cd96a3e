"""The demo's closing summary: where things are, and the headline scores against the KDE baseline."""

from __future__ import annotations

from pathlib import Path

from genai_ray.demo import SUMMARY, summary


def test_summary_names_the_paths_and_which_headline_metrics_beat_the_kde() -> None:
    columns = {
        "real floor": {"eval/fd": 1.0, "eval/precision": 0.9, "eval/recall": 0.9, "eval/coverage": 0.95,
                       "eval/memorisation": 1.0, "eval/classifier_score": 9.5, "eval/cond_acc/c0": 1.0},
        "kde": {"eval/fd": 20.0, "eval/precision": 0.5, "eval/recall": 0.8, "eval/coverage": 0.7,
                "eval/memorisation": 0.01, "eval/classifier_score": 6.0},
        "genai-ray": {"eval/fd": 10.0, "eval/precision": 0.7, "eval/recall": 0.6, "eval/coverage": 0.7,
                      "eval/memorisation": 0.02, "eval/classifier_score": 8.0},
    }
    text = summary("/store/models/digits-demo/v0001", Path("out/samples.png"), Path("out/served.png"),
                   "http://127.0.0.1:8123/", columns, 330.0, keep_serving=False)
    lines = text.splitlines()
    assert lines[0] == "model package  /store/models/digits-demo/v0001"
    assert lines[1] == f"sample grid    {Path('out/samples.png').resolve()}"
    assert lines[3].startswith("endpoint       http://127.0.0.1:8123/ (stops with the demo")
    table = [line.split() for line in lines[5 : 6 + len(SUMMARY)]]
    assert table[0] == ["metric", "real", "floor", "kde", "genai-ray"]
    assert [row[0] for row in table[1:]] == [m for m, _ in SUMMARY]  # headline rows only, in order
    assert table[1][1:] == ["1.0000", "20.0000", "10.0000"]
    assert "eval/classifier_score" not in text and "cond_acc" not in text, "only the key metrics"
    # lower FD wins; a tie (coverage) and losses (recall, more memorisation) do not count
    assert lines[-1].startswith("genai-ray beats the KDE baseline on fd, precision of 5")
    assert lines[-1].endswith("the demo took 5.5 min")


def test_the_key_table_shows_five_rows_and_says_how_many_are_left_out() -> None:
    from genai_ray.tables import KEY_METRICS, format_key_table, format_table

    columns = {
        "model": {"eval/n_samples": 200.0, "eval/memorisation": 0.0, "eval/cond_acc/c0": 0.9, "eval/fd": 3.5,
                  "eval/recall": 0.4, "eval/precision": 0.8, "eval/coverage": 0.6, "eval/density": 0.9},
        "kde": {"eval/fd": 4.0, "eval/recall": 0.7, "eval/class_coverage": 1.0},
    }
    lines = format_key_table(columns, "--all, or --json").splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == [f"eval/{m}" for m in KEY_METRICS]
    assert lines[1].split()[1:] == ["3.5000", "4.0000"]
    assert lines[-1] == "(4 more metrics: --all, or --json)"
    assert len(format_table(columns).splitlines()) == 1 + 9, "the full table keeps every row"
    assert format_key_table({"m": {"eval/fd": 1.0}}, "x").splitlines()[-1].split() == ["eval/fd", "1.0000"]
