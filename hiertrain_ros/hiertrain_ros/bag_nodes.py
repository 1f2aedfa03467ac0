"""rclpy side of the bags.

A recorder node (raw serialized messages straight into the bag) and a player node (original timing, or lockstep with the
edge/cloud nodes).

Lockstep protocol (``Player(lockstep=True)``), one camera frame at a time, in bag order:

1. publish the image; wait until the edge's ``hiertrain/edge/consumed`` count covers it
   (for a predicted frame that is after the early-exit prediction, so every inference
   batch is exactly one frame and its quantization scale is the same every run);
2. if the frame was predicted and a cloud is up, wait for the cloud's prediction of it
   (``hiertrain/cloud/prediction`` with the frame's stamp), or for the edge's saying it kept the
   frame (``offload_policy`` unsure or never: ``reason`` NOT_OFFLOADED, no cloud answer comes);
3. publish the frame's label(s) (a label logged before its frame is held back until the
   frame is consumed, so the edge always predicts a frame before training on it), and
   held-out truth as it comes;
4. when the labels sent complete a training batch (every ``batch_size``-th label), wait
   for the edge's training step (``hiertrain/edge/metrics``) and then the cloud's step on
   it (``hiertrain/cloud/metrics`` or the heartbeat's step count).

Nothing is sent while the edge or cloud works on the previous frame, so no queue ever
overflows and the order of every inference and training step is fixed by the bag.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from builtin_interfaces.msg import Time

from . import bag_files, conversions
from .bag_files import TOPIC_IMAGE, TOPIC_LABELS
from .ros_common import (BEST_EFFORT_RECORD_QOS, BEST_EFFORT_WATCH_QOS, CAMERA_QOS, PLAY_QOS, RECORD_QOS, TOPICS,
                         MessageAuth, Rejections, StopFlag)

# Fast DDS's default shared-memory segment (512 KiB) cannot carry a 640x480 rgb8 frame
# (921,654 bytes): such a sample goes over UDP in 64 KiB fragments, and with best effort a
# single lost fragment loses the frame (measured: 1 of 60 frames at 30 Hz on localhost).
# What counts is the *publishing* participant's segment, so the player uses this profile
# (and so should a camera driver publishing large best-effort images; see docs/bags.md).



def message_class(msgtype: str):
    """Return the rclpy class of ``pkg/msg/Name``; ValueError when it is not importable here."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        raise ValueError(f"bad message type name {msgtype!r}")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {msgtype} is not available to rclpy here: {exc}") from None


def play_qos(msgtype: str) -> QoSProfile:
    return CAMERA_QOS if msgtype in bag_files.SENSOR_TYPES else PLAY_QOS


