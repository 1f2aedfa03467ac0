"""The arbiter's choice between the edge's and the cloud's answer (fake clock).

By calibrated confidence, by recent prequential accuracy, the edge during an outage; reasons and metrics.
"""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hiertrain_ros.core.fallback import (REASON_CALIBRATED, REASON_RECENT_ACCURACY, REASON_SOLE, FallbackArbiter,
                                         Reliability)

TIMEOUT, GRACE = 0.3, 0.25


class FakeClock:
    def __init__(self, t: float = 500.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def make(**kw):
    clock = FakeClock()
    arb = FallbackArbiter(heartbeat_timeout_s=TIMEOUT, cloud_grace_s=GRACE, clock=clock,
                          serve=lambda prediction, reason: (prediction, reason), **kw)
    return arb, clock


def frame(arb, stamp, truth, edge, cloud, segment=0):
    """One labelled frame through the live link: label, edge answer, cloud answer (class, confidence)."""
    arb.heartbeat()
    arb.on_label(stamp, truth, segment)
    out = arb.on_edge(stamp, "edge", *edge)
    out += arb.on_cloud(stamp, "cloud", "", *cloud)
    assert len(out) == 1
    return out[0]


def history(arb, n, edge_right: bool, cloud_right: bool, conf=0.9, start=0):
    for s in range(start, start + n):
        frame(arb, s, 1, (1 if edge_right else 2, conf), (1 if cloud_right else 2, conf))


def test_serves_the_edge_when_it_has_been_more_accurate_recently():
    arb, _ = make()
    history(arb, 30, edge_right=True, cloud_right=False)
    # Confidence 0.9 has evidence on both paths: calibration decides.
    assert frame(arb, 100, 3, (3, 0.9), (4, 0.9)) == ("edge", REASON_CALIBRATED)
    # Confidence 0.35 has none: the paths' recent accuracy decides.
    assert frame(arb, 101, 3, (3, 0.35), (4, 0.35)) == ("edge", REASON_RECENT_ACCURACY)
    assert arb.metrics.recent_accuracy("edge") == 1.0 and arb.metrics.recent_accuracy("cloud") == 0.0


def test_serves_the_cloud_when_it_has_been_more_accurate_recently():
    arb, _ = make()
    history(arb, 30, edge_right=False, cloud_right=True)
    assert frame(arb, 100, 3, (4, 0.9), (3, 0.9)) == ("cloud", REASON_CALIBRATED)
    assert frame(arb, 101, 3, (4, 0.35), (3, 0.35)) == ("cloud", REASON_RECENT_ACCURACY)


def test_switches_when_the_edge_overtakes_the_cloud():
    arb, _ = make(recent_window=20, calibration_horizon=20)
    history(arb, 40, edge_right=False, cloud_right=True)
    assert frame(arb, 100, 1, (1, 0.9), (1, 0.9))[0] == "cloud"
    history(arb, 60, edge_right=True, cloud_right=False, start=200)  # the stream changed; the edge adapted
    assert frame(arb, 300, 1, (1, 0.9), (1, 0.9))[0] == "edge"


def test_calibrated_confidence_can_overrule_recent_accuracy():
    arb, _ = make()
    # The cloud is right more often overall, but its low-confidence answers are wrong, and the
    # edge's high-confidence answers are right.
    for s in range(60):
        low = s % 3 == 0
        frame(arb, s, 1, (1 if low else 2, 0.95 if low else 0.15), (2 if low else 1, 0.25 if low else 0.95))
    assert arb.metrics.recent_accuracy("cloud") > arb.metrics.recent_accuracy("edge")
    assert frame(arb, 100, 3, (3, 0.95), (4, 0.25)) == ("edge", REASON_CALIBRATED)
    assert frame(arb, 101, 3, (4, 0.15), (3, 0.95)) == ("cloud", REASON_CALIBRATED)


def test_a_thin_lucky_bin_does_not_overrule_a_clearly_better_record():
    def stream(arb):
        # The edge is right 3 times in 5 at confidence 0.55, the cloud once in 5 at 0.15 ...
        for s in range(60):
            frame(arb, s, 1, (1 if s % 5 < 3 else 2, 0.55), (1 if s % 5 == 0 else 2, 0.15))
        # ... and 5 of its 6 answers at confidence 0.95 were right: a thin bin, maybe luck.
        for s in range(60, 66):
            frame(arb, s, 1, (1 if s % 5 < 3 else 2, 0.55), (2 if s == 60 else 1, 0.95))
        return frame(arb, 100, 3, (3, 0.55), (4, 0.95))

    # Its estimate (0.69 against the edge's 0.60) is within two standard errors: the record decides.
    assert stream(make()[0]) == ("edge", REASON_RECENT_ACCURACY)
    # Without the test (calibration_z 0) the bin wins.
    assert stream(make(calibration_z=0.0)[0]) == ("cloud", REASON_CALIBRATED)


def test_overrides_that_do_not_pay_off_stop_until_they_would_again():
    def stream(arb):
        for s in range(60):  # both right when both are sure ...
            frame(arb, s, 1, (1, 0.9), (1, 0.9))
        for s in range(60, 120):  # ... both wrong when both are unsure ...
            frame(arb, s, 1, (2, 0.35), (2, 0.35))
        for s in range(120, 150):  # ... and lately the edge has been the better path
            frame(arb, s, 1, (1, 0.65), (2, 0.65))
        # Per path, a sure cloud (0.9) beats an unsure edge (0.35), but on exactly those frames the
        # edge is right: the two paths' errors are correlated, which per-path tables cannot see.
        return [frame(arb, s, 3, (3, 0.35), (4, 0.9)) for s in range(200, 203)]

    arb = make()[0]
    assert stream(arb) == [("cloud", REASON_CALIBRATED)] + [("edge", REASON_RECENT_ACCURACY)] * 2
    assert arb.overrides["blocked"] == 2 and arb.overrides["lost"] > 2 and arb.overrides["won"] == 0
    assert arb.adaptation()["overrides"] == arb.overrides
    # The blocked overrides are still scored: once they would have paid off, overriding resumes.
    for s in range(300, 304):
        frame(arb, s, 4, (3, 0.35), (4, 0.9))
    assert arb.overrides["won"] >= arb.overrides["lost"]
    assert frame(arb, 400, 4, (3, 0.35), (4, 0.9)) == ("cloud", REASON_CALIBRATED)
    # Without the guard the bins keep overriding.
    assert stream(make(override_guard=False)[0]) == [("cloud", REASON_CALIBRATED)] * 3


def test_serves_the_edge_at_once_during_an_outage_whatever_its_record():
    arb, clock = make()
    history(arb, 30, edge_right=False, cloud_right=True)
    clock.advance(TIMEOUT + 0.01)
    assert arb.poll() == ([], False)
    assert arb.on_edge(100, "edge", 4, 0.9) == [("edge", REASON_SOLE)]
    assert arb.on_cloud(100, "cloud", "", 3, 0.9) == []  # a late cloud answer is still dropped ...
    assert arb.late_cloud == 1
    arb.on_label(100, 3)
    assert arb.metrics.accuracy("cloud") == (1.0, 31)  # ... but scored for the cloud's record


def test_sole_answers_when_only_one_is_in_time():
    arb, clock = make()
    history(arb, 30, edge_right=False, cloud_right=True)
    arb.heartbeat()
    assert arb.on_edge(100, "edge", 4, 0.9) == []
    clock.advance(GRACE + 0.01)
    arb.heartbeat()
    assert arb.poll() == ([("edge", REASON_SOLE)], True)  # the better cloud was silent
    assert arb.on_cloud(101, "cloud", "", 3, 0.9) == [("cloud", REASON_SOLE)]  # the edge's not there (yet)
    assert arb.on_edge(101, "edge", 3, 0.9) == []


def test_cloud_first_policy_serves_the_cloud_whenever_in_time():
    arb, _ = make(policy="cloud_first")
    history(arb, 30, edge_right=True, cloud_right=False)
    assert frame(arb, 100, 3, (3, 0.9), (4, 0.9)) == ("cloud", REASON_SOLE)
    arb.policy = "best"
    assert frame(arb, 101, 3, (3, 0.9), (4, 0.9)) == ("edge", REASON_CALIBRATED)
    with pytest.raises(ValueError, match="policy"):
        FallbackArbiter(policy="fastest")


def test_without_evidence_the_cloud_is_served():
    arb, _ = make()
    assert frame(arb, 1, 3, (3, 0.9), (4, 0.9)) == ("cloud", REASON_RECENT_ACCURACY)


def test_outputs_are_scored_and_counted_per_reason():
    arb, _ = make()
    history(arb, 10, edge_right=True, cloud_right=False)
    figures = arb.adaptation()
    assert figures["accuracy"]["output"][1] == 10
    assert figures["segment_accuracy"]["edge"] == (1.0, 10)
    assert sum(figures["reasons"]) == 10
    assert figures["reasons"][REASON_CALIBRATED] > 0


def test_adaptation_reports_recovery_after_a_change():
    arb, _ = make(recent_window=4, history=1000)
    history(arb, 8, edge_right=True, cloud_right=True)
    for s in range(8, 11):  # segment 1: both wrong for three frames, then right
        frame(arb, s, 1, (2, 0.9), (2, 0.9), segment=1)
    for s in range(11, 16):
        frame(arb, s, 1, (1, 0.9), (1, 0.9), segment=1)
    (change,) = arb.adaptation()["recovery"]
    assert (change["segment"], change["frames"]) == (1, 7)
    assert arb.adaptation()["segment"] == 1


def test_reliability_table_forgets_old_evidence():
    table = Reliability(bins=10, horizon=10)
    for _ in range(50):
        table.update(0.9, False)
    for _ in range(50):
        table.update(0.9, True)
    p, evidence = table.estimate(0.9, prior=0.5)
    assert p > 0.9 and evidence < 11
    assert table.estimate(0.1, prior=0.3) == (0.3, 0.0)
    assert table.bin(1.0) == 9 and table.bin(-0.1) == 0


# -- with classes and labels, every stamp is still answered exactly once ---------------------------

EVENTS = st.lists(st.one_of(
    st.tuples(st.just("edge"), st.integers(0, 20), st.integers(0, 2), st.floats(0, 1)),
    st.tuples(st.just("cloud"), st.integers(0, 20), st.integers(0, 2), st.floats(0, 1)),
    st.tuples(st.just("label"), st.integers(0, 20), st.integers(0, 2), st.just(0.0)),
    st.tuples(st.just("heartbeat"), st.just(0), st.just(0), st.just(0.0)),
    st.tuples(st.just("poll"), st.just(0), st.just(0), st.just(0.0)),
    st.tuples(st.just("advance"), st.sampled_from([0.01, 0.1, 0.2, 0.5]), st.just(0), st.just(0.0)),
), max_size=150)


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_every_stamp_answered_exactly_once_with_labels(events):
    arb, clock = make(calibration_min=1.0, recent_window=5)
    emitted, edge_stamps, cloud_stamps = [], set(), set()
    for kind, value, cls, conf in events:
        if kind == "edge" and value not in edge_stamps:
            edge_stamps.add(value)
            emitted += [p for p, _ in arb.on_edge(value, ("edge", value), cls, conf)]
        elif kind == "cloud" and value not in cloud_stamps:
            cloud_stamps.add(value)
            emitted += [p for p, _ in arb.on_cloud(value, ("cloud", value), "", cls, conf)]
        elif kind == "label":
            arb.on_label(value, cls)
        elif kind == "heartbeat":
            arb.heartbeat()
        elif kind == "poll":
            emitted += [p for p, _ in arb.poll()[0]]
        elif kind == "advance":
            clock.advance(value)
    clock.advance(10.0)
    emitted += [p for p, _ in arb.poll()[0]]
    per_stamp = Counter(stamp for _, stamp in emitted)
    assert all(n == 1 for n in per_stamp.values()), per_stamp
    assert set(per_stamp) == edge_stamps | cloud_stamps
    assert sum(arb.reasons) == len(emitted)


def test_fallback_config_checks_the_arbiter_settings():
    from hiertrain_ros.core.config import FallbackConfig

    assert FallbackConfig().arbiter == "best"
    with pytest.raises(ValueError, match="arbiter"):
        FallbackConfig(arbiter="fastest")
    with pytest.raises(ValueError, match="recent_window"):
        FallbackConfig(recent_window=0)
    with pytest.raises(ValueError, match="calibration_horizon"):
        FallbackConfig(calibration_horizon=0.5)
    with pytest.raises(ValueError, match="calibration_z"):
        FallbackConfig(calibration_z=-1.0)
