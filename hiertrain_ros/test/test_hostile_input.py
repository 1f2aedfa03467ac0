"""Hostile input.

Every message the nodes read is fuzzed (only ValueError may escape the conversions, and what they accept is consistent),
then the live graph is flooded with malformed messages and must keep training, answering and counting the rejections.
"""

import math
import time
import tracemalloc

import numpy as np
import pytest
import torch
import zstandard
from builtin_interfaces.msg import Time
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hiertrain_interfaces.msg import FeatureBatch, Label
from sensor_msgs.msg import Image

from hiertrain_ros import conversions
from hiertrain_ros.core import codec
from hiertrain_ros.core.config import CloudConfig, EdgeConfig
from hiertrain_ros.core.frames import ENCODINGS, MAX_SIDE, decode_frame
from flooding import FLOOD_SEQS, flood_cloud
from waiting import wait_for

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U32 = 2**32 - 1


# -- images ----------------------------------------------------------------------------------------

@st.composite
def images(draw):
    msg = Image()
    if draw(st.booleans()):  # near-valid: small, consistent, then maybe perturbed
        msg.encoding = draw(st.sampled_from(sorted(ENCODINGS)))
        msg.height, msg.width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
        msg.step = msg.width * ENCODINGS[msg.encoding] + draw(st.sampled_from([0, 0, 0, 1, 7, -1]))
        msg.step = max(0, msg.step)
        size = msg.step * msg.height + draw(st.sampled_from([0, 0, 0, -1, 1, -msg.step]))
        msg.data = draw(st.binary(min_size=max(0, size), max_size=max(0, size)))
    else:  # anything the message type can carry
        msg.encoding = draw(st.one_of(st.sampled_from(["rgb8", "bgr8", "mono8", "RGB8", "rgba8", "16UC1", "",
                                                       "rgb8\x00", " rgb8", "yuv422"]), st.text(max_size=16)))
        dims = st.one_of(st.integers(0, 40), st.sampled_from([MAX_SIDE, MAX_SIDE + 1, U32]), st.integers(0, U32))
        msg.height, msg.width = draw(dims), draw(dims)
        msg.step = draw(st.one_of(st.integers(0, 200), st.integers(0, U32)))
        msg.data = draw(st.binary(max_size=4096))
    return msg


@FUZZ
@given(images())
def test_frame_from_msg_only_raises_value_error_and_accepts_consistently(msg):
    try:
        frame = conversions.frame_from_msg(msg)
    except ValueError:
        event("rejected")
        return
    event("accepted")
    h, w, ch = msg.height, msg.width, ENCODINGS[msg.encoding]
    assert frame.shape == (h, w, 3) and frame.dtype == np.uint8
    assert len(msg.data) == msg.step * h and msg.step >= w * ch
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(h, msg.step)[:, :w * ch].reshape(h, w, ch)
    expected = {"rgb8": rows, "bgr8": rows[:, :, ::-1], "mono8": np.repeat(rows, 3, axis=2)}[msg.encoding]
    assert np.array_equal(frame, expected)


def test_frame_round_trip_of_a_camera_image():
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    msg = conversions.image_msg(frame, Time(sec=1, nanosec=2))
    assert np.array_equal(conversions.frame_from_msg(msg), frame)


def test_max_side_refuses_larger_frames_and_is_capped():
    msg = conversions.image_msg(np.zeros((480, 640, 3), np.uint8), Time(sec=1))
    assert conversions.frame_from_msg(msg, 640).shape == (480, 640, 3)
    with pytest.raises(ValueError, match=r"must be in 1\.\.480, got 480x640"):
        conversions.frame_from_msg(msg, 480)
    with pytest.raises(ValueError, match=f"must be in 1..{MAX_SIDE}"):  # a larger max_side does not lift the cap
        decode_frame("mono8", MAX_SIDE + 1, 1, 1, bytes(MAX_SIDE + 1), max_side=10 * MAX_SIDE)
    for bad in (0, MAX_SIDE + 1):
        with pytest.raises(ValueError, match="max_frame_side"):
            EdgeConfig(max_frame_side=bad)


