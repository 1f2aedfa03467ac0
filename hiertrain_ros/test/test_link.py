"""Unit tests of the link budget, the store-and-forward Outbox and the edge's bounded buffers.

The link budget is TokenBucket, the buffers DropOldestQueue and LabelMatcher; all run with a fake clock.
"""

import pickle
import threading

import pytest

from hiertrain_ros.core.buffers import DropOldestQueue, FairQueue, LabelMatcher
from hiertrain_ros.core.link import AckTracker, DiskSpill, Outbox, TokenBucket


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# -- TokenBucket -----------------------------------------------------------------------------------

def test_bucket_limits_rate_to_budget():
    clock = FakeClock()
    bucket = TokenBucket(rate_bps=1000, burst_bits=1000, clock=clock)
    # The initial burst lets 1000 bits through at once, then nothing.
    assert [bucket.try_consume(250) for _ in range(5)] == [True, True, True, True, False]
    clock.advance(0.1)  # 100 bits of credit: not enough for 250
    assert not bucket.try_consume(250)
    clock.advance(0.15)  # 250 bits now
    assert bucket.try_consume(250)
    assert not bucket.try_consume(1)


def test_bucket_long_run_throughput_matches_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate_bps=8000, burst_bits=8000, clock=clock)
    sent = 0
    for _ in range(10_000):  # 10 s in 1 ms ticks, always offering more than the budget
        while bucket.try_consume(500):
            sent += 500
        clock.advance(0.001)
    assert 8000 * 10 <= sent <= 8000 * 10 + 8000 + 500  # rate * time + at most one burst


def test_bucket_credit_is_capped_at_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate_bps=100, burst_bits=300, clock=clock)
    clock.advance(3600)  # an hour idle must not bank an hour of credit
    assert [bucket.try_consume(100) for _ in range(4)] == [True, True, True, False]


def test_bucket_rate_zero_is_unlimited():
    clock = FakeClock()
    bucket = TokenBucket(rate_bps=0, burst_bits=0, clock=clock)
    assert all(bucket.try_consume(10**12) for _ in range(100))


def test_oversized_message_goes_once_bucket_is_full_then_pays_its_debt():
    clock = FakeClock()
    bucket = TokenBucket(rate_bps=1000, burst_bits=1000, clock=clock)
    assert bucket.try_consume(5000)  # full bucket: the oversized message goes (else it never would)
    clock.advance(1.0)
    assert not bucket.try_consume(5000)  # its 4000-bit debt is paid before anything else goes
    assert not bucket.try_consume(1)
    clock.advance(4.0)  # 5 s after the send the bucket is full again
    assert bucket.try_consume(5000)


def test_oversized_message_waits_while_bucket_is_not_full():
    clock = FakeClock()
    bucket = TokenBucket(rate_bps=1000, burst_bits=1000, clock=clock)
    assert bucket.try_consume(600)
    assert not bucket.try_consume(5000)
    clock.advance(0.6)
    assert bucket.try_consume(5000)


def test_bucket_refuses_negative_settings():
    with pytest.raises(ValueError):
        TokenBucket(-1, 10)
    with pytest.raises(ValueError):
        TokenBucket(10, -1)


# -- Outbox ----------------------------------------------------------------------------------------

def unlimited():
    return TokenBucket(0, 0)


def test_outbox_sends_urgent_before_bulk_and_bulk_oldest_first():
    clock = FakeClock()
    box = Outbox(max_bits=1e9, max_age_s=100, clock=clock)
    box.put(10, "train1")
    box.put(10, "train2")
    box.put(10, "infer1", urgent=True)
    box.put(10, "train3")
    box.put(10, "infer2", urgent=True)
    assert len(box) == 5
    assert box.pop_sendable(unlimited()) == ["infer1", "infer2", "train1", "train2", "train3"]
    assert len(box) == 0 and box.bulk_bits == 0


def test_outbox_respects_bucket_and_keeps_order_across_calls():
    clock = FakeClock()
    box = Outbox(max_bits=1e9, max_age_s=100, clock=clock)
    bucket = TokenBucket(rate_bps=100, burst_bits=100, clock=clock)
    for i in range(4):
        box.put(50, f"train{i}")
    assert box.pop_sendable(bucket) == ["train0", "train1"]
    box.put(50, "infer", urgent=True)  # arrives while bulk is waiting: goes first next time
    clock.advance(1.0)
    assert box.pop_sendable(bucket) == ["infer", "train2"]
    clock.advance(0.5)
    assert box.pop_sendable(bucket) == ["train3"]
    assert box.dropped == 0 and box.expired == 0


