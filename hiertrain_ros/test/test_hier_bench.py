"""hier_bench's verdict on its runs: HierTrain against the fastest baseline."""

import pytest

from benchmarks.hier_bench import against_baselines


def _row(policy, mapping, split, runs, m_s=0, m_l=0):
    row = {"policy": policy, "mapping": mapping.split(","), "m_s": m_s, "m_l": m_l, "split": split}
    if runs:  # as hier_bench writes a row: no measured keys when every run failed
        row.update(measured_runs_s=runs, measured_s=sorted(runs)[len(runs) // 2])
    return row


def test_a_choice_slower_in_every_run_is_slower_and_compared_with_the_fastest_baseline():
    rows = [_row("HierTrain", "device,edge,cloud", [91, 0, 37], [1.20, 1.25, 1.30, 1.22, 1.28], m_l=2),
            _row("All-Device", "device,edge,cloud", [128, 0, 0], [1.00, 1.02, 0.98, 1.05, 0.99]),
            _row("All-Edge", "edge,device,cloud", [128, 0, 0], [1.10, 1.12, 1.08, 1.11, 1.09]),
            _row("All-Cloud", "cloud,device,edge", [128, 0, 0], [])]  # every run failed
    verdict = against_baselines(rows)
    assert verdict["best_baseline"] == "All-Device" and not verdict["same_policy"]
    assert verdict["runs"] == [5, 5] and verdict["median_ratio"] == pytest.approx(1.25 / 1.00)
    assert verdict["p_slower"] == pytest.approx(1 / 252) and verdict["p_faster"] == pytest.approx(1.0)


def test_overlapping_runs_decide_nothing_and_idle_workers_order_does_not_make_another_policy():
    rows = [_row("HierTrain", "edge,cloud,device", [128, 0, 0], [0.94, 0.84, 1.05]),
            _row("All-Edge", "edge,device,cloud", [128, 0, 0], [0.96, 0.89, 0.99]),
            _row("All-Device", "device,edge,cloud", [128, 0, 0], [0.90, 1.00, 0.90])]
    verdict = against_baselines(rows)
    assert verdict["best_baseline"] == "All-Device" and not verdict["same_policy"]
    assert verdict["p_slower"] > 0.05 and verdict["p_faster"] > 0.05
    rows[2]["measured_runs_s"], rows[2]["measured_s"] = [1.1, 1.2, 1.3], 1.2
    assert against_baselines(rows)["best_baseline"] == "All-Edge" and against_baselines(rows)["same_policy"]


def test_no_verdict_without_runs_of_both():
    assert against_baselines([_row("All-Edge", "edge,device,cloud", [128, 0, 0], [0.9])]) is None
    assert against_baselines([_row("HierTrain", "edge,device,cloud", [128, 0, 0], [0.9])]) is None