# -- labels ----------------------------------------------------------------------------------------

@FUZZ
@given(st.integers(-2**15, 2**15 - 1), st.integers(-2**31, 2**31 - 1) | st.just(0), st.integers(0, U32) | st.just(0))
def test_label_from_msg_only_raises_value_error(class_id, sec, nanosec):
    msg = Label()
    msg.class_id = class_id
    msg.header.stamp = Time(sec=sec, nanosec=nanosec)
    try:
        stamp, label = conversions.label_from_msg(msg, 10)
    except ValueError:
        assert not 0 <= class_id < 10 or sec < 0 or nanosec >= 1_000_000_000 or (sec, nanosec) == (0, 0)
        return
    assert 0 <= label < 10 and label == class_id
    assert stamp == sec * 1_000_000_000 + nanosec
    assert sec >= 0 and nanosec < 1_000_000_000 and (sec, nanosec) != (0, 0)


# -- feature batches -------------------------------------------------------------------------------

FLOATS = st.one_of(st.floats(0, 10), st.sampled_from([0.0, math.nan, math.inf, -math.inf, -1.0, 1e-45]),
                   st.floats(allow_nan=True, allow_infinity=True, width=32))


@st.composite
def feature_batches(draw):
    msg = FeatureBatch()
    n, c, h, w = (draw(st.integers(1, 4)) for _ in range(4))
    shape = [n, c, h, w]
    if draw(st.integers(0, 3)) == 0:  # hostile shape: any length, huge or zero dims
        shape = draw(st.lists(st.one_of(st.integers(0, 8), st.sampled_from([codec.MAX_DIM, codec.MAX_DIM + 1, U32]),
                                        st.integers(0, U32)), max_size=6))
    msg.shape = shape
    msg.bits = draw(st.one_of(st.sampled_from(codec.VALID_BITS), st.integers(0, 255)))
    declared = math.prod(shape) if len(shape) == 4 else n * c * h * w
    size = codec.packed_size(declared, msg.bits) if declared <= 4096 else draw(st.integers(0, 64))
    size = max(0, size + draw(st.sampled_from([0, 0, 0, 1, -1])))
    msg.data = draw(st.binary(min_size=size, max_size=size))
    msg.coding = draw(st.sampled_from([FeatureBatch.CODING_NONE] * 3 + [FeatureBatch.CODING_ZSTD] * 2 + [2, 255]))
    if msg.coding == FeatureBatch.CODING_ZSTD and draw(st.booleans()):  # a real frame, of the right size or not
        msg.data = zstandard.ZstdCompressor().compress(bytes(msg.data) + bytes(draw(st.sampled_from([0, 0, 1, 4096]))))
    msg.scale = draw(FLOATS)
    msg.zero_point = draw(FLOATS)
    n_labels = (shape[0] if shape and shape[0] <= 64 else n) + draw(st.sampled_from([0, 0, 0, 1, -1]))
    msg.labels = draw(st.lists(st.integers(-2**15, 2**15 - 1), min_size=max(0, n_labels), max_size=max(0, n_labels)))
    msg.purpose = draw(st.one_of(st.sampled_from([FeatureBatch.PURPOSE_TRAIN, FeatureBatch.PURPOSE_INFER]),
                                 st.integers(0, 255)))
    msg.encoder_version = draw(st.one_of(st.just(codec.ENCODER_VERSION), st.integers(0, U32)))
    msg.split_point = draw(st.integers(0, 255))
    msg.seq = draw(st.integers(0, 2**64 - 1))
    msg.model_hash = draw(st.integers(0, U32))
    n_stamps = max(0, n_labels + draw(st.sampled_from([0, 0, 1, -1])))
    msg.frame_stamps = [Time(sec=draw(st.integers(-2**31, 2**31 - 1)), nanosec=draw(st.integers(0, U32)))
                        for _ in range(min(n_stamps, 70))]
    return msg