def test_outbox_bulk_waits_while_urgent_is_blocked():
    clock = FakeClock()
    box = Outbox(max_bits=1e9, max_age_s=100, clock=clock)
    bucket = TokenBucket(rate_bps=100, burst_bits=100, clock=clock)
    assert bucket.try_consume(100)  # empty the bucket
    box.put(60, "infer", urgent=True)
    box.put(1, "tiny-train")
    clock.advance(0.3)  # 30 bits: neither the urgent item nor (behind it) the bulk one may go
    assert box.pop_sendable(bucket) == []
    clock.advance(0.35)  # 65 bits: the urgent item, then the bulk one behind it
    assert box.pop_sendable(bucket) == ["infer", "tiny-train"]


def test_outbox_max_bits_drops_oldest_bulk_and_counts():
    clock = FakeClock()
    box = Outbox(max_bits=100, max_age_s=100, clock=clock)
    for i in range(5):
        box.put(30, f"train{i}")
    # 150 bits offered, 100 allowed: the two oldest go.
    assert box.dropped == 2
    assert box.bulk_bits == 90
    box.put(30, "urgent", urgent=True)  # urgent items never count against max_bits
    assert box.dropped == 2
    assert box.pop_sendable(unlimited()) == ["urgent", "train2", "train3", "train4"]


def test_outbox_keeps_a_single_item_larger_than_max_bits():
    box = Outbox(max_bits=10, max_age_s=100, clock=FakeClock())
    box.put(1000, "big")
    assert len(box) == 1 and box.dropped == 0
    box.put(1, "small")
    assert box.dropped == 1
    assert box.pop_sendable(unlimited()) == ["small"]


def test_outbox_expires_old_items_and_counts():
    clock = FakeClock()
    box = Outbox(max_bits=1e9, max_age_s=10, urgent_age_s=1.0, clock=clock)
    box.put(10, "old-train")
    box.put(10, "old-infer", urgent=True)
    clock.advance(2.0)  # the inference answer is stale now, the training batch is not
    box.put(10, "new-train")
    box.expire()
    assert box.stale == 1 and box.expired == 0 and len(box) == 2
    clock.advance(9.0)  # old-train is 11 s old, new-train 9 s
    assert box.pop_sendable(unlimited()) == ["new-train"]
    assert box.expired == 1 and box.stale == 1 and box.dropped == 0
    assert box.bulk_bits == 0


