"""Bags.

Make/info/read-back bit-exact, lossless recording from live topics, a recording cut short by SIGINT, deterministic
lockstep replay, and clear errors for bad bags.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hiertrain_ros import bag_files
from hiertrain_ros.cli import main as cli_main

HIERTRAIN = [sys.executable, "-c", "import sys; from hiertrain_ros.cli import main; sys.exit(main())"]


def _deserialize_rclpy(raw, cls):
    from rclpy.serialization import deserialize_message

    return deserialize_message(bytes(raw), cls)


# -- make / info / read back (no ROS graph) --------------------------------------------------------
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_make_info_and_read_back_bit_exact(tmp_path, storage, capsys):
    from hiertrain_interfaces.msg import Label
    from sensor_msgs.msg import Image

    out = tmp_path / "bag"
    start = 1_700_000_000_123_456_789
    assert cli_main(["bag", "make", "--data", "fashion-mnist", "--subset", "60", "--rate", "20", "--out", str(out),
                     "--storage", storage, "--holdout-every", "4", "--start-ns", str(start)]) == 0
    assert cli_main(["bag", "info", str(out), "--json", str(tmp_path / "info.json")]) == 0
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["storage"] == storage
    assert {t["topic"]: (t["type"], t["count"]) for t in info["topics"]} == {
        "/camera/image_raw": ("sensor_msgs/msg/Image", 60),
        "/hiertrain/labels": ("hiertrain_interfaces/msg/Label", 45),
        "/hiertrain/eval/truth": ("hiertrain_interfaces/msg/Label", 15)}
    assert info["duration_s"] == pytest.approx(59 / 20, abs=1e-5)
    assert "/camera/image_raw" in capsys.readouterr().out

    expected = list(bag_files.camera_sequence("fashion-mnist", 60, 4, seed=0))
    messages = list(bag_files.read_messages(out))
    images = [m for m in messages if m[0] == "/camera/image_raw"]
    labels = [m for m in messages if m[0] != "/camera/image_raw"]
    assert len(images) == 60 and len(labels) == 60
    for i, ((_, _, t, raw), (frame, label, held)) in enumerate(zip(images, expected)):
        stamp = start + round(i * 1e9 / 20)
        assert t == stamp == bag_files.header_stamp_ns(raw)
        msg = _deserialize_rclpy(raw, Image)  # what a ROS node receives from ros2 bag play
        assert (msg.height, msg.width, msg.encoding, msg.step) == (32, 32, "rgb8", 96)
        assert bytes(msg.data) == frame.tobytes()  # bit-exact
        np.testing.assert_array_equal(bag_files.deserialize(raw, bag_files.IMAGE_TYPE).data.reshape(32, 32, 3), frame)
        topic, _, t_label, raw_label = labels[i]
        assert topic == ("/hiertrain/eval/truth" if held else "/hiertrain/labels")
        lbl = _deserialize_rclpy(raw_label, Label)
        assert lbl.class_id == label and bag_files.header_stamp_ns(raw_label) == stamp and t_label > stamp

    # The bag carries full definitions, including the project's own type (hash = ROS's).
    with bag_files.open_bag(out) as reader:
        conn = next(c for c in reader.connections if c.topic == "/hiertrain/labels")
        assert "int16 class_id" in conn.msgdef.data and "std_msgs/Header" in conn.msgdef.data
        assert conn.digest.startswith("RIHS01_")


# -- errors -----------------------------------------------------------------------------------------
def _broken_bags(tmp_path):
    good = tmp_path / "good"
    bag_files.make_bag(good, subset=10, storage="mcap")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "metadata.yaml").write_text((good / "metadata.yaml").read_text())
    data = (good / "good.mcap").read_bytes()
    (truncated / "good.mcap").write_bytes(data[: len(data) // 2])
    garbage_db = tmp_path / "garbage_db"
    bag_files.make_bag(garbage_db, subset=5, storage="sqlite3")
    (garbage_db / "garbage_db.db3").write_bytes(os.urandom(8192))
    no_meta = tmp_path / "no_meta"
    no_meta.mkdir()
    bad_yaml = tmp_path / "bad_yaml"
    bad_yaml.mkdir()
    (bad_yaml / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")
    return {"truncated": truncated, "garbage_db": garbage_db, "no_meta": no_meta, "bad_yaml": bad_yaml}


def test_bag_topics_are_the_graphs_topics():
    # bag_files stays free of rclpy, so it spells the names out; they must be ros_common's.
    from hiertrain_ros.ros_common import TOPICS

    assert (bag_files.TOPIC_IMAGE, bag_files.TOPIC_LABELS, bag_files.TOPIC_TRUTH) == tuple(
        "/" + TOPICS[k] for k in ("image", "labels", "truth"))


def test_missing_and_malformed_bags_give_a_clear_error(tmp_path, capsys):
    for verb in (["bag", "info"], ["bag", "play"], ["replay"]):
        assert cli_main(verb + [str(tmp_path / "nowhere")]) == 2
        err = capsys.readouterr().err
        assert f"hiertrain {verb[0]}: error: no bag at" in err and "nowhere" in err
    for name, path in _broken_bags(tmp_path).items():
        for verb in (["bag", "info"], ["replay"]):
            assert cli_main(verb + [str(path)]) == 2, name
            err = capsys.readouterr().err
            assert err.startswith(f"hiertrain {verb[0]}: error: ") and str(path) in err, (name, err)
            assert "Traceback" not in err and len(err.splitlines()) == 1
    # Writing over an existing bag is refused too.
    assert cli_main(["bag", "make", "--subset", "3", "--out", str(tmp_path / "no_meta")]) == 2
    assert "exists already" in capsys.readouterr().err


def test_bag_play_of_a_broken_bag_exits_non_zero_from_the_shell(tmp_path, ros_env):
    broken = _broken_bags(tmp_path)["truncated"]
    proc = subprocess.run(HIERTRAIN + ["bag", "play", str(broken)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "hiertrain bag: error:" in proc.stderr and "Traceback" not in proc.stderr


# -- recorder (live topics) -------------------------------------------------------------------------
def _start_recorder(out, topics, storage):
    return subprocess.Popen(HIERTRAIN + ["bag", "record", "--topics", *topics, "--out", str(out),
                                         "--storage", storage],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_matched(publishers, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while any(p.get_subscription_count() == 0 for p in publishers):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "recorder never subscribed"
        time.sleep(0.05)
    time.sleep(0.3)


@pytest.fixture
def rcl_node(ros_env):
    import rclpy

    # A 640x480 frame fits the publisher's shared-memory segment thanks to the large-data
    # profile conftest sets for the session.
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bag_test_publisher", context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.mark.system
@pytest.mark.slow
def test_recorder_keeps_every_message_in_order(tmp_path, rcl_node):
    from hiertrain_interfaces.msg import Label
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
    label_pub = rcl_node.create_publisher(Label, "/test/labels", qos)
    image_pub = rcl_node.create_publisher(Image, "/test/image", qos)
    out = tmp_path / "rec"
    proc = _start_recorder(out, ["/test/labels", "test/image"], "mcap")
    try:
        _wait_matched([label_pub, image_pub], proc)
        n = 300
        for i in range(n):
            label = Label(class_id=i % 10)
            label.header.stamp.sec, label.header.stamp.nanosec = 1000, i
            label_pub.publish(label)
            image = Image(height=4, width=4, encoding="rgb8", step=12)
            image.header.stamp.sec, image.header.stamp.nanosec = 2000, i
            image.data = bytes([i % 256]) * 48
            image_pub.publish(image)
        # Reliable: wait until the recorder has acknowledged everything before stopping it.
        from rclpy.duration import Duration

        assert label_pub.wait_for_all_acked(Duration(seconds=20))
        assert image_pub.wait_for_all_acked(Duration(seconds=20))
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, stdout
    info = bag_files.bag_info(out)
    assert {t["topic"]: t["count"] for t in info["topics"]} == {"/test/labels": n, "/test/image": n}, stdout
    got = [(topic, bag_files.header_stamp_ns(raw)) for topic, _, _, raw in bag_files.read_messages(out)]
    for topic, sec in (("/test/labels", 1000), ("/test/image", 2000)):
        assert [s for t, s in got if t == topic] == [sec * 1_000_000_000 + i for i in range(n)]  # order kept
    label = bag_files.deserialize(next(raw for t, _, _, raw in bag_files.read_messages(out, ["/test/labels"])),
                                  bag_files.LABEL_TYPE)
    assert label.class_id == 0


@pytest.mark.system
@pytest.mark.slow
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_recording_cut_short_by_sigint_is_readable(tmp_path, rcl_node, storage):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    pub = rcl_node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    out = tmp_path / "cut"
    proc = _start_recorder(out, ["/camera/image_raw"], storage)
    frame = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
    frame.data = bytes(640 * 480 * 3)
    try:
        _wait_matched([pub], proc)
        t0 = time.monotonic()
        for i in range(60):  # 2 s at 30 Hz; SIGINT lands in the middle of the stream
            frame.header.stamp.nanosec = i
            pub.publish(frame)
            if i == 40:
                proc.send_signal(signal.SIGINT)
            time.sleep(max(0.0, t0 + (i + 1) / 30 - time.monotonic()))
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout
    info = bag_files.bag_info(out)  # a full read: raises if anything is half-written
    count = info["topics"][0]["count"]
    assert 35 <= count <= 60, stdout  # every frame up to the signal (41), and it stopped soon after
    for _, _, _, raw in bag_files.read_messages(out):
        image = bag_files.deserialize(raw, bag_files.IMAGE_TYPE)
        assert (image.height, image.width, len(image.data)) == (480, 640, 640 * 480 * 3)


# -- replay -----------------------------------------------------------------------------------------
@pytest.mark.system
@pytest.mark.slow
def test_replay_same_seed_gives_identical_numbers(tmp_path, ros_env):
    """Also with authentication on in the second run: the player signs the labels, and every node takes them."""
    bag = tmp_path / "small"
    bag_files.make_bag(bag, subset=200, rate_hz=30.0, storage="mcap", holdout_every=5)
    key = tmp_path / "key"
    key.write_bytes(bytes(range(32)))
    reports = []
    for run, extra in enumerate((["--answers", str(tmp_path / "answers.json")], ["--set", f"auth_key_file={key}"])):
        report_file = tmp_path / f"replay{run}.json"
        proc = subprocess.run(HIERTRAIN + ["replay", str(bag), "--seed", "3", "--set", "width=0.125",
                                           "--set", "edge_node.batch_size=16", "--json", str(report_file),
                                           "--log-dir", str(tmp_path / f"logs{run}")] + extra,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        reports.append(json.loads(report_file.read_text()))
    first, second = reports
    # Nothing refused with the key, and every frame's answers recorded without it.
    assert not [k for node in second["node_status"].values() for k in node if k.startswith("rejected_")]
    frames = json.loads((tmp_path / "answers.json").read_text())["frames"]
    assert sum("label" in f for f in frames) == 160 and sum("truth" in f for f in frames) == 40
    assert all({"edge", "cloud", "output"} <= set(f) for f in frames if "label" in f)
    assert first["drops"] == second["drops"] == {"frames_not_consumed": 0, "held_out_truth_missing": 0,
                                                 "edge_predictions_missing": 0, "cloud_predictions_missing": 0,
                                                 "lockstep_timeouts": 0}
    assert first["player"]["frames"] == 200 and first["player"]["edge_steps"] == 160 // 16
    assert first["player"]["cloud_steps"] == 10
    assert first["edge_evaluated"] == first["cloud_evaluated"] == 40
    for key in ("edge_accuracy", "cloud_accuracy", "accuracy_over_time", "predictions_digest",
                "edge_loss_last", "cloud_loss_last"):
        assert first[key] == second[key], key
    assert len(first["accuracy_over_time"]) == 10
    # Prequential: every labelled frame answered by each path before it was trained on.
    preq = first["adaptation"]["prequential"]
    assert {p: preq[p]["frames"] for p in preq} == {"edge": 160, "cloud": 160, "output": 160}
    for p in ("edge", "cloud"):  # the output's choice may depend on when labels arrive
        assert preq[p] == second["adaptation"]["prequential"][p]
    assert sum(row["held_out"] for row in first["accuracy_over_time"]) == 40


@pytest.mark.system
@pytest.mark.slow
def test_replay_does_not_wait_for_cloud_answers_to_frames_the_edge_kept(tmp_path, ros_env):
    """offload_policy never (issue 12): the edge answers every frame alone, so lockstep must not wait for the cloud."""
    bag = tmp_path / "small"
    bag_files.make_bag(bag, subset=64, rate_hz=30.0, storage="mcap", holdout_every=4)
    report_file = tmp_path / "replay.json"
    proc = subprocess.run(HIERTRAIN + ["replay", str(bag), "--set", "width=0.125", "--set", "edge_node.batch_size=16",
                                       "--set", "edge_node.offload_policy=never", "--timeout", "10",
                                       "--json", str(report_file), "--log-dir", str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["drops"] == {"frames_not_consumed": 0, "held_out_truth_missing": 0, "edge_predictions_missing": 0,
                               "cloud_predictions_missing": 0, "lockstep_timeouts": 0}, report["drops"]
    # No frame went to the cloud for an answer, and it still trained on every batch.
    assert report["counts"].get("infer_batches", 0) == 0 and report["counts"].get("cloud_predictions", 0) == 0
    assert report["player"]["cloud_steps"] == 48 // 16
    assert report["edge_evaluated"] == 16


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_labels_of_a_bag_from_before_the_auth_field_still_decode(tmp_path, storage):
    """A user's bag whose Label has no ``auth`` (nor ``segment``): the player reads it with the bag's definition."""
    import numpy as np
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("std_msgs/Header header\nint16 class_id\n", bag_files.LABEL_TYPE))
    Label, Header, Time = (store.types[n] for n in (bag_files.LABEL_TYPE, "std_msgs/msg/Header",
                                                    "builtin_interfaces/msg/Time"))
    out = tmp_path / "old"
    with Writer(out, version=Writer.VERSION_LATEST, storage_plugin=bag_files.storage_plugin(storage)) as writer:
        conn = writer.add_connection(bag_files.TOPIC_LABELS, bag_files.LABEL_TYPE, typestore=store)
        for i in range(3):
            msg = Label(header=Header(stamp=Time(sec=7, nanosec=i), frame_id=""), class_id=np.int16(i + 4))
            writer.write(conn, i, store.serialize_cdr(msg, bag_files.LABEL_TYPE))
    decode = bag_files.label_decoders(out)[bag_files.TOPIC_LABELS]
    got = [decode(raw) for _, _, _, raw in bag_files.read_messages(out)]
    assert got == [(7_000_000_000 + i, i + 4, 0) for i in range(3)]