@FUZZ
@given(feature_batches())
def test_payload_from_msg_only_raises_value_error_and_decodes_to_declared_shape(msg):
    try:
        payload, purpose = conversions.payload_from_msg(msg)
    except ValueError:
        event("rejected")
        return
    event("accepted")
    assert purpose in (FeatureBatch.PURPOSE_TRAIN, FeatureBatch.PURPOSE_INFER)
    assert payload.shape == tuple(msg.shape) and len(payload.shape) == 4
    assert len(payload.labels) == payload.num_samples
    if purpose == FeatureBatch.PURPOSE_INFER:
        assert len(payload.frame_stamps) == payload.num_samples
    else:
        assert len(payload.frame_stamps) in (0, payload.num_samples)
    features = codec.decode(payload)
    assert tuple(features.shape) == payload.shape and features.dtype == torch.float32


def test_payload_round_trip_of_an_edge_batch():
    features = torch.rand(3, 4, 5, 5)
    payload = codec.encode(features, bits=4, split_point=3, labels=[1, 2, 3], model_hash=codec.model_hash("m"), seq=7,
                           frame_stamps=((1, 2), (3, 4), (5, 6)))
    msg = conversions.feature_msg(payload, Time(sec=5, nanosec=6), conversions.PURPOSE_INFER)
    back, purpose = conversions.payload_from_msg(msg)
    assert purpose == conversions.PURPOSE_INFER and back.frame_stamps == payload.frame_stamps
    assert back.model_hash == codec.model_hash("m") and back.seq == 7 and list(back.labels) == [1, 2, 3]
    assert torch.allclose(codec.decode(back), codec.decode(payload))


def test_sample_limit_and_training_frame_stamps_refused_with_the_reason():
    payload = codec.encode(torch.rand(3, 4, 5, 5), bits=4, split_point=3, model_hash=codec.model_hash("m"))
    train = conversions.feature_msg(payload, Time(), conversions.PURPOSE_TRAIN)
    assert conversions.payload_from_msg(train, max_samples=3)[0].num_samples == 3
    with pytest.raises(ValueError, match="3 samples is above the limit of 2"):
        conversions.payload_from_msg(train, max_samples=2)
    train.frame_stamps = [Time(sec=1), Time(sec=2)]
    with pytest.raises(ValueError, match=r"no frame stamps or one per sample \(3\), got 2"):
        conversions.payload_from_msg(train)
    train.frame_stamps.append(Time(sec=3))
    assert conversions.payload_from_msg(train)[0].frame_stamps == ((1, 0), (2, 0), (3, 0))


def test_huge_declared_dims_rejected_fast_without_allocating():
    images_ = []
    for h, w, step in ((U32, U32, U32), (MAX_SIDE, MAX_SIDE, MAX_SIDE * 3), (MAX_SIDE + 1, 1, 3), (1, U32, U32)):
        msg = Image(encoding="rgb8", height=h, width=w, step=step)
        msg.data = b"\x00" * 64
        images_.append(msg)
    batches = []
    for shape in ([codec.MAX_DIM] * 4, [U32] * 4, [2**14] * 4, [1, 1, 1, U32], [U32] * 100):
        msg = FeatureBatch(bits=8, scale=1.0, encoder_version=codec.ENCODER_VERSION)
        msg.shape = shape
        msg.data = b"\x00" * 64
        msg.labels = [0]
        batches.append(msg)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        for _ in range(50):
            for msg in images_:
                with pytest.raises(ValueError):
                    conversions.frame_from_msg(msg)
            for msg in batches:
                with pytest.raises(ValueError):
                    conversions.payload_from_msg(msg)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"rejecting huge headers allocated {peak} bytes"
    assert elapsed < 2.0, f"450 rejections took {elapsed:.2f} s"