# -- recorder ---------------------------------------------------------------------------------------
class Recorder(Node):
    """Writes every serialized message of the wanted topics to the bag with its receive time.

    It subscribes (raw=True) to each wanted topic once it has a publisher, with the type the graph reports.
    """

    def __init__(self, writer: bag_files.BagWriter, topics, name: str = "hiertrain_recorder"):
        super().__init__(name)
        self.writer = writer
        self.wanted = [bag_files.normalize_topic(t) for t in topics]
        self.subs: dict[str, object] = {}
        self.types: dict[str, str] = {}
        self.received: Counter = Counter()
        self.skipped: dict[str, str] = {}
        self._discovery = self.create_timer(0.1, self.discover)

    def discover(self) -> None:
        if len(self.subs) + len(self.skipped) == len(self.wanted):
            return
        known = dict(self.get_topic_names_and_types())
        for topic in self.wanted:
            if topic in self.subs or topic in self.skipped or topic not in known:
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            msgtype = known[topic][0]
            try:
                cls = message_class(msgtype)
                self.writer.add_topic(topic, msgtype)
            except ValueError as exc:
                self.skipped[topic] = str(exc)
                self.get_logger().error(f"not recording {topic}: {exc}")
                continue
            self.types[topic] = msgtype
            self.subs[topic] = self.create_subscription(cls, topic, lambda raw, t=topic: self._on(t, raw),
                                                        self._qos(publishers), raw=True)
            self.get_logger().info(f"recording {topic} ({msgtype})")

    @staticmethod
    def _qos(publishers) -> QoSProfile:
        # Reliable only when every publisher offers it (a reliable reader would not match a
        # best-effort writer); transient-local when every publisher latches.
        reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
        qos = RECORD_QOS if reliable else BEST_EFFORT_RECORD_QOS
        if all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers):
            qos = QoSProfile(history=qos.history, depth=qos.depth, reliability=qos.reliability,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        return qos

    def _on(self, topic: str, raw: bytes) -> None:
        self.writer.write(topic, time.time_ns(), raw)
        self.received[topic] += 1

    @property
    def ready(self) -> bool:
        return len(self.subs) == len(self.wanted)


def record(out, topics, storage: str = "mcap", duration: float = 0.0, stop: StopFlag | None = None,
           on_ready=None) -> dict:
    """Record ``topics`` into a new bag at ``out`` until SIGINT/SIGTERM (or ``duration``).

    The signal handlers only set a flag; the loop below notices it within 0.1 s, stops
    spinning and closes the writer, so a bag cut short is a complete, readable bag.
    """
    if not topics:
        raise ValueError("give at least one topic (--topics T1 T2 ...)")
    stop = stop or StopFlag()
    writer = bag_files.BagWriter(out, storage)  # ValueError if out exists
    own_context = not rclpy.ok()
    if own_context:
        rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = Recorder(writer, topics)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    start = time.monotonic()
    announced = False
    try:
        while not stop.is_set() and not (duration and time.monotonic() - start >= duration):
            executor.spin_once(timeout_sec=0.1)
            if not announced and node.ready:
                announced = True
                if on_ready:
                    on_ready(node)
    finally:
        types, received, skipped = dict(node.types), dict(node.received), dict(node.skipped)
        executor.shutdown()
        node.destroy_node()
        writer.close()
        if own_context:
            rclpy.try_shutdown()
        stop.restore()
    return {"bag": str(out), "storage": storage, "duration_s": time.monotonic() - start,
            "topics": {t: {"type": types.get(t), "messages": received.get(t, 0)}
                       for t in (bag_files.normalize_topic(x) for x in topics)},
            "missing": [bag_files.normalize_topic(t) for t in topics if bag_files.normalize_topic(t) not in types],
            "skipped": skipped}


# -- player -----------------------------------------------------------------------------------------
class LockstepTimeout(RuntimeError):
    pass


class Player(Node):
    """Publishes a bag's messages (raw CDR) on their topics; see the module doc for lockstep."""

    def __init__(self, path, *, topics=None, remap: dict | None = None, lockstep: bool = False,
                 name: str = "hiertrain_player", key_file: str = ""):
        """``remap`` plays a bag topic under another name ({bag topic: topic}), as ``ros2 bag play --remap`` does.

        ``pubs``, ``published`` and the lockstep protocol use the played names.  Labels are re-encoded with this
        package's current ``Label`` (a bag from before a field was added still plays) and, with ``key_file``,
        signed as the camera would sign them.
        """
        super().__init__(name)
        self.path = Path(path)
        self.types = bag_files.bag_topics(self.path)  # ValueError / FileNotFoundError for a bad bag
        if topics:
            wanted = {bag_files.normalize_topic(t) for t in topics}
            missing = wanted - set(self.types)
            if missing:
                raise ValueError(f"{self.path} has no topic(s) {', '.join(sorted(missing))}")
            self.types = {t: ty for t, ty in self.types.items() if t in wanted}
        if not self.types:
            raise ValueError(f"{self.path}: nothing to play (no topics)")
        remap = {bag_files.normalize_topic(a): bag_files.normalize_topic(b) for a, b in (remap or {}).items()}
        unknown = set(remap) - set(self.types)
        if unknown:
            raise ValueError(f"{self.path} has no topic(s) {', '.join(sorted(unknown))} to remap")
        self.played_as = {t: remap.get(t, t) for t in self.types}
        if len(set(self.played_as.values())) < len(self.played_as):
            raise ValueError(f"remapping would play two topics as one: {remap}")
        self.pubs = {self.played_as[t]: self.create_publisher(message_class(ty), self.played_as[t], play_qos(ty))
                     for t, ty in self.types.items()}
        self.published: Counter = Counter()
        self._labels = {self.played_as[t]: decode for t, decode in bag_files.label_decoders(self.path).items()
                        if t in self.types}
        self.auth = MessageAuth(self, key_file, name, Rejections(self)) if TOPIC_LABELS in self._labels else None
        self.lockstep = lockstep
        self._cond = threading.Condition()
        self.consumed = 0
        self._consumed_base = None
        self.edge_steps = 0
        self.cloud_step = None       # absolute, from metrics or heartbeat
        self.cloud_base = None       # cloud step when playing started
        self.edge_predicted: set[int] = set()
        self.cloud_predicted: set[int] = set()
        self.edge_kept: set[int] = set()  # frames the edge answered alone (NOT_OFFLOADED): no cloud answer comes
        self.heartbeats = 0
        self.timeouts: Counter = Counter()
        self.frames_sent = self.labels_sent = 0
        self.frame_stamps: list[int] = []
        if lockstep:
            from hiertrain_interfaces.msg import Heartbeat, Prediction, TrainingMetrics
            from std_msgs.msg import UInt64

            self.create_subscription(UInt64, TOPICS["consumed"], self._on_consumed, RECORD_QOS)
            self.create_subscription(TrainingMetrics, TOPICS["edge_metrics"], self._on_edge_metrics, RECORD_QOS)
            self.create_subscription(TrainingMetrics, TOPICS["cloud_metrics"], self._on_cloud_metrics, RECORD_QOS)
            self.create_subscription(Prediction, TOPICS["edge_prediction"],
                                     lambda m: self._on_prediction(self.edge_predicted, m, self.edge_kept),
                                     RECORD_QOS)
            self.create_subscription(Prediction, TOPICS["cloud_prediction"],
                                     lambda m: self._on_prediction(self.cloud_predicted, m), RECORD_QOS)
            self.create_subscription(Heartbeat, TOPICS["heartbeat"], self._on_heartbeat, BEST_EFFORT_WATCH_QOS)

    # -- watch callbacks --------------------------------------------------------------------------
    def _on_consumed(self, msg) -> None:
        with self._cond:
            if self._consumed_base is None:
                # Frames are sent one at a time, so the first count seen is for our first frame.
                self._consumed_base = msg.data - 1
            self.consumed = max(self.consumed, msg.data - self._consumed_base)
            self._cond.notify_all()

    def _on_edge_metrics(self, msg) -> None:
        with self._cond:
            self.edge_steps += 1
            self._cond.notify_all()

    def _on_cloud_metrics(self, msg) -> None:
        with self._cond:
            self.cloud_step = max(self.cloud_step or 0, int(msg.step))
            self._cond.notify_all()

    def _on_heartbeat(self, msg) -> None:
        with self._cond:
            self.heartbeats += 1
            self.cloud_step = max(self.cloud_step or 0, int(msg.steps))
            self._cond.notify_all()

    def _on_prediction(self, into: set, msg, kept: set | None = None) -> None:
        from .core.fallback import NOT_OFFLOADED

        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._cond:
            into.add(stamp)
            if kept is not None and msg.reason == NOT_OFFLOADED:
                kept.add(stamp)
            self._cond.notify_all()

    def _wait(self, predicate, timeout: float, what: str, stop=None) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    if left <= 0:
                        self.timeouts[what] += 1
                        self.get_logger().warning(f"lockstep: timed out after {timeout:.0f} s waiting for {what}")
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    # -- helpers ----------------------------------------------------------------------------------
    def wait_for_subscribers(self, topics, timeout: float, stop=None) -> list[str]:
        """Wait until each topic has a subscriber; returns those that still have none."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [t for t in topics if t in self.pubs and self.pubs[t].get_subscription_count() == 0]
            if not missing or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return missing
            time.sleep(0.05)

    def get_parameters(self, node: str, names, timeout: float = 10.0) -> dict:
        from rcl_interfaces.msg import ParameterType
        from rcl_interfaces.srv import GetParameters

        client = self.create_client(GetParameters, f"/{node}/get_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise ValueError(f"no /{node}/get_parameters service within {timeout:.0f} s")
            future = client.call_async(GetParameters.Request(names=list(names)))
            done = threading.Event()
            future.add_done_callback(lambda _f: done.set())
            if not done.wait(timeout) or future.result() is None:
                raise ValueError(f"/{node} did not answer get_parameters")
            out = {}
            for name, value in zip(names, future.result().values):
                out[name] = {ParameterType.PARAMETER_INTEGER: value.integer_value,
                             ParameterType.PARAMETER_DOUBLE: value.double_value,
                             ParameterType.PARAMETER_BOOL: value.bool_value,
                             ParameterType.PARAMETER_STRING: value.string_value}.get(value.type)
            return out
        finally:
            self.destroy_client(client)

    # -- playing ----------------------------------------------------------------------------------
    def _outgoing(self, topic: str, raw: bytes):
        """Return what to publish on ``topic`` (its played name) for a bag message: its bytes, or a label re-made."""
        decode = self._labels.get(topic)
        if decode is None:
            return raw
        try:
            stamp, class_id, segment = decode(raw)
        except Exception as exc:  # rosbags' CDR decoder raises several kinds on a malformed message
            raise ValueError(f"{self.path}: a malformed label on {topic}: {exc}") from None
        msg = conversions.label_msg(Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), class_id, segment)
        return self.auth.sign("labels", msg) if topic == TOPIC_LABELS else msg

    def wait_acked(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` s until every matched reader acknowledged the reliable topics; returns the rest.

        A player that exits right after its last publish can take undelivered messages with it: a reader that
        had not yet discovered the writer drops what it got and asks again only later (``ros2 bag play
        --wait-for-all-acked``; in one CI run a subscriber missed some of 8 labels).
        """
        deadline = time.monotonic() + timeout
        return [t for t, pub in self.pubs.items()
                if not pub.wait_for_all_acked(Duration(seconds=max(0.0, deadline - time.monotonic())))]

    def play(self, *, rate: float = 1.0, max_speed: bool = False, loop: bool = False, stop=None,
             wait_subscribers: float = 0.0, wait_acked: float = 10.0) -> dict:
        """Publish with the bag's timing scaled by ``rate`` (or as fast as possible).

        Then wait up to ``wait_acked`` s for the reliable topics to be acknowledged (``unacked`` lists the rest).
        """
        if not max_speed and not rate > 0:
            raise ValueError(f"--rate must be > 0, got {rate}")
        if wait_subscribers:
            self.wait_for_subscribers(list(self.pubs), wait_subscribers, stop)
        start = time.monotonic()
        passes = 0
        while True:
            first = None
            t0 = time.monotonic()
            for topic, _, timestamp, raw in bag_files.read_messages(self.path, self.types):
                if stop is not None and stop.is_set():
                    break
                topic = self.played_as[topic]
                if first is None:
                    first = timestamp
                if not max_speed:
                    delay = t0 + (timestamp - first) / 1e9 / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                self.pubs[topic].publish(self._outgoing(topic, bytes(raw)))
                self.published[topic] += 1
            passes += 1
            if not loop or (stop is not None and stop.is_set()):
                break
        elapsed = time.monotonic() - start
        total = sum(self.published.values())
        return {"bag": str(self.path), "passes": passes, "published": dict(self.published),
                "messages": total, "elapsed_s": elapsed, "messages_per_s": total / elapsed if elapsed else None,
                "unacked": self.wait_acked(wait_acked)}

    def play_lockstep(self, *, batch_size: int | None = None, predict_every: int | None = None,
                      wait_cloud: bool | None = None, timeout: float = 30.0, startup_timeout: float = 120.0,
                      stop=None, progress=None, fallback: str | None = None) -> dict:
        """Play frame by frame in lockstep with the edge (and cloud); see the module doc.

        ``fallback``: the name of a fallback node to wait for, until it subscribes to the answers.
        """
        if TOPIC_IMAGE not in self.pubs:
            raise ValueError(f"{self.path} has no {TOPIC_IMAGE} to play in lockstep")
        start = time.monotonic()
        need = [t for t in (TOPIC_IMAGE, TOPIC_LABELS) if t in self.pubs]
        missing = self.wait_for_subscribers(need, startup_timeout, stop)
        if missing:
            raise ValueError(f"no subscriber on {', '.join(missing)} within {startup_timeout:.0f} s: "
                             f"is the edge node running (same ROS_DOMAIN_ID)?")
        deadline = time.monotonic() + startup_timeout
        while self.count_publishers(TOPICS["consumed"]) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.count_publishers(TOPICS["consumed"]) == 0:
            raise ValueError(f"nothing publishes {TOPICS['consumed']}: lockstep needs the edge node")
        params = {}
        if batch_size is None or predict_every is None:
            params = self.get_parameters("edge_node", ["batch_size", "predict_every"], timeout=startup_timeout)
        batch_size = batch_size or int(params["batch_size"])
        predict_every = predict_every or int(params["predict_every"])
        if wait_cloud is None:  # a cloud up now is waited for; none seen in 3 s: edge only
            wait_cloud = self._wait(lambda: self.heartbeats > 0, 3.0, "a cloud heartbeat (optional)", stop)
            self.timeouts.pop("a cloud heartbeat (optional)", None)
        elif wait_cloud and not self._wait(lambda: self.heartbeats > 0, startup_timeout, "the cloud heartbeat",
                                           stop):
            raise ValueError(f"no cloud heartbeat on {TOPICS['heartbeat']} within {startup_timeout:.0f} s")
        if wait_cloud:
            # The edge sends features only once it has seen the cloud's heartbeat, and the cloud
            # must have matched the edge's feature publisher: wait for both sides of that link.
            deadline = time.monotonic() + startup_timeout
            while self.count_subscribers(TOPICS["features"]) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            with self._cond:
                self.cloud_base = self.cloud_step or 0
        if fallback:
            # Answers published before the fallback subscribes get no output (in one CI run, 7 frames of 160).
            answers = [TOPICS["edge_prediction"]] + ([TOPICS["cloud_prediction"]] if wait_cloud else [])
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline and not all(
                    fallback in {i.node_name for i in self.get_subscriptions_info_by_topic(self.resolve_topic_name(t))}
                    for t in answers):
                time.sleep(0.05)
        time.sleep(0.5)  # let the far ends of the matched endpoints settle (reliable readers)
        ready_s = time.monotonic() - start

        pending: dict[int, list] = defaultdict(list)  # labels logged before their frame
        sent_frames: set[int] = set()

        def send_label(raw) -> None:
            self.pubs[TOPIC_LABELS].publish(self._outgoing(TOPIC_LABELS, raw))
            self.published[TOPIC_LABELS] += 1
            self.labels_sent += 1
            if self.labels_sent % batch_size == 0:
                steps = self.labels_sent // batch_size
                self._wait(lambda: self.edge_steps >= steps, timeout, "an edge training step", stop)
                if wait_cloud:
                    self._wait(lambda: (self.cloud_step or 0) - self.cloud_base >= steps, timeout,
                               "a cloud training step", stop)

        play_start = time.monotonic()
        for topic, _, _, raw in bag_files.read_messages(self.path, self.types):
            if stop is not None and stop.is_set():
                break
            topic = self.played_as[topic]
            raw = bytes(raw)
            if topic == TOPIC_IMAGE:
                stamp = bag_files.header_stamp_ns(raw)
                self.pubs[topic].publish(raw)
                self.published[topic] += 1
                self.frames_sent += 1
                self.frame_stamps.append(stamp)
                n = self.frames_sent
                self._wait(lambda: self.consumed >= n, timeout, "the edge to consume a frame", stop)
                predicted = predict_every == 1 or self._wait(
                    lambda: stamp in self.edge_predicted, 0.5 if n % predict_every == 0 else 0.05,
                    "edge prediction", stop)
                self.timeouts.pop("edge prediction", None)
                if predicted and wait_cloud:
                    self._wait(lambda: stamp in self.cloud_predicted or stamp in self.edge_kept, timeout,
                               "the cloud prediction of a frame", stop)
                sent_frames.add(stamp)
                for label in pending.pop(stamp, ()):
                    send_label(label)
                if progress:
                    progress(self)
            elif topic == TOPIC_LABELS:
                stamp = bag_files.header_stamp_ns(raw)
                if stamp in sent_frames:
                    send_label(raw)
                else:
                    pending[stamp].append(raw)
            else:
                self.pubs[topic].publish(self._outgoing(topic, raw))
                self.published[topic] += 1
        for labels in pending.values():  # labels of frames the bag does not hold
            for label in labels:
                send_label(label)
        elapsed = time.monotonic() - play_start
        return {"bag": str(self.path), "lockstep": True, "frames": self.frames_sent, "labels": self.labels_sent,
                "published": dict(self.published), "consumed": self.consumed, "edge_steps": self.edge_steps,
                "cloud_steps": (self.cloud_step or 0) - (self.cloud_base or 0) if wait_cloud else None,
                "cloud_waited": bool(wait_cloud), "batch_size": batch_size, "predict_every": predict_every,
                "timeouts": dict(self.timeouts), "startup_s": ready_s, "elapsed_s": elapsed,
                "frames_per_s": self.frames_sent / elapsed if elapsed else None}
