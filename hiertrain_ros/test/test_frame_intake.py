"""Frame intake on the edge (issue 14).

A camera faster than the edge trains has most of its frames dropped unused; taking one in must not convert it.  The
edge holds a frame of the model's input size as it came (a view of the message's data) and converts only the batches
it trains on or answers, in one call each.
"""

import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time

from hiertrain_ros import conversions
from hiertrain_ros.core import data
from hiertrain_ros.core.data import frames_to_tensor, held_frame, held_to_samples, held_to_tensor


@pytest.fixture
def conversions_seen(monkeypatch):
    """Return the number of frames given to each frames_to_tensor call from now on."""
    seen, real = [], data.frames_to_tensor

    def counting(images, *args, **kwargs):
        seen.append(len(images))
        return real(images, *args, **kwargs)

    monkeypatch.setattr(data, "frames_to_tensor", counting)
    return seen


def _frames(n, size=32, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def test_a_frame_of_the_input_size_is_held_as_it_came(conversions_seen):
    msg = conversions.image_msg(_frames(1)[0], Time(sec=1))
    frame = conversions.frame_from_msg(msg)
    held = held_frame(frame)
    assert held is frame and held.dtype == np.uint8 and conversions_seen == []
    assert np.shares_memory(held, np.frombuffer(msg.data, dtype=np.uint8)), "a view of the message, no copy"


def test_a_frame_of_another_size_is_resized_at_once_so_a_held_frame_stays_small(conversions_seen):
    held = held_frame(_frames(1, size=64)[0])
    assert isinstance(held, torch.Tensor) and held.shape == (3, 32, 32) and conversions_seen == [1]


def test_batches_convert_once_and_equal_the_frame_by_frame_conversion(conversions_seen):
    small, large = _frames(5), _frames(2, size=64, seed=1)
    expected = torch.cat([frames_to_tensor(f[None]) for f in small + large])
    conversions_seen.clear()
    mixed = small[:3] + [held_frame(large[0])] + small[3:] + [held_frame(large[1])]
    conversions_seen.clear()
    batch = held_to_tensor(mixed)
    assert conversions_seen == [5], "the uint8 frames of a batch in one call"
    assert torch.equal(batch, expected[[0, 1, 2, 5, 3, 4, 6]])
    samples = held_to_samples([(f, i) for i, f in enumerate(small)])
    assert [y for _, y in samples] == list(range(5)) and torch.equal(torch.stack([x for x, _ in samples]),
                                                                     expected[:5])
    assert samples[0][0].untyped_storage().nbytes() == 3 * 32 * 32 * 4, "each sample owns its storage"


@pytest.mark.system
def test_the_edge_node_counts_dropped_frames_and_converts_only_what_it_trains_on_or_answers(ros_env,
                                                                                            conversions_seen):
    """On the node: 20 labelled frames into a buffer of 8, every 5th answered; a frame too large is refused."""
    import rclpy
    from sensor_msgs.msg import Image

    from hiertrain_ros.edge_node import EdgeNode

    rclpy.init(args=["--ros-args", "-p", "width:=0.25", "-p", "buffer_size:=8", "-p", "batch_size:=4",
                     "-p", "predict_every:=5", "-p", "infer_batch:=16"])
    try:
        node = EdgeNode()
        node._stop.set()  # the worker stops: this test takes its turns
        for thread in node._threads:
            thread.join(5.0)
        conversions_seen.clear()
        for i, frame in enumerate(_frames(20)):
            stamp = Time(sec=100, nanosec=i)
            node.on_image(conversions.image_msg(frame, stamp))
            node.on_label(conversions.label_msg(stamp, i % 10))
        huge = Image(height=5000, width=5000, encoding="rgb8", step=15000)
        node.on_image(huge)
        status = node.status()
        assert status["frames"] == 20 and node.rejections.counts["image"] == 1
        assert status["dropped_train_buffer"] == 12 and status["buffer_fill"] == 8
        assert status["infer_queue"] == 4 and status["consumed"] == 16, "every 5th frame waits for its answer"
        assert conversions_seen == [], "taking frames in (and dropping them) converts none"
        node.work_once()
        assert conversions_seen == [4, 4], "one conversion for the 4 answered, one for the batch trained"
        assert sum(node.exit_answers) == 4 and node.trainer.step == 1 and node.status()["consumed"] == 20
        node.close()
        node.destroy_node()
    finally:
        rclpy.shutdown()


@pytest.mark.system
def test_executors_by_name(ros_env):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from hiertrain_ros.edge_node import EdgeNode
    from hiertrain_ros.ros_common import make_executor

    assert EdgeNode.executor_kind == "single", "events is experimental in rclpy: an option, not the default (issue 14)"
    rclpy.init()
    try:
        assert isinstance(make_executor("single"), SingleThreadedExecutor)
        assert hasattr(make_executor("events"), "spin_once")
        with pytest.raises(ValueError, match="executor must be one of"):
            make_executor("multi")
        import rclpy.experimental
        with pytest.MonkeyPatch.context() as mp:  # an rclpy without it (before Jazzy): a clear error
            mp.delattr(rclpy.experimental, "EventsExecutor")
            with pytest.raises(ValueError, match="use executor: single"):
                make_executor("events")
    finally:
        rclpy.shutdown()


@pytest.mark.system
@pytest.mark.parametrize("min_interval_s", [0.0, 0.05])
def test_the_intake_thread_takes_a_burst_in_order_under_the_nodes_remapping(ros_env, min_interval_s):
    """Intake: a remapped topic's 40 messages, published at once, all reach the callback in its own thread."""
    import threading
    import time

    import rclpy
    from std_msgs.msg import UInt64

    from hiertrain_ros.ros_common import RELIABLE_QOS, Intake

    rclpy.init(args=["--ros-args", "-r", "camera:=/robot/camera", "-r", "__node:=renamed"])
    owner = rclpy.create_node("owner")
    sender = rclpy.create_node("sender", use_global_arguments=False)
    try:
        got, threads = [], set()

        def take(msg):
            got.append(msg.data)
            threads.add(threading.current_thread().name)

        intake = Intake(owner, min_interval_s)
        intake.subscribe(UInt64, "camera", take, RELIABLE_QOS)
        assert ("renamed_intake", "/") in owner.get_node_names_and_namespaces(), "named after the node, remapped"
        pub = sender.create_publisher(UInt64, "/robot/camera", RELIABLE_QOS)
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(40):  # within the history's depth of 50: none may be overwritten before it is taken
            pub.publish(UInt64(data=i))
        while len(got) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == list(range(40)) and threads == {"intake"}, "no executor spins the owner: the intake took them"
        intake.close()
        assert ("renamed_intake", "/") not in owner.get_node_names_and_namespaces()
        pub.publish(UInt64(data=99))
        time.sleep(0.3)
        assert got[-1] == 39, "nothing is taken after close"
    finally:
        rclpy.shutdown()


@pytest.mark.system
def test_edge_and_cloud_take_their_timed_messages_under_the_events_executor(ros_env):
    """Under the EventsExecutor (which fails on a callback taking MessageInfo) the timed subscriptions take messages."""
    import time

    import rclpy
    from hiertrain_interfaces.msg import FeatureBatch, Heartbeat

    from hiertrain_ros.cloud_node import CloudNode
    from hiertrain_ros.edge_node import EdgeNode
    from hiertrain_ros.ros_common import RELIABLE_QOS, TOPICS, heartbeat_qos, make_executor

    rclpy.init(args=["--ros-args", "-p", "width:=0.25", "-p", "executor:=events"])
    try:
        edge, cloud = EdgeNode(), CloudNode()
        executor = make_executor("events")
        for node in (edge, cloud):
            executor.add_node(node)
        sender = rclpy.create_node("sender", use_global_arguments=False)
        beat = sender.create_publisher(Heartbeat, TOPICS["heartbeat"], heartbeat_qos(edge.config.heartbeat_timeout_s))
        features = sender.create_publisher(FeatureBatch, TOPICS["features"], RELIABLE_QOS)
        deadline = time.monotonic() + 20
        while edge._last_heartbeat is None or not cloud.rejections.total:
            assert time.monotonic() < deadline, "no heartbeat taken by the edge or no batch by the cloud"
            beat.publish(Heartbeat())
            features.publish(FeatureBatch(robot_id="other", model_hash=1))  # another model: refused and counted
            executor.spin_once(timeout_sec=0.1)  # raised SystemError with a MessageInfo callback
        assert edge.executor_name == cloud.executor_name == "events"
        for node in (edge, cloud):
            node.close()
    finally:
        rclpy.shutdown()