def test_accepted_payload_cannot_poison_the_cloud():
    from hiertrain_ros.core.models import SplitSpec, build_split
    from hiertrain_ros.core.training import CloudTrainer, OptimConfig

    spec = SplitSpec("vgg16", 3, width=0.125)
    _, cloud = build_split(spec, seed=0)
    trainer = CloudTrainer(cloud, spec, OptimConfig())
    n, (c, h, w) = 2, cloud.feature_shape
    msg = FeatureBatch(model_hash=codec.model_hash(spec.model_id), encoder_version=codec.ENCODER_VERSION,
                       split_point=3, bits=4, scale=3.0e38, zero_point=0.0, purpose=FeatureBatch.PURPOSE_TRAIN)
    msg.shape = [n, c, h, w]
    msg.data = b"\xff" * codec.packed_size(n * c * h * w, 4)
    msg.labels = [1, 2]
    try:
        payload, _ = conversions.payload_from_msg(msg)
        trainer.train_step(payload)
    except ValueError:
        pass  # refusing the batch (at validation or at the step) is the fix
    assert all(torch.isfinite(p).all() for p in cloud.parameters()), "one hostile batch made the cloud model NaN"


# -- the live graph under a flood of malformed messages --------------------------------------------


FAST = {"camera_sim": {"rate_hz": 100.0}, "edge_node": {"batch_size": 16}}


def _bad_images(n):
    def img(encoding, h, w, step, size):
        msg = Image(encoding=encoding, height=h, width=w, step=step)
        msg.header.stamp = Time(sec=1, nanosec=n)
        msg.data = b"\x7f" * size
        return msg
    kinds = [lambda: img("rgba8", 32, 32, 128, 32 * 128),       # unsupported encoding
             lambda: img("", 32, 32, 96, 32 * 96),
             lambda: img("rgb8", 32, 32, 96, 32 * 96 - 5),      # step * height != len(data)
             lambda: img("rgb8", 32, 32, 96, 100),              # truncated
             lambda: img("rgb8", 32, 32, 90, 32 * 90),          # step < width * 3
             lambda: img("rgb8", 100_000, 100_000, 300_000, 64),  # oversized dims
             lambda: img("mono8", U32, 1, 1, 16),
             lambda: img("bgr8", 0, 0, 0, 0)]
    return [kinds[i % len(kinds)]() for i in range(n)]


def _bad_labels(n):
    out = []
    for i in range(n):
        msg = Label(class_id=[-1, 10, 32767, -32768, 3][i % 5])
        msg.header.stamp = Time(sec=0, nanosec=0) if i % 5 == 4 else Time(sec=5, nanosec=i)
        out.append(msg)
    return out


def _bad_features(n, real: FeatureBatch):
    """Mutations of a real training batch taken off the wire, one defect each."""
    def mutate(**fields):
        msg = FeatureBatch()
        for name in FeatureBatch.get_fields_and_field_types():
            setattr(msg, name, getattr(real, name))
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg
    shape = list(real.shape)
    over = CloudConfig.max_batch_samples + 1
    kinds = [dict(bits=3), dict(bits=0), dict(shape=shape[:3]), dict(shape=[U32] * 4),
             dict(shape=[shape[0], shape[1] + 1, shape[2], shape[3]]),   # codec-valid? no: data length
             dict(scale=math.nan), dict(zero_point=math.inf), dict(model_hash=codec.model_hash("resnet18-evil")),
             dict(encoder_version=99), dict(purpose=7), dict(purpose=FeatureBatch.PURPOSE_INFER, frame_stamps=[]),
             dict(labels=[99] * shape[0]), dict(data=b""),
             dict(frame_stamps=[Time()] * (shape[0] - 1)),  # a training batch: none, or one per sample
             dict(shape=[over, *shape[1:]], labels=[0] * over,  # valid, but above the cloud's max_batch_samples
                  data=bytes(codec.packed_size(over * math.prod(shape[1:]), real.bits)),
                  coding=FeatureBatch.CODING_NONE),
             dict(coding=9), dict(coding=FeatureBatch.CODING_NONE),  # the zstd frame taken for packed codes
             dict(data=zstandard.ZstdCompressor().compress(bytes(1 << 24)))]  # a 16 MiB frame in 500 bytes
    # (A wrong split_point alone is not refused at the door: see test_cloud_refuses_wrong_split_point_at_the_door.)
    # A fresh seq each, so that no batch is dropped as a duplicate before its defect is looked at.
    return [mutate(seq=10**12 + i, **kinds[i % len(kinds)]) for i in range(n)]


