"""FallbackArbiter with a fake clock: which answer goes out, when, and exactly once."""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from hiertrain_ros.core.fallback import FallbackArbiter

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
    return FallbackArbiter(heartbeat_timeout_s=TIMEOUT, cloud_grace_s=GRACE, clock=clock, **kw), clock


def test_cloud_never_seen_edge_answers_immediately():
    arb, _ = make()
    assert not arb.cloud_alive()
    assert arb.on_edge(1, "e1") == ["e1"]
    assert arb.poll() == ([], False)
    assert arb.outages == 0  # never up: no outage


def test_edge_answer_waits_for_cloud_while_alive():
    arb, clock = make()
    arb.heartbeat()
    assert arb.on_edge(1, "e1") == []
    clock.advance(0.1)
    assert arb.poll() == ([], True)
    assert arb.on_cloud(1, "c1") == ["c1"]
    clock.advance(1.0)
    arb.heartbeat()
    assert arb.poll() == ([], True)  # the edge answer was superseded, never emitted
    assert arb.late_cloud == 0


def test_edge_answer_emitted_after_grace_when_cloud_is_silent():
    arb, clock = make()
    arb.heartbeat()
    assert arb.on_edge(1, "e1") == []
    clock.advance(GRACE - 0.01)
    arb.heartbeat()
    assert arb.poll() == ([], True)
    clock.advance(0.02)
    assert arb.poll() == (["e1"], True)
    assert arb.poll() == ([], True)


def test_late_cloud_answer_is_dropped_and_counted():
    arb, clock = make()
    arb.heartbeat()
    arb.on_edge(1, "e1")
    clock.advance(GRACE + 0.01)
    arb.heartbeat()
    assert arb.poll()[0] == ["e1"]
    assert arb.on_cloud(1, "c1") == []
    assert arb.on_cloud(1, "c1-again") == []
    assert arb.late_cloud == 2


def test_duplicate_cloud_answer_is_dropped():
    arb, _ = make()
    arb.heartbeat()
    assert arb.on_edge(1, "e1") == []
    assert arb.on_cloud(1, "c1") == ["c1"]
    assert arb.on_cloud(1, "c1") == []
    assert arb.late_cloud == 1


def test_cloud_answer_before_edge_answer_wins():
    arb, clock = make()
    arb.heartbeat()
    assert arb.on_cloud(5, "c5") == ["c5"]
    assert arb.on_edge(5, "e5") == []
    clock.advance(1.0)
    assert arb.poll()[0] == []


def test_cloud_down_flushes_pending_and_answers_new_frames_immediately():
    arb, clock = make()
    arb.heartbeat()
    assert arb.poll() == ([], True)
    arb.on_edge(1, "e1")
    arb.on_edge(2, "e2")
    clock.advance(TIMEOUT + 0.01)  # heartbeat lost; grace (0.25) also over, but flush must not need it
    out, alive = arb.poll()
    assert (out, alive) == (["e1", "e2"], False)
    assert arb.outages == 1
    assert arb.on_edge(3, "e3") == ["e3"]


def test_pending_edge_answers_flushed_on_heartbeat_loss_before_grace():
    arb = FallbackArbiter(heartbeat_timeout_s=0.1, cloud_grace_s=5.0, clock=(clock := FakeClock()))
    arb.heartbeat()
    arb.on_edge(1, "e1")
    clock.advance(0.2)  # link lost long before the 5 s grace: the edge answer must not wait for it
    assert arb.poll() == (["e1"], False)


def test_outages_counted_once_per_loss():
    arb, clock = make()
    for _ in range(3):
        arb.heartbeat()
        arb.poll()
        for _ in range(5):  # down for a while, polled repeatedly
            clock.advance(0.2)
            arb.poll()
    assert arb.outages == 3
    assert arb.heartbeat_age() > TIMEOUT


def test_heartbeat_age_and_liveness():
    arb, clock = make()
    assert arb.heartbeat_age() == float("inf")
    arb.heartbeat()
    clock.advance(TIMEOUT - 0.001)
    assert arb.cloud_alive()
    clock.advance(0.002)
    assert not arb.cloud_alive()


def test_pending_is_bounded_oldest_emitted():
    arb, _ = make(max_pending=3)
    arb.heartbeat()
    outs = [arb.on_edge(s, f"e{s}") for s in range(5)]
    assert outs == [[], [], [], ["e0"], ["e1"]]
    assert arb.on_cloud(0, "c0") == []  # already answered by the edge
    assert arb.late_cloud == 1


def test_grace_change_applies_to_new_frames():
    arb, clock = make()
    arb.heartbeat()
    arb.grace = 1.0
    arb.on_edge(1, "e1")
    clock.advance(0.5)
    arb.heartbeat()
    assert arb.poll()[0] == []
    clock.advance(0.6)
    arb.heartbeat()
    assert arb.poll()[0] == ["e1"]


# -- every stamp answered exactly once, whatever the interleaving ----------------------------------

EVENTS = st.lists(st.one_of(
    st.tuples(st.just("edge"), st.integers(0, 30)),
    st.tuples(st.just("cloud"), st.integers(0, 30)),
    st.tuples(st.just("heartbeat"), st.just(0)),
    st.tuples(st.just("poll"), st.just(0)),
    st.tuples(st.just("advance"), st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.3, 0.5])),
), max_size=120)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_every_stamp_answered_exactly_once(events):
    arb, clock = make()
    emitted = []
    edge_stamps, cloud_stamps = set(), set()
    seen_edge, seen_cloud = set(), set()
    for kind, value in events:
        if kind == "edge":
            if value in seen_edge:  # the edge predicts each frame once
                continue
            seen_edge.add(value)
            edge_stamps.add(value)
            emitted += arb.on_edge(value, ("edge", value))
        elif kind == "cloud":
            if value in seen_cloud:
                continue
            seen_cloud.add(value)
            cloud_stamps.add(value)
            emitted += arb.on_cloud(value, ("cloud", value))
        elif kind == "heartbeat":
            arb.heartbeat()
        elif kind == "poll":
            emitted += arb.poll()[0]
        else:
            clock.advance(value)
    clock.advance(10.0)  # cloud down, every wait over
    emitted += arb.poll()[0]

    per_stamp = Counter(stamp for _, stamp in emitted)
    assert all(n == 1 for n in per_stamp.values()), per_stamp
    assert set(per_stamp) == edge_stamps | cloud_stamps
    # A cloud answer is dropped only when that stamp was already answered.
    cloud_out = {s for src, s in emitted if src == "cloud"}
    assert arb.late_cloud == len(cloud_stamps - cloud_out)
    assert arb.poll() == ([], False)
