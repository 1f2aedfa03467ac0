"""Message authentication (core.auth): HMAC-SHA256 with the nonce and counter inside, and the replay window."""

import pytest

from hiertrain_ros.core.auth import ReplayWindow, Signer, Verifier, load_key

KEY = bytes(range(32))


def test_a_signed_message_passes_once_and_any_change_is_refused():
    signer, verifier = Signer(KEY, "edge r1"), Verifier(KEY)
    nonce, counter, mac = signer.sign("features", b"payload")
    verifier.check("features", "edge r1", nonce, counter, mac, b"payload")
    with pytest.raises(ValueError, match="replayed"):
        verifier.check("features", "edge r1", nonce, counter, mac, b"payload")  # a recorded copy, sent again
    nonce, counter, mac = signer.sign("features", b"payload")
    for kind, sender, n, c, payload in (("labels", "edge r1", nonce, counter, b"payload"),  # another topic
                                        ("features", "edge r2", nonce, counter, b"payload"),  # another sender
                                        ("features", "edge r1", bytes(16), counter, b"payload"),  # another run
                                        ("features", "edge r1", nonce, counter + 1, b"payload"),  # another counter
                                        ("features", "edge r1", nonce, counter, b"payloaD")):  # another body
        with pytest.raises(ValueError, match="bad MAC"):
            verifier.check(kind, sender, n, c, mac, payload)
    with pytest.raises(ValueError, match="bad MAC"):
        Verifier(bytes(32)).check("features", "edge r1", nonce, counter, mac, b"payload")  # another key
    with pytest.raises(ValueError, match="unsigned"):
        verifier.check("features", "edge r1", b"", 0, b"", b"payload")
    verifier.check("features", "edge r1", nonce, counter, mac, b"payload")  # the genuine one still passes
    assert verifier.refused == {"replayed": 1, "bad MAC": 5, "unsigned": 1}


def test_a_restarted_sender_draws_a_new_nonce_and_is_accepted():
    verifier = Verifier(KEY)
    first, second = Signer(KEY, "cloud"), Signer(KEY, "cloud")
    assert first.nonce != second.nonce
    for signer in (first, second):  # both start counting at 1
        verifier.check("heartbeat", "cloud", *signer.sign("heartbeat", b"hb"), b"hb")


def test_the_replay_window_takes_late_messages_once_and_refuses_older_ones():
    window = ReplayWindow(window=8)
    assert [window.accept("s", c) for c in (1, 3, 2, 3, 10)] == [True, True, True, False, True]
    assert window.accept("s", 5) and not window.accept("s", 5)  # late, within the window: once
    assert not window.accept("s", 2)  # 8 behind the newest: too old to tell
    assert window.accept("s", 100) and window.accept("s", 99)
    bounded = ReplayWindow(window=8, max_streams=2)
    for stream in ("a", "b", "c"):
        bounded.accept(stream, 1)
    assert bounded.accept("a", 1)  # "a" was forgotten (least recently used)


def test_a_stream_met_midway_refuses_what_came_before():
    window = ReplayWindow(window=1024)
    assert window.accept("s", 50)  # this receiver started after the sender's first 49 messages
    assert not any(window.accept("s", c) for c in range(1, 50))  # a recording of those is refused
    assert window.accept("s", 52) and window.accept("s", 51) and not window.accept("s", 51)


def test_key_files_are_checked(tmp_path):
    (tmp_path / "key").write_bytes(KEY)
    assert load_key(tmp_path / "key") == KEY
    (tmp_path / "short").write_bytes(b"123")
    with pytest.raises(ValueError, match="at least 32"):
        load_key(tmp_path / "short")
    with pytest.raises(ValueError, match="cannot read"):
        load_key(tmp_path / "missing")


def test_message_bytes_are_canonical_and_leave_out_the_signature():
    from builtin_interfaces.msg import Time
    from hiertrain_interfaces.msg import Auth, FeatureBatch
    from rclpy.serialization import deserialize_message, serialize_message

    from hiertrain_ros.ros_common import message_bytes

    msg = FeatureBatch(robot_id="r1", seq=7, shape=[2, 1, 1, 1], data=b"\x01\x02", labels=[3, 4],
                       frame_stamps=[Time(sec=1), Time(sec=2)], scale=0.1)  # float32 on the wire
    unsigned = message_bytes(msg)
    msg.auth = Auth(sender="r1", nonce=[1] * 16, counter=1, mac=[2] * 32)
    received = deserialize_message(serialize_message(msg), FeatureBatch)
    assert message_bytes(received) == message_bytes(msg) == unsigned  # the same fields, whatever CDR's padding
    for field, value in (("seq", 8), ("robot_id", "r2"), ("labels", [3, 5]), ("scale", 0.5)):
        changed = deserialize_message(serialize_message(msg), FeatureBatch)
        setattr(changed, field, value)
        assert message_bytes(changed) != unsigned, field
    changed.frame_stamps[1].nanosec = 1
    assert message_bytes(changed) != unsigned
