"""Adaptation metrics on hand-made sequences: join, per segment, over time, recovery, forgetting."""

import pytest

from hiertrain_ros.core.metrics import (Prequential, blocks, forgetting, join, recovery, running_accuracy,
                                        summarize)


def test_answers_and_labels_join_by_stamp_in_either_order_once():
    scored = []
    m = Prequential(paths=("edge", "cloud"), recent_window=3, on_score=scored.append)
    m.answer("edge", 10, 1, 0.9)     # answer first
    m.label(10, 1, segment=0)
    m.label(20, 2, segment=0)        # label first
    m.answer("edge", 20, 3)
    m.answer("cloud", 20, 2)
    m.answer("cloud", 20, 5)         # a duplicate answer is not scored again
    m.label(20, 3, segment=0)        # nor a duplicate label
    m.answer("edge", 30, 4)          # never labelled: never scored
    assert [(o.stamp, o.path, o.correct) for o in scored] == [(10, "edge", True), (20, "edge", False),
                                                               (20, "cloud", True)]
    assert scored[0].confidence == 0.9
    assert m.segment_accuracy("edge") == (0.5, 2)
    assert m.segment_accuracy("cloud") == (1.0, 1)
    assert m.recent_accuracy("edge") == 0.5 and m.recent_accuracy("cloud") == 1.0


def test_per_segment_and_recent_window():
    m = Prequential(paths=("output",), recent_window=2)
    for stamp, (truth, answer, segment) in enumerate([(1, 1, 0), (1, 1, 0), (1, 0, 1), (1, 0, 1), (1, 1, 1)]):
        m.label(stamp, truth, segment)
        m.answer("output", stamp, answer)
    assert m.segment == 1
    assert m.segment_accuracy("output", 0) == (1.0, 2)
    assert m.segment_accuracy("output") == (pytest.approx(1 / 3), 3)
    assert m.accuracy("output") == (0.6, 5)
    assert m.recent_accuracy("output") == 0.5  # the last two: wrong, right


def test_pending_frames_are_bounded():
    m = Prequential(paths=("edge",), max_pending=2)
    for stamp in range(5):
        m.answer("edge", stamp, 0)   # held-out frames: no label will come
    m.label(0, 0)                    # its answer was dropped long ago
    m.label(4, 0)
    assert m.accuracy("edge") == (1.0, 1)


def test_unknown_path_and_bad_windows_are_refused():
    with pytest.raises(ValueError, match="path"):
        Prequential(paths=("edge",)).answer("fog", 1, 0)
    with pytest.raises(ValueError, match="window"):
        blocks([True], 0)
    with pytest.raises(ValueError, match="fraction"):
        recovery([(0, True)], 2, fraction=0)


def test_blocks_and_running_accuracy():
    seq = [True, True, False, False, True]
    assert blocks(seq, 2) == [1.0, 0.0, 1.0]
    assert running_accuracy(seq, 2) == [1.0, 1.0, 0.5, 0.0, 0.5]


def test_recovery_counts_frames_until_back_to_90_percent():
    # Segment 0: always right (baseline 1.0); after the change: 3 wrong, then right again.
    # Running window 4: 0.75, 0.5, 0.25, 0.25, 0.5, 0.75, 1.0 -> back to >= 0.9 at the 7th frame.
    seq = [(0, True)] * 8 + [(1, False)] * 3 + [(1, True)] * 5
    (change,) = recovery(seq, window=4)
    assert change == {"segment": 1, "after_segment": 0, "at_frame": 8, "baseline": 1.0, "frames": 7}


def test_recovery_zero_when_no_drop_and_none_when_never_back():
    unharmed = [(0, True), (0, False)] * 4 + [(1, True), (1, False)] * 4  # 0.5 throughout
    assert recovery(unharmed, window=2)[0]["frames"] == 0
    stuck = [(0, True)] * 6 + [(1, False)] * 6 + [(2, True)] * 6
    first, second = recovery(stuck, window=3)
    assert first["frames"] is None                          # not back before segment 2 began
    assert (second["baseline"], second["frames"]) == (0.0, 0)  # nothing to fall from
    assert recovery([(0, True)] * 5, window=2) == []
    # A dip that starts more than a window after the change is noise, not the change's.
    late_dip = [(0, True)] * 4 + [(1, True)] * 6 + [(1, False)] * 2 + [(1, True)] * 2
    assert recovery(late_dip, window=2)[0]["frames"] == 0


def test_forgetting_best_block_against_final_evaluation():
    # Segment 0 held out: 4 right (best block 1.0); segment 1 begins; segment 0 evaluated
    # again at the end: 1 of 4 right -> forgetting 0.75, measured after a later segment.
    held_out = [(0, True)] * 4 + [(1, False), (1, True), (1, True), (1, True)] + [(0, False)] * 3 + [(0, True)]
    result = forgetting(held_out, window=4)
    assert result[0] == {"best": 1.0, "final": 0.25, "forgetting": 0.75, "evaluated_after": True, "frames": 8}
    assert result[1]["forgetting"] == 0.0 and not result[1]["evaluated_after"]


def test_forgetting_with_fewer_frames_than_a_window():
    assert forgetting([(3, True), (3, False)], window=10)[3]["best"] == 0.5


def test_join_takes_monitor_tuples_and_sorts_by_stamp():
    labels = {30: (1, 0), 10: (1, 0), 20: (2, 0)}
    outcomes = join(labels, {"edge": {10: (1, 0, 0.1), 20: (1, 0, 0.1), 30: (1, 0, 0.1)}})
    assert [(o.stamp, o.correct) for o in outcomes] == [(10, True), (20, False), (30, True)]


def test_summarize_without_truth_and_with_truth():
    # Two segments of 4 labelled frames; the edge learns segment 1 late, the cloud never.
    labels = {i: (i // 4, i // 4) for i in range(8)}
    answers = {"edge": {i: i // 4 if i not in (4, 5) else 9 for i in range(8)},
               "cloud": {i: 0 for i in range(8)},
               "output": {i: i // 4 if i not in (4,) else 9 for i in range(8)}}
    report = summarize(labels, answers, window=2)
    assert report["segments"] == [0, 1]
    assert report["prequential_by_segment"][1]["edge"] == {"accuracy": 0.5, "frames": 4}
    assert report["prequential_by_segment"][1]["cloud"] == {"accuracy": 0.0, "frames": 4}
    assert report["prequential_by_segment"][0]["output"] == {"accuracy": 1.0, "frames": 4}
    assert report["prequential_over_time"]["edge"] == [1.0, 1.0, 0.0, 1.0]
    assert report["anytime_average"]["edge"] == 0.75
    assert report["prequential"]["cloud"] == {"accuracy": 0.5, "frames": 8}
    assert report["recovery"][0]["frames"] == 3  # window 2: 0.5, 0.5, then 1.0 at the third frame
    assert "held_out_by_segment" not in report

    truth = {100 + i: (i % 2, i // 2) for i in range(4)}
    answers["edge"].update({100: 0, 101: 1, 102: 1, 103: 1})
    report = summarize(labels, answers, truth=truth, window=2)
    assert report["held_out_by_segment"][0]["edge"] == {"accuracy": 1.0, "frames": 2}
    assert report["held_out_by_segment"][1]["edge"] == {"accuracy": 0.5, "frames": 2}
    assert report["held_out_by_segment"][1]["cloud"] == {"accuracy": None, "frames": 0}
    assert report["forgetting"]["edge"][0]["forgetting"] == 0.0
