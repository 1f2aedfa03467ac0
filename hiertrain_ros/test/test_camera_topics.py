"""pip users with a robot's camera.

``hiertrain launch edge --camera-topic T --no-camera-sim`` feeds the edge node from T, and ``hiertrain replay --remap``
plays a bag whose images are on another topic (a RealSense's /camera/color/image_raw).
"""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from hiertrain_ros import bag_files
from hiertrain_ros.cli import main as cli_main
from waiting import wait_for

HIERTRAIN = [sys.executable, "-c", "import sys; from hiertrain_ros.cli import main; sys.exit(main())"]
ROBOT_CAMERA = "/camera/color/image_raw"


@pytest.mark.system
@pytest.mark.slow
def test_pip_launch_edge_reads_the_robot_camera_without_the_simulator(ros_env, tmp_path):
    from sensor_msgs.msg import Image

    from hiertrain_ros.ros_common import CAMERA_QOS
    from hiertrain_ros.runner import MonitorThread

    proc = subprocess.Popen(HIERTRAIN + ["launch", "edge", "--camera-topic", ROBOT_CAMERA, "--no-camera-sim",
                                         "--duration", "240", "--log-dir", str(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monitor = MonitorThread()
    try:
        mon = monitor.node
        camera = mon.create_publisher(Image, ROBOT_CAMERA, CAMERA_QOS)
        wait_for(lambda: camera.get_subscription_count() > 0, 120, f"the edge node on {ROBOT_CAMERA}")
        # An endpoint can be discovered before its node's name (ros_discovery_info) arrives: the name
        # reads _NODE_NAME_UNKNOWN_ until then, so wait for the names rather than read them once.
        readers = lambda: {i.node_name for i in mon.get_subscriptions_info_by_topic(ROBOT_CAMERA)}  # noqa: E731
        wait_for(lambda: "_NODE_NAME_UNKNOWN_" not in readers(), 30, "the camera readers' node names")
        assert readers() == {"edge_node_intake"}, "the edge node's intake (ros_common.Intake) alone reads the camera"
        assert "camera_sim" not in mon.get_node_names()
        assert not mon.get_publishers_info_by_topic("/camera/image_raw")
        frame = np.random.default_rng(0).integers(0, 256, 32 * 32 * 3, dtype=np.uint8)

        def publish_and_check() -> bool:
            msg = Image(height=32, width=32, encoding="rgb8", step=96, data=frame.tobytes())
            msg.header.stamp = mon.get_clock().now().to_msg()
            camera.publish(msg)
            return mon.counts["edge_predictions"] >= 5

        wait_for(publish_and_check, 120, "edge predictions of the robot camera's frames")
    finally:
        monitor.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "edge_node, fallback_node with" in out


def _robot_bag(tmp_path, frames: int, truth: bool = True):
    """Return a bag made by ``bag make``, with its images moved to the robot camera's topic.

    Written with rosbags (``bag_files.BagWriter``); without ``truth``, a robot's own recording: its camera and
    its labels only (every 5th frame unlabelled), no evaluation topic.
    """
    made, robot = tmp_path / "made", tmp_path / "robot"
    bag_files.make_bag(made, subset=frames, rate_hz=30.0, holdout_every=5)
    with bag_files.BagWriter(robot) as writer:
        for topic, msgtype, stamp, raw in bag_files.read_messages(made):
            if topic == bag_files.TOPIC_TRUTH and not truth:
                continue
            topic = ROBOT_CAMERA if topic == bag_files.TOPIC_IMAGE else topic
            writer.add_topic(topic, msgtype)
            writer.write(topic, stamp, raw)
    return robot


def _replay_robot_bag(bag, tmp_path):
    """Run ``hiertrain replay`` of a robot bag (images on the robot camera's topic); return (process, report)."""
    report_file = tmp_path / "replay.json"
    proc = subprocess.run(HIERTRAIN + ["replay", str(bag), "--remap", f"{ROBOT_CAMERA}:=/camera/image_raw",
                                       "--set", "width=0.125", "--set", "edge_node.batch_size=8",
                                       "--json", str(report_file), "--log-dir", str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(report_file.read_text())


def test_replay_of_a_bag_with_images_elsewhere_says_how_to_remap(tmp_path, capsys):
    bag = _robot_bag(tmp_path, 3)
    assert cli_main(["replay", str(bag)]) == 2
    assert f"add --remap {ROBOT_CAMERA}:=/camera/image_raw" in capsys.readouterr().err
    assert cli_main(["replay", str(bag), "--remap", ROBOT_CAMERA]) == 2
    assert "--remap expects FROM:=TO" in capsys.readouterr().err


@pytest.mark.system
@pytest.mark.slow
def test_replay_remaps_the_robot_camera_topic(ros_env, tmp_path):
    bag = _robot_bag(tmp_path, 40)
    _, report = _replay_robot_bag(bag, tmp_path)
    assert report["player"]["frames"] == 40 and report["player"]["edge_steps"] == 32 // 8
    published = report["player"]["published"]
    assert published["/camera/image_raw"] == 40 and ROBOT_CAMERA not in published
    assert not any(report["drops"].values()), report["drops"]
    assert report["edge_evaluated"] == report["cloud_evaluated"] == 8


@pytest.mark.system
def test_bag_play_remaps_topics(ros_env, tmp_path, capsys):
    import rclpy
    from hiertrain_interfaces.msg import Label

    from hiertrain_ros.ros_common import RECORD_QOS, Spinner

    bag = _robot_bag(tmp_path, 10)  # 8 labelled frames
    rclpy.init()
    try:
        spinner = Spinner(rclpy.create_node("remap_listener"))
        stamps = []
        spinner.node.create_subscription(Label, "/robot/labels", lambda m: stamps.append(m.header.stamp), RECORD_QOS)
        try:
            proc = subprocess.run(HIERTRAIN + ["bag", "play", str(bag), "--max", "--wait-subscribers", "60",
                                               "--topics", "/hiertrain/labels",
                                               "--remap", "/hiertrain/labels:=/robot/labels"],
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            assert "not acknowledged" not in proc.stderr, proc.stderr[-2000:]  # the player waits for the acks
            wait_for(lambda: len(stamps) == 8, 10, "8 labels on /robot/labels")
        finally:
            spinner.close()
    finally:
        rclpy.try_shutdown()
    assert cli_main(["bag", "play", str(bag), "--remap", "/nowhere:=/x"]) == 2
    assert "has no topic(s) /nowhere to remap" in capsys.readouterr().err


@pytest.mark.system
@pytest.mark.slow
def test_replay_of_a_bag_with_images_and_labels_only_reports_prequential_accuracy(ros_env, tmp_path):
    bag = _robot_bag(tmp_path, 40, truth=False)
    proc, report = _replay_robot_bag(bag, tmp_path)
    assert report["edge_evaluated"] == report["cloud_evaluated"] == 0  # no truth topic: no held-out figures
    # Test, then train: each path answered each of the 32 labelled frames before it was trained on.
    adaptation = report["adaptation"]
    assert {p: v["frames"] for p, v in adaptation["prequential"].items()} == {"edge": 32, "cloud": 32, "output": 32}
    assert all(v["accuracy"] is not None for v in adaptation["prequential"].values())
    assert adaptation["prequential_by_segment"]["0"]["output"]["frames"] == 32
    assert "Prequential accuracy per segment" in proc.stdout