def test_outbox_is_thread_safe_for_concurrent_puts():
    box = Outbox(max_bits=1e12, max_age_s=1e6)

    def put_many(tag):
        for i in range(2000):
            box.put(1, (tag, i))

    threads = [threading.Thread(target=put_many, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = box.pop_sendable(unlimited(), max_bulk=10_000)
    assert len(out) == 8000 and box.bulk_bits == 0
    for tag in range(4):  # per producer, oldest first
        assert [i for t, i in out if t == tag] == list(range(2000))


def test_outbox_flushes_a_backlog_a_few_items_at_a_time():
    box = Outbox(max_bits=1e12, max_age_s=1e6)
    for i in range(10):
        box.put(1, ("bulk", i))
    box.put(1, ("live", 0), urgent=True)
    first = box.pop_sendable(unlimited(), max_bulk=4)
    assert first == [("live", 0), ("bulk", 0), ("bulk", 1), ("bulk", 2), ("bulk", 3)]
    assert len(box) == 6


DISK_FULL = {"batch": 99}  # the disk refuses this one


def _dump(item) -> bytes:
    if item == DISK_FULL:
        raise OSError(28, "No space left on device")
    return pickle.dumps(item)


def _spill(tmp_path):
    return DiskSpill(tmp_path / "spill", _dump, pickle.loads, name_of=lambda item: f"{item['batch']:04d}")


def _spilled_box(tmp_path, clock, **kw):
    return Outbox(max_bits=kw.pop("max_bits", 1e9), max_age_s=kw.pop("max_age_s", 100), clock=clock,
                  spill=_spill(tmp_path), memory_bits=kw.pop("memory_bits", 20)), tmp_path / "spill"


def _batch(i):
    return {"batch": i}


def test_outbox_sends_resends_after_urgent_and_before_bulk_without_a_bulk_slot():
    box = Outbox(max_bits=1e9, max_age_s=100, clock=FakeClock())
    box.put(10, "train-new")
    box.put(10, "train-resent", resend=True)
    box.put(10, "infer", urgent=True)
    assert len(box) == 3
    # max_bulk 0 (the window is full) holds new batches back, never a resend.
    assert box.pop_sendable(unlimited(), max_bulk=0) == ["infer", "train-resent"]
    assert box.pop_sendable(unlimited(), max_bulk=1) == ["train-new"]


def test_ack_tracker_is_a_window_and_resends_what_stays_unacknowledged():
    clock = FakeClock()
    window = AckTracker(max_items=3, resend_after_s=2.0, clock=clock)
    assert window.room() == 3
    for seq in (1, 2, 3):
        window.sent(seq, 8, f"batch{seq}")
    assert window.room() == 0 and len(window) == 3
    window.ack([2, 99])  # an unknown seq (another edge's, an old one) is ignored
    assert window.room() == 1 and window.acked_seq == 2
    clock.advance(1.0)
    assert window.due() == []
    clock.advance(1.0)
    assert window.due() == [(8, "batch1"), (8, "batch3")]
    window.sent(1, 8, "batch1")  # the resend goes out: it keeps its one place in the window
    assert window.room() == 1 and window.resent == 2
    assert window.due() == []  # each resend restarts its wait
    with pytest.raises(ValueError, match="max_items"):
        AckTracker(max_items=0, resend_after_s=1.0)


def test_outbox_spills_beyond_memory_to_disk_and_sends_in_order(tmp_path):
    box, folder = _spilled_box(tmp_path, FakeClock())
    for i in range(6):
        box.put(10, _batch(i))
    assert box.spilled == 4 and len(list(folder.iterdir())) == 4, "two in memory (20 bits), four on disk"
    sent = box.pop_sendable(unlimited(), max_bulk=100)
    assert sent == [_batch(i) for i in range(6)]
    assert box.spilled == 0 and box.bulk_bits == 0
    assert len(list(folder.iterdir())) == 4, "a sent batch's file stays until it is acknowledged"
    for item in sent:
        box.acknowledged(item)
    assert list(folder.iterdir()) == []
    box.put(10, _batch(6))  # memory is free again
    assert box.spilled == 0


def test_spilled_items_count_against_the_limits_and_their_files_go(tmp_path):
    clock = FakeClock()
    box, folder = _spilled_box(tmp_path, clock, max_bits=50, max_age_s=10)
    for i in range(8):
        box.put(10, _batch(i))
    assert box.dropped == 3 and len(box) == 5 and len(list(folder.iterdir())) == 3
    clock.advance(11)
    box.expire()
    assert box.expired == 5 and len(box) == 0 and list(folder.iterdir()) == [] and box.spilled == 0


def test_discard_bulk_drops_the_batches_not_sent_keeps_resends_and_removes_their_files(tmp_path):
    box, folder = _spilled_box(tmp_path, FakeClock())
    for i in range(5):
        box.put(10, _batch(i))
    box.put(10, _batch(9), resend=True)
    box.put(10, "infer", urgent=True)
    assert box.discard_bulk() == 5 and box.discard_bulk() == 0
    assert list(folder.iterdir()) == [] and box.spilled == 0 and box.bulk_bits == 0
    assert box.holds_bulk(), "the resend stays"
    assert box.pop_sendable(unlimited(), max_bulk=100) == ["infer", _batch(9)]
    box.put(10, _batch(10))  # the memory accounting starts again from zero
    assert box.spilled == 0


def test_spill_survives_disk_errors_and_damaged_files(tmp_path):
    box, folder = _spilled_box(tmp_path, FakeClock(), memory_bits=0)
    box.put(10, _batch(0))
    next(folder.iterdir()).write_bytes(b"garbage")  # damaged on disk: dropped and counted
    box.put(10, _batch(1))
    box.put(10, DISK_FULL)  # it stays in memory
    assert box.spill_errors == 1 and box.spilled == 2 and len(list(folder.iterdir())) == 2
    assert box.pop_sendable(unlimited(), max_bulk=100) == [_batch(1), DISK_FULL]
    assert box.dropped == 1 and box.spill_errors == 2 and box.bulk_bits == 0 and box.spilled == 0


def test_spill_files_an_earlier_run_left_go_first_and_torn_ones_are_counted(tmp_path):
    box, folder = _spilled_box(tmp_path, FakeClock(), memory_bits=0)
    for i in (3, 1, 2, 7, 8):
        box.put(10, _batch(i))
    box.pop_sendable(unlimited(), max_bulk=1)  # sent, never acknowledged: its file stays too
    # The crash: one file torn half-way, one write interrupted before its rename, one of another run's model.
    torn = folder / "0007.spill"
    torn.write_bytes(torn.read_bytes()[:-3])
    (folder / "0009.spill.tmp").write_bytes(b"half a write")
    spill = _spill(tmp_path)
    recovered = spill.recover(keep=lambda item: item["batch"] != 8)
    assert [p.name for p in recovered] == ["0001.spill", "0002.spill", "0003.spill"]
    assert (spill.torn, spill.foreign) == (2, 1) and sorted(folder.iterdir()) == recovered
    box = Outbox(max_bits=1e9, max_age_s=100, clock=FakeClock(), spill=spill, memory_bits=0)
    box.put(10, _batch(10))  # made after the restart: after what the crash left
    box.take_over(recovered)
    assert box.recovered == 3 and box.spilled == 4
    assert box.pop_sendable(unlimited(), max_bulk=100) == [_batch(i) for i in (1, 2, 3, 10)]


def test_ack_tracker_returns_what_it_acknowledged():
    window = AckTracker(max_items=3, resend_after_s=2.0, clock=FakeClock())
    window.sent(1, 8, "batch1")
    assert window.ack([1, 1, 5]) == ["batch1"] and window.ack([1]) == []


# -- DropOldestQueue -------------------------------------------------------------------------------

def test_drop_oldest_queue_returns_what_it_evicts():
    q = DropOldestQueue(2)
    assert q.put("a") is None and q.put("b") is None
    assert q.put("c") == "a" and q.take(5) == ["b", "c"]


def test_drop_oldest_queue_is_bounded_and_counts_drops():
    q = DropOldestQueue(3)
    for i in range(10):
        q.put(i)
    assert len(q) == 3 and q.maxlen == 3
    assert q.dropped == 7
    assert q.take(2) == [7, 8]
    assert q.take(10) == [9]
    assert q.take(1) == []


def test_drop_oldest_queue_wait():
    q = DropOldestQueue(2)
    assert q.wait(0.01) is False
    threading.Timer(0.05, q.put, args=("x",)).start()
    assert q.wait(2.0) is True
    assert q.take(1) == ["x"]


def test_drop_oldest_queue_refuses_zero_length():
    with pytest.raises(ValueError):
        DropOldestQueue(0)


# -- FairQueue: (source, cost) items -----------------------------------------------------------------

def fair(maxlen=100, quantum=256):
    return FairQueue(maxlen, key=lambda item: item[0], cost=lambda item: item[1], quantum=quantum)


def test_fair_queue_gives_each_source_an_equal_share_of_the_cost():
    q = fair()
    for _ in range(40):
        q.put(("flood", 256))
    for _ in range(40):
        q.put(("robot", 16))
    served = q.take(34)
    # One 256-cost item of the flood per 16 of the robot's 16-cost ones, from the first round on.
    assert [s for s, _ in served[:17]].count("flood") == 1
    assert sum(c for s, c in served if s == "flood") == 2 * 256 and sum(c for s, c in served if s == "robot") == 32 * 16


def test_fair_queue_serves_a_lone_source_in_order_and_a_newcomer_at_once():
    q = fair(quantum=1)  # below the cost: a source earns credit over several rounds
    for i in range(5):
        q.put(("a", 3, i))
    assert [i for _, _, i in q.take(2)] == [0, 1]
    q.put(("b", 1, 0))
    assert q.take(2) == [("b", 1, 0), ("a", 3, 2)]  # the newcomer needs one round, "a" three per item
    assert [i for _, _, i in q.take(10)] == [3, 4] and len(q) == 0


def test_fair_queue_evicts_from_the_source_holding_the_most():
    q = fair(maxlen=4)
    q.put(("robot", 16, 0))
    for i in range(3):
        q.put(("flood", 256, i))
    assert q.put(("flood", 256, 3)) == ("flood", 256, 0)  # full: the flood loses its own oldest
    assert q.put(("robot", 16, 1)) == ("flood", 256, 1)
    assert q.dropped == 2 and len(q) == 4 and q.maxlen == 4
    assert sorted(i for s, _, i in q.take(10) if s == "robot") == [0, 1]


def test_fair_queue_draw_wait_and_bad_arguments():
    q = fair(maxlen=3)
    assert q.draw(1) is None and q.wait(0.01) is False
    threading.Timer(0.05, q.add, args=(("a", 1),)).start()
    assert q.wait(2.0) is True and q.draw(2) is None and q.draw(1) == [("a", 1)]
    for bad in (dict(maxlen=0), dict(quantum=0)):
        with pytest.raises(ValueError):
            fair(**bad)
    with pytest.raises(ValueError):
        q.draw(0)


# -- LabelMatcher ----------------------------------------------------------------------------------

def test_label_matcher_pairs_frame_then_label():
    m = LabelMatcher(10)
    assert m.add_frame(1, "f1") is None
    assert m.add_label(1, 7) == ("f1", 7)
    assert m.add_label(1, 7) is None  # the frame was consumed: a second label waits for a new frame


def test_label_matcher_pairs_label_then_frame():
    m = LabelMatcher(10)
    assert m.add_label(2, 3) is None
    assert m.add_frame(2, "f2") == ("f2", 3)
    assert m.frames_expired == 0 and m.labels_expired == 0


def test_label_matcher_interleaved_orders():
    m = LabelMatcher(100)
    pairs = []
    for s in range(50):
        first, second = (m.add_frame, m.add_label) if s % 2 else (m.add_label, m.add_frame)
        args = ((s, f"f{s}"), (s, s % 10)) if s % 2 else ((s, s % 10), (s, f"f{s}"))
        assert first(*args[0]) is None
        pairs.append(second(*args[1]))
    assert pairs == [(f"f{s}", s % 10) for s in range(50)]


def test_label_matcher_is_bounded_and_counts_expiries():
    m = LabelMatcher(4)
    for s in range(10):
        m.add_frame(s, f"f{s}")  # held-out frames: never labelled
    assert m.frames_expired == 6
    for s in range(100, 107):
        m.add_label(s, 1)  # labels whose frames never came
    assert m.labels_expired == 3
    # The oldest were evicted, the newest still match.
    assert m.add_label(0, 1) is None
    assert m.add_label(9, 2) == ("f9", 2)
    assert m.add_frame(106, "f106") == ("f106", 1)
    assert m.add_frame(100, "f100") is None  # its label was evicted


def test_the_emulated_link_queue_holds_a_weight_sync_when_the_split_moves():
    from hiertrain_ros.cli.launch import LARGEST_MESSAGE_BYTES, largest_message_bytes
    from hiertrain_ros.core.repartition import move_bytes_bound

    assert largest_message_bytes(None, {}) == LARGEST_MESSAGE_BYTES  # the default graph: a fixed split
    moving = {"*": {"split_policy": "linucb"}, "edge_node": {"split_candidates": "3,8"}}
    assert largest_message_bytes(None, moving) == move_bytes_bound("vgg16", 0.25, 10, [3, 8]) > 2 << 20
    scheduled = {"*": {"split_policy": "schedule", "split_point": 5}, "edge_node": {"split_schedule": "5@0,3@10"}}
    assert largest_message_bytes(None, scheduled) == move_bytes_bound("vgg16", 0.25, 10, [3, 5])


def test_link_rate_schedule_parses_changes_on_time_and_averages_while_up():
    from hiertrain_ros.cli.launch import RateSchedule, mean_rate_while_up
    from hiertrain_ros.core.runtime import parse_link_schedule

    assert parse_link_schedule("3g") == [(0.0, 1.1e6)]
    assert parse_link_schedule("4g@0,3g@60,1e6@120") == [(0.0, 5.85e6), (60.0, 1.1e6), (120.0, 1e6)]
    for bad in ("3g@5", "4g@0,3g@0", "4g@0,3g@soon", "5g@0"):
        with pytest.raises(ValueError):
            parse_link_schedule(bad)

    class FakeLink:
        rates = []

        def set_rate(self, rate, queue_bytes):
            self.rates.append(rate)

    link = FakeLink()
    rates = RateSchedule(link, parse_link_schedule("4g@0,3g@60,1e6@120"), t0=100.0)
    for now in (100.0, 159.0, 160.5, 170.0, 221.0):
        rates.tick(now)
    assert link.rates == [1.1e6, 1e6] and rates.applied == [(0.0, 5.85e6), (60.5, 1.1e6), (121.0, 1e6)]
    # 60 s at 4 Mbit/s and 60 s at 2 Mbit/s, with 30 s of the second down: (60*4 + 30*2) / 90.
    assert mean_rate_while_up([(0.0, 4e6), (60.0, 2e6)], [(70.0, 100.0)], 120.0) == pytest.approx(300e6 / 90)


def test_the_emulated_link_changes_rate_while_running():
    from hiertrain_ros.linkbench.netns import LinkEmulator, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"link emulation unavailable: {reason}")
    with LinkEmulator(1.1e6, queue_bytes=300_000) as link:
        link.set_rate(5.85e6, 1_500_000)
        assert link.rate_bps == 5.85e6 and "rate 5850Kbit" in link.qdisc_stats()
        link.set_rate(1e6)  # the queue stays
        assert link.queue_bytes == 1_500_000 and "rate 1Mbit" in link.qdisc_stats()


_SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 5599))
print("ready", flush=True)
c, _ = s.accept()
while c.recv(65536):
    pass
