"""time_to_accuracy and relative on hand-made curves."""
from __future__ import annotations

import pytest

from lmprune.errors import LmpruneError
from lmprune.evaluation.efficiency import relative, time_to_accuracy


def curve(*points, key="metric"):
    return [{"step": 10 * i, "seconds": s, key: v} for i, (s, v) in enumerate(points)]


def test_first_crossing_wins_even_if_the_metric_drops_later():
    # reference 0.9 -> target 0.97 * 0.9 = 0.873: 0.80 at 5 s is below, 0.88 at 10 s reaches it
    points = curve((0.0, 0.5), (5.0, 0.80), (10.0, 0.88), (15.0, 0.70), (20.0, 0.95))
    assert time_to_accuracy(points, 0.9) == 10.0


def test_never_reached_is_none():
    assert time_to_accuracy(curve((0.0, 0.5), (5.0, 0.96)), 1.0) is None  # target 0.97
    assert time_to_accuracy([], 1.0) is None


def test_exact_equality_counts_including_float_rounding():
    assert time_to_accuracy(curve((0.0, 0.4), (3.0, 0.5)), 1.0, fraction=0.5) == 3.0
    # 0.97 * 0.81 is 0.7857000000000001 in floats; a metric of 0.7857 has reached it
    assert time_to_accuracy(curve((0.0, 0.5), (7.5, 0.7857)), 0.81) == 7.5
    assert time_to_accuracy(curve((0.0, 0.5), (7.5, 0.7856)), 0.81) is None


def test_points_are_taken_in_time_order_and_points_without_the_metric_are_skipped():
    points = [{"seconds": 9.0, "metric": 0.99}, {"seconds": 4.0, "keep_ratio": 0.5},
              {"seconds": 6.0, "metric": None}, {"seconds": 2.0, "metric": 0.1}]
    assert time_to_accuracy(points, 1.0) == 9.0


def test_another_key():
    points = curve((1.0, 0.2), (2.0, 0.6), key="f1")
    assert time_to_accuracy(points, 0.6, fraction=1.0, key="f1") == 2.0
    assert time_to_accuracy(points, 0.6, fraction=1.0) is None  # no "metric" at all


def test_bad_input_is_a_clear_error():
    with pytest.raises(LmpruneError, match="curve entry 1 has no number under 'seconds'"):
        time_to_accuracy([{"seconds": 0, "metric": 1}, {"metric": 1}], 1.0)
    with pytest.raises(LmpruneError, match="finite reference and a positive fraction"):
        time_to_accuracy(curve((0.0, 1.0)), None)
    with pytest.raises(LmpruneError, match="positive fraction"):
        time_to_accuracy(curve((0.0, 1.0)), 1.0, fraction=0)


def test_relative():
    assert relative(0.9, 1.8) == 0.5
    assert relative(3, 2) == 1.5
    assert relative(1.0, 0) is None
    assert relative(None, 1.0) is None and relative(1.0, None) is None
    assert relative(True, 1.0) is None and relative("0.5", 1.0) is None
    assert relative(float("nan"), 1.0) is None


def test_only_points_at_the_final_sparsity_count():
    from lmprune.evaluation.efficiency import at_final_sparsity

    curve = [{"seconds": 1, "metric": 0.95, "keep_ratio": 1.0},
             {"seconds": 2, "metric": 0.80, "keep_ratio": 0.6},
             {"seconds": 3, "metric": 0.93, "keep_ratio": 0.403},
             {"seconds": 4, "metric": 0.94, "keep_ratio": 0.40}]
    kept = at_final_sparsity(curve)
    assert [p["seconds"] for p in kept] == [3, 4]
    assert time_to_accuracy(kept, 0.95, 0.97) == 3
    assert at_final_sparsity([{"seconds": 1, "metric": 1.0}]) == [{"seconds": 1, "metric": 1.0}]
