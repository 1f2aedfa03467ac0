"""ROS glue shared by the nodes: QoS profiles, parameters from a config dataclass,
throttled rejection counting, stamps, diagnostics and the node entry point."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
from collections import Counter
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Camera frames: best effort as sensor data, but a deeper history than the sensor-data
# profile's 5 so that a busy moment of the subscriber's executor does not cost frames
# (the edge's own bounded queue decides what to drop).
CAMERA_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=30, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
# Features and the like: every message matters.
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
# Labels, predictions and training metrics: small, each one a training sample or a record of
# what happened, so a deep history (10 s at 100 Hz) lets a busy edge, logger or monitor catch
# up without losing any (a reliable reader's full KEEP_LAST history overwrites unread samples).
RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)
# Latched state (link status): late joiners get the last value.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def heartbeat_qos(period_s: float) -> QoSProfile:
    """Heartbeat: the deadline event fires when a period passes without one."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      deadline=Duration(seconds=period_s))


TOPICS = {
    "image": "camera/image_raw",
    "labels": "hiertrain/labels",
    "truth": "hiertrain/eval/truth",
    "features": "hiertrain/features",
    "edge_prediction": "hiertrain/edge/prediction",
    "cloud_prediction": "hiertrain/cloud/prediction",
    "prediction": "hiertrain/prediction",
    "heartbeat": "hiertrain/cloud/heartbeat",
    "link_status": "hiertrain/link_status",
    "edge_metrics": "hiertrain/edge/metrics",
    "cloud_metrics": "hiertrain/cloud/metrics",
    "consumed": "hiertrain/edge/consumed",
}


def config_file(name: str) -> Path:
    """A file of config/: installed (share/hiertrain_ros/config) or in a source checkout."""
    for base in (Path(sys.prefix) / "share" / "hiertrain_ros", Path(__file__).resolve().parent.parent):
        candidate = base / "config" / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"config/{name} not found")


def large_data_profile() -> str:
    return str(config_file("fastdds_large_data.xml"))


def large_data_env() -> dict:
    """Environment that gives Fast DDS room for 640x480 frames (8 MiB shared-memory segments
    instead of 512 KiB, 4 MiB UDP buffers); empty when the user chose transports or another RMW."""
    chosen = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp" or any(
            os.environ.get(k) for k in chosen):
        return {}
    return {"FASTDDS_DEFAULT_PROFILES_FILE": large_data_profile()}


def use_large_data_transport() -> None:
    """Apply :func:`large_data_env` to this process (before rclpy.init)."""
    os.environ.update(large_data_env())


def declare_config(node, cls):
    """Declare one typed parameter per field of ``cls`` and build the config from them.

    Later changes are validated by building a new config; fields outside
    ``cls.LIVE`` are refused with a reason (they are read at start-up).
    """
    # A field's ROS parameter is named after it unless its metadata names another ("model" for arch).
    fields = {f.metadata.get("param") or f.name: f for f in dataclasses.fields(cls)}
    for name, f in fields.items():
        # Dynamic typing so that "rate_hz: 100" in YAML is a float, not a type error.
        node.declare_parameter(name, f.default, ParameterDescriptor(dynamic_typing=True))
    config = cls(**{f.name: _coerce(name, node.get_parameter(name).value, type(f.default))
                    for name, f in fields.items()})  # ValueError on a bad YAML value: the node refuses to start

    def on_set(params):
        try:
            changes = {fields[p.name].name: _coerce(p.name, p.value, type(fields[p.name].default))
                       for p in params if p.name in fields}
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        frozen = [p.name for p in params if p.name in fields and fields[p.name].name not in cls.LIVE
                  and changes[fields[p.name].name] != getattr(node.config, fields[p.name].name)]
        if frozen:
            return SetParametersResult(successful=False,
                                       reason=f"{', '.join(frozen)} is read at start-up; restart the node")
        try:
            new = dataclasses.replace(node.config, **changes)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        node.config = new
        node.on_config_changed()
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return config


def _coerce(name: str, value, kind):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ValueError(f"parameter {name} must be a {kind.__name__}, got {value!r}")
    return value


class Rejections:
    """Counts rejected inputs by kind and logs them at a throttled rate."""

    def __init__(self, node, period_s: float = 2.0):
        self._node = node
        self._period = period_s
        self.counts: Counter = Counter()

    def __call__(self, kind: str, reason) -> None:
        self.counts[kind] += 1
        self._node.get_logger().warning(f"rejected {kind} (#{self.counts[kind]}): {reason}",
                                         throttle_duration_sec=self._period)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def seconds_since(node, stamp) -> float:
    return (node.get_clock().now().nanoseconds - stamp_ns(stamp)) / 1e9


def diagnostic(node, name: str, values: dict, *, level=DiagnosticStatus.OK, message: str = "ok") -> DiagnosticArray:
    array = DiagnosticArray()
    array.header.stamp = node.get_clock().now().to_msg()
    status = DiagnosticStatus(level=level, name=f"{node.get_name()}: {name}", message=message,
                              hardware_id=node.get_name())
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    array.status = [status]
    return array


def run_node(node_cls, args=None) -> None:
    """Entry point shared by the node executables: spin until Ctrl-C/SIGTERM, then close cleanly.

    rclpy's own signal handler would invalidate the context while the node's worker
    thread may still publish; handling the signal here lets ``close()`` stop the worker
    and write the last checkpoint first.  The handler only sets a flag: an exception
    raised from it could land inside rclpy's C++ calls and come out as a RuntimeError.
    """
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    node = None
    try:
        node = node_cls()
        # Callbacks only validate and enqueue (heavy work has its own thread), so one
        # executor thread is enough, and it leaves the GIL to the worker.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # A second Ctrl-C (the terminal's and the launcher's) must not cut the last checkpoint short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