def _diagnostics(store):
    """{node name: {key: value}} of the latest /diagnostics of each node."""
    return {name: dict(values) for name, values in store.items()}


def _count(diag, node, key):
    return int(diag.get(node, {}).get(key, 0))


@pytest.mark.system
@pytest.mark.slow
def test_live_nodes_survive_and_count_malformed_messages(ros_env, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data

    from hiertrain_ros.ros_common import RELIABLE_QOS
    from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread

    graph = Graph(GRAPHS["edge_cloud"], overrides=FAST, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    diag, real = {}, []

    def on_diag(msg):
        for status in msg.status:
            diag[status.hardware_id] = [(kv.key, kv.value) for kv in status.values]

    def on_features(msg):
        evil = codec.model_hash("resnet18-evil")
        if msg.purpose == FeatureBatch.PURPOSE_TRAIN and not real and msg.model_hash != evil:
            real.append(msg)

    mon.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    mon.create_subscription(FeatureBatch, "/hiertrain/features", on_features, RELIABLE_QOS)
    image_pub = mon.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    label_pub = mon.create_publisher(Label, "/hiertrain/labels", RELIABLE_QOS)
    feature_pub = mon.create_publisher(FeatureBatch, "/hiertrain/features", RELIABLE_QOS)
    graph.start()
    try:
        wait_for(lambda: mon.counts["cloud_metrics"] >= 5 and mon.counts["output_predictions"] >= 20 and real
                 and "edge_node" in diag and "cloud_node" in diag, 60, "the graph training and answering")
        wait_for(lambda: image_pub.get_subscription_count() >= 1 and label_pub.get_subscription_count() >= 2
                 and feature_pub.get_subscription_count() >= 2, 10, "subscribers of the hostile publishers")
        before = _diagnostics(diag)
        assert real[0].coding == FeatureBatch.CODING_ZSTD  # the default: the cloud has been training coded batches

        n = 280
        flood_start = time.monotonic()
        bad_images, bad_labels, bad_features = _bad_images(n), _bad_labels(n), _bad_features(n, real[0])
        for i in range(n):
            image_pub.publish(bad_images[i])
            label_pub.publish(bad_labels[i])
            feature_pub.publish(bad_features[i])
            time.sleep(0.004)  # ~250/s of each: a flood, but one the best-effort image queue can take
        flood_end = time.monotonic()

        metrics_then, outputs_then = mon.counts["cloud_metrics"], mon.counts["output_predictions"]
        wait_for(lambda: mon.counts["cloud_metrics"] >= metrics_then + 10
                 and mon.counts["output_predictions"] >= outputs_then + 50, 30,
                 "training and answers to continue after the flood")

        def rejected_since() -> dict:
            after = _diagnostics(diag)
            return {key: _count(after, node, key) - _count(before, node, key)
                    for node, key in (("edge_node", "rejected_image"), ("edge_node", "rejected_label"),
                                      ("cloud_node", "rejected_features"))}

        # Labels and features are reliable: wait until the nodes' diagnostics (1 Hz) count every one; a node busy
        # training works through the flood's backlog for a while (once: 271 of 280 counted after a fixed 2.5 s).
        wait_for(lambda: rejected_since()["rejected_label"] >= n and rejected_since()["rejected_features"] >= n, 20,
                 "every malformed label and feature counted", lambda: str(rejected_since()))
        time.sleep(1.5)  # one more diagnostics period: a count above n would show
        rejected = rejected_since()
        after = _diagnostics(diag)
        assert all(graph.alive().values()), graph.alive()
        print(f"\nsent {n} of each kind in {flood_end - flood_start:.1f} s; rejected: {rejected}")
        # Images are best effort (the subscriber keeps 5): most, not all, reach the edge.
        assert rejected["rejected_image"] >= n // 2, rejected
        assert rejected["rejected_label"] == n, rejected
        assert rejected["rejected_features"] == n, rejected
        assert _count(after, "cloud_node", "steps") > _count(before, "cloud_node", "steps")
        assert _count(after, "edge_node", "steps") > _count(before, "edge_node", "steps")
        assert all(math.isfinite(x) for x in mon.cloud_losses[-10:]), mon.cloud_losses[-10:]
        codes = graph.stop()
        assert all(code == 0 for code in codes.values()), codes
        # A malformed message is refused at the door, never blows up in a worker thread.
        for node in ("edge_node", "cloud_node"):
            log = (tmp_path / "logs" / f"{node}.log").read_text(errors="replace")
            assert "worker:" not in log, [line for line in log.splitlines() if "worker:" in line][:3]
    finally:
        graph.stop()
        monitor.close()


def _set_parameters(node, target, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = node.create_client(SetParameters, f"/{target}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=30.0), f"{target} parameter service"
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        future = client.call_async(request)
        wait_for(future.done, 10, "set_parameters reply")
        return future.result().results
    finally:
        node.destroy_client(client)


def _get_parameter(node, target, name):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    client = node.create_client(GetParameters, f"/{target}/get_parameters")
    try:
        assert client.wait_for_service(timeout_sec=30.0)
        future = client.call_async(GetParameters.Request(names=[name]))
        wait_for(future.done, 10, "get_parameters reply")
        return parameter_value_to_python(future.result().values[0])
    finally:
        node.destroy_client(client)


@pytest.mark.system
@pytest.mark.slow
def test_live_edge_refuses_bad_parameters(ros_env, tmp_path):
    from hiertrain_ros.runner import Graph, MonitorThread

    graph = Graph(("edge_node",), log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    graph.start()
    try:
        [result] = _set_parameters(mon, "edge_node", predict_every=0)
        assert not result.successful and "predict_every" in result.reason, result
        [result] = _set_parameters(mon, "edge_node", predict_every="two")
        assert not result.successful and "predict_every" in result.reason, result
        [result] = _set_parameters(mon, "edge_node", predict_every=-3.5)
        assert not result.successful, result
        [result] = _set_parameters(mon, "edge_node", batch_size=64)
        assert not result.successful and "start-up" in result.reason, result
        [result] = _set_parameters(mon, "edge_node", model="resnet18")  # the ROS name of SplitSpec.arch
        assert not result.successful and "model is read at start-up" in result.reason, result
        [result] = _set_parameters(mon, "edge_node", link_budget_bps=-1.0)
        assert not result.successful and "link_budget_bps" in result.reason, result
        assert _get_parameter(mon, "edge_node", "predict_every") == 1
        assert _get_parameter(mon, "edge_node", "batch_size") == 32

        [result] = _set_parameters(mon, "edge_node", predict_every=2)
        assert result.successful, result.reason
        assert _get_parameter(mon, "edge_node", "predict_every") == 2
        [result] = _set_parameters(mon, "edge_node", link_budget_bps=2_000_000)  # int for a float: coerced
        assert result.successful, result.reason
        assert graph.alive() == {"edge_node": True}
        codes = graph.stop()
        assert codes == {"edge_node": 0}, codes
    finally:
        graph.stop()
        monitor.close()


def test_cloud_refuses_wrong_split_point_at_the_door(ros_env):
    import rclpy

    from hiertrain_ros.cloud_node import CloudNode
    from hiertrain_ros.core.models import build_split

    rclpy.init()
    node = None
    try:
        node = CloudNode()
        edge, _ = build_split(node.config.spec(), seed=0)
        features, _ = edge(torch.randn(2, 3, 32, 32))
        payload = codec.encode(features, bits=node.config.bits, split_point=node.config.split_point + 1,
                               labels=[1, 2], model_hash=node.trainer.model_hash, seq=1)
        node.on_features(conversions.feature_msg(payload, Time(sec=1), conversions.PURPOSE_TRAIN))
        assert node.rejections.counts["features"] == 1
        assert len(node.train_queue) == 0
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()


@pytest.mark.system
@pytest.mark.slow
def test_a_flood_of_valid_large_batches_does_not_starve_the_robot(ros_env, tmp_path):
    """A publisher under a robot id of its own floods the cloud with valid batches of the largest size it takes.

    Far more than the cloud can train: under one FIFO the robot's batches waited behind hundreds of them (minutes),
    or were evicted.  Shared per robot, the robot's batches made during the flood are trained within seconds of it.
    """
    from hiertrain_ros.ros_common import RELIABLE_QOS
    from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread

    graph = Graph(GRAPHS["edge_cloud"], overrides=FAST, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    real = []
    mon.create_subscription(FeatureBatch, "/hiertrain/features",
                            lambda m: real.append(m) if m.purpose == FeatureBatch.PURPOSE_TRAIN and not real else None,
                            RELIABLE_QOS)
    feature_pub = mon.create_publisher(FeatureBatch, "/hiertrain/features", RELIABLE_QOS)
    graph.start()
    try:
        wait_for(lambda: len(mon.trained_seqs["cloud"]) >= 5 and real and feature_pub.get_subscription_count() >= 2,
                 90, "the cloud training")
        start, end = flood_cloud(feature_pub, real[0])
        during = {seq for seq, t in list(mon.edge_batch_times.items()) if start <= t <= end}
        trained_flood = [s for s in mon.trained_seqs["cloud"] if s in FLOOD_SEQS]
        wait_for(lambda: during <= mon.trained_by_cloud(), 10, "the robot's batches made during the flood trained",
                 lambda: f"{len(during - mon.trained_by_cloud())} of {len(during)} not; flood trained "
                         f"{len(trained_flood)}, cloud {mon.status.get('cloud_node')}")
        assert len(during) > 20 and trained_flood, (len(during), len(trained_flood))  # both were served
    finally:
        graph.stop()
        monitor.close()


@pytest.mark.system
@pytest.mark.parametrize("max_frame_side", [480, 640])
def test_live_edge_bounds_the_frame_size(ros_env, tmp_path, max_frame_side):
    """A 640x480 camera: refused and counted by an edge whose ``max_frame_side`` is below 640, answered at 640."""
    from diagnostic_msgs.msg import DiagnosticArray

    from hiertrain_ros.runner import Graph, MonitorThread

    graph = Graph(("camera_sim", "edge_node"), log_dir=tmp_path / "logs",
                  overrides={"camera_sim": {"width_px": 640, "height_px": 480, "rate_hz": 20.0},
                             "edge_node": {"max_frame_side": max_frame_side}})
    monitor = MonitorThread()
    mon = monitor.node
    diag = {}
    mon.create_subscription(DiagnosticArray, "/diagnostics",
                            lambda msg: diag.update({s.hardware_id: [(kv.key, kv.value) for kv in s.values]
                                                     for s in msg.status}), 50)
    graph.start()
    try:
        refused = max_frame_side < 640
        if refused:
            wait_for(lambda: _count(_diagnostics(diag), "edge_node", "rejected_image") >= 20, 60,
                     "the edge refusing the camera's frames", lambda: _diagnostics(diag).get("edge_node"))
            assert mon.counts["edge_predictions"] == 0
        else:
            wait_for(lambda: mon.counts["edge_predictions"] >= 20 and "edge_node" in diag, 60,
                     "the edge answering the camera's frames")
            assert _count(_diagnostics(diag), "edge_node", "rejected_image") == 0
        log = (tmp_path / "logs" / "edge_node.log").read_text(errors="replace")
        assert ("height and width must be in 1..480, got 480x640" in log) == refused
        codes = graph.stop()
        assert all(code == 0 for code in codes.values()), codes
    finally:
        graph.stop()
        monitor.close()
