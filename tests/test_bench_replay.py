"""bench.asha_replay drives Ray's own ASHA bracket over recorded curves: its stops and slot hand-offs."""

from __future__ import annotations

import pytest

from bench.asha_replay import compare, replay

# (seconds since the trial's start, epoch, fd): a report every 4 epochs, one second apart
CURVES = [
    [(1.0, 4, 10.0), (2.0, 8, 9.0)],
    [(1.0, 4, 5.0), (2.0, 8, 4.0)],
    [(1.0, 4, 20.0), (2.0, 8, 1.0)],  # the best trial, worst at the first rung
    [(1.0, 4, 3.0), (2.0, 8, 2.0)],
]


def test_fifo_runs_every_report_one_trial_after_another():
    assert replay(CURVES, None, slots=1, gap=0.0) == [(1, 10), (2, 9), (3, 5), (4, 4), (5, 20), (6, 1), (7, 3), (8, 2)]


def test_asha_stops_a_trial_below_its_rungs_median_and_hands_its_slot_on():
    # At epoch 4 the third trial's 20 is worse than the median of 10 and 5: stopped there, the fourth starts.
    assert replay(CURVES, (4, 2, 8), slots=1, gap=0.0) == [(1, 10), (2, 9), (3, 5), (4, 4), (5, 20), (6, 3), (7, 2)]


def test_the_target_is_the_worse_best_and_a_lost_best_trial_is_reported():
    ratio, lost = compare(CURVES, (4, 2, 8), slots=1, gap=0.0)
    assert lost  # ASHA's best is 2, FIFO's 1
    assert ratio == pytest.approx(7 / 6)  # fd <= 2: ASHA at 7 s, FIFO at 6 s (the trial ASHA stopped)