c.sendall(b"ok")
"""
_CLIENT = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], 5599))
t = time.monotonic()
c.sendall(bytes(int(sys.argv[2])))
c.shutdown(socket.SHUT_WR)
c.recv(2)
print(int(sys.argv[2]) * 8 / (time.monotonic() - t))
"""


def _goodput(mesh, src: str, dst: str, nbytes: int) -> float:
    """Bits/s of one TCP transfer from ``src`` to ``dst`` over their own link."""
    import subprocess
    import sys

    address = mesh.address(dst, src)
    server = subprocess.Popen(mesh.exec_prefix(dst) + [sys.executable, "-c", _SERVER, address],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(mesh.exec_prefix(src) + [sys.executable, "-c", _CLIENT, address, str(nbytes)],
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        return float(client.stdout)
    finally:
        server.kill()
        server.wait()


def test_the_three_party_mesh_gives_each_pair_its_own_rate():
    from hiertrain_ros.linkbench.netns import MeshEmulator, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"link emulation unavailable: {reason}")
    rates = {("device", "edge"): 4e6, ("edge", "cloud"): 1e6, ("device", "cloud"): 2e6}
    with MeshEmulator(rates) as mesh:
        for (a, b), rate in rates.items():
            for src, dst in ((a, b), (b, a)):  # shaped both ways: gradients come back over the links
                got = _goodput(mesh, src, dst, int(rate / 8 * 1.5))  # 1.5 s of the link
                assert 0.6 * rate < got < 1.05 * rate, (src, dst, got, rate)
        mesh.set_rate("cloud", "edge", 2e6)
        assert 1.2e6 < _goodput(mesh, "edge", "cloud", 375_000) < 2.1e6
    with pytest.raises(ValueError, match="rate"):
        MeshEmulator({("device", "edge"): 1e6})


def test_outage_schedule_cuts_and_restores_on_time():
    from hiertrain_ros.cli.launch import OutageSchedule, parse_outages

    calls = []

    class FakeLink:  # records what the schedule asks of the real emulator
        def set_link(self, up):
            calls.append(up)

    cuts = OutageSchedule(FakeLink(), parse_outages(["5:2", "1:1"]), t0=100.0)
    for now in (100.5, 101.0, 101.5, 102.0, 104.0, 105.0, 106.0):
        cuts.tick(now)
    cuts.finish(106.5)  # stopped during the second cut: the link comes back
    assert calls == [False, True, False, True]
    assert cuts.done == [(1.0, 2.0), (5.0, 6.5)]
    with pytest.raises(ValueError):
        parse_outages(["1:5", "3:1"])
    with pytest.raises(ValueError):
        parse_outages(["soon"])
