"""The L2S bench's steady oracle (benchmarks/l2s_bench.py): which runs it needs, and the window it measures."""

import pytest

from benchmarks.l2s_bench import accuracy_around_moves, steady_names, steady_oracle


def _rows(period_s: float, n: int = 200) -> list[tuple]:
    """Make a run's batch timeline: one batch made every ``period_s``, trained 0.1 s later."""
    return [(i, i * period_s, i * period_s + 0.1, 3, None) for i in range(n)]


def test_one_steady_run_per_candidate_and_distinct_rate():
    schedule = [(0.0, 5.85e6), (50.0, 1.1e6), (100.0, 1e6), (150.0, 5.85e6)]
    assert steady_names(schedule, [3, 8]) == ["steady:3@5.85e+06", "steady:8@5.85e+06", "steady:3@1.1e+06",
                                              "steady:8@1.1e+06", "steady:3@1e+06", "steady:8@1e+06"]


def test_the_steady_oracle_is_the_best_run_at_the_segments_rate_in_the_same_window():
    runs = {"steady:3@1e+06": _rows(0.5), "steady:8@1e+06": _rows(0.25),
            "steady:8@5.85e+06": _rows(0.1),  # faster, but at another rate
            "fixed:8": _rows(0.01)}  # not a steady run
    # A segment from 100 s to 150 s, window from 110 s: [10, 50) of each steady run's own clock.
    name, delay = steady_oracle(runs, 100.0, 110.0, 150.0, 1e6, 32)
    assert name == "steady:8@1e+06"
    trained = sum(1 for _, _, tc, _, _ in runs[name] if 10.0 <= tc < 50.0)
    assert trained == 160 and delay == pytest.approx(1e3 * 40.0 / (32 * trained))
    assert steady_oracle(runs, 100.0, 110.0, 150.0, 3e6, 32) == (None, None)  # no steady run at that rate


def test_the_accuracy_around_a_move_is_taken_in_the_order_the_cloud_trained():
    # (seq, edge time, cloud time, split, accuracy): two batches at 3, then two at 8 (trained out of order), one
    # never trained.
    rows = [(1, 0.0, 1.0, 3, 0.8), (2, 1.0, 2.0, 3, 0.6), (3, 2.0, 4.0, 8, 0.2), (4, 3.0, 3.0, 8, 0.4),
            (5, 4.0, None, 8, None)]
    assert accuracy_around_moves(rows, n=2, first=1) == [
        {"cloud_s": 3.0, "from": 3, "to": 8, "before": pytest.approx(0.7), "first_after": pytest.approx(0.4),
         "after": pytest.approx(0.3)}]
