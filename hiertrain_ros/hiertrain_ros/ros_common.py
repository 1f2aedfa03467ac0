"""ROS glue shared by the nodes and tools: QoS profiles and topic names, config parameters, the harness.

The harness is the one way this package runs rclpy: :class:`Spinner` spins a node in a background
thread, :class:`StopFlag` turns SIGINT/SIGTERM into a polled flag, :func:`run_node` is the node entry
point.  Also here: throttled rejection counting, stamps and diagnostics.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import signal
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from .core.auth import Refused, Signer, Verifier, load_key

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
# Recording and watching best-effort topics (camera frames, heartbeats): a short burst is kept.
BEST_EFFORT_RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                    reliability=ReliabilityPolicy.BEST_EFFORT)
BEST_EFFORT_WATCH_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
# Playing a bag's reliable topics: the player paces itself, so a moderate history is enough.
PLAY_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Latched state (link status): late joiners get the last value.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def heartbeat_qos(period_s: float) -> QoSProfile:
    """Heartbeat: the deadline event fires when a period passes without one."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      deadline=Duration(seconds=period_s))


# Relative names live in the node's namespace: one robot per namespace (/r1, /r2, ...) keeps its
# camera, labels, answers and link status apart.  The topics between the edges and their shared
# cloud are absolute, so that N edges in their namespaces and one cloud meet on them; batches,
# answers and acknowledgements on them carry the robot id.
TOPICS = {
    "image": "camera/image_raw",
    "labels": "hiertrain/labels",
    "truth": "hiertrain/eval/truth",
    "features": "/hiertrain/features",
    "edge_prediction": "hiertrain/edge/prediction",
    "cloud_prediction": "/hiertrain/cloud/prediction",
    "prediction": "hiertrain/prediction",
    "heartbeat": "/hiertrain/cloud/heartbeat",
    "weights_to_cloud": "/hiertrain/weights/to_cloud",  # live repartition (core.repartition): requests
    "weights_to_edge": "/hiertrain/weights/to_edge",    # and the cloud's answers
    "link_status": "hiertrain/link_status",
    "edge_metrics": "hiertrain/edge/metrics",
    "cloud_metrics": "hiertrain/cloud/metrics",
    "consumed": "hiertrain/edge/consumed",
    "adaptation": "hiertrain/adaptation",
}


def resolve_robot_id(node, configured: str) -> str:
    """Return ``configured``, or when that is "" the node's namespace without its leading slash."""
    return configured or node.get_namespace().strip("/")


def config_file(name: str) -> Path:
    """Return a file of config/.

    Installed by pip (sys.prefix/share), by colcon (the ament index, which sourcing the install's setup script extends),
    or in a source checkout.
    """
    bases = [Path(sys.prefix) / "share" / "hiertrain_ros"]
    try:
        from ament_index_python.packages import get_package_share_directory

        bases.append(Path(get_package_share_directory("hiertrain_ros")))
    except (ImportError, LookupError, OSError):  # no ament_index_python, no AMENT_PREFIX_PATH, not in it
        pass
    bases.append(Path(__file__).resolve().parent.parent)
    for base in bases:
        candidate = base / "config" / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"config/{name} not found in {', '.join(str(b) for b in bases)}")


def large_data_profile() -> str:
    return str(config_file("fastdds_large_data.xml"))


def local_profile() -> str:
    return str(config_file("fastdds_local.xml"))


def large_data_env(env: Mapping[str, str] | None = None) -> dict:
    """Fast DDS settings to add to ``env`` (default: this process's environment) for the package's traffic.

    UDP only, with 4 MiB socket buffers (room for 640x480 frames), and no shared memory: a peer stopped while it
    holds one of Fast DDS's shared-memory locks blocks every other process on the host for the lock's 1 s timeout
    (issue 15; ``benchmarks/freeze_stress.py``).  ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` would make
    rmw_fastrtps put shared memory back, whatever the profile says, so that request becomes the localhost-only UDP
    profile under ``SYSTEM_DEFAULT``.  Empty when the user chose transports or another RMW.
    """
    env = os.environ if env is None else env
    chosen = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp" or any(env.get(k) for k in chosen):
        return {}
    if env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST":
        return {"FASTDDS_DEFAULT_PROFILES_FILE": local_profile(), "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT"}
    return {"FASTDDS_DEFAULT_PROFILES_FILE": large_data_profile()}


def use_large_data_transport() -> None:
    """Apply :func:`large_data_env` to this process (before rclpy.init)."""
    os.environ.update(large_data_env())


def declare_config(node, cls):
    """Declare one typed parameter per field of ``cls`` and build the config from them now.

    See :func:`declare_parameters`; a plain node reads its config at start-up.
    """
    declare_parameters(node, cls)
    return read_config(node, cls)


def _param_fields(cls) -> dict:
    """ROS parameter name -> dataclass field.

    A field's parameter is named after it unless its metadata names another ("model" for ``arch``).
    """
    return {f.metadata.get("param") or f.name: f for f in dataclasses.fields(cls)}


def declare_parameters(node, cls) -> None:
    """Declare one typed parameter per field of ``cls``; ``node.config`` holds the config.

    Later changes are validated by building a new config.  While ``node.config`` is None (a
    managed node not configured yet) any valid value is taken: configure reads it.  Once
    there is a config, fields outside ``cls.LIVE`` are refused with a reason.
    """
    fields = _param_fields(cls)
    for name, f in fields.items():
        # Dynamic typing so that "rate_hz: 100" in YAML is a float, not a type error.  A list field's empty
        # default (exit_weights: ()) is declared unset: rclpy would type () as a byte array; unset reads as ().
        default = (list(f.default) or None) if isinstance(f.default, tuple) else f.default
        node.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True))

    def on_set(params):
        try:
            changes = {fields[p.name].name: _coerce(p.name, p.value, type(fields[p.name].default))
                       for p in params if p.name in fields}
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if not changes:  # another component's parameter
            return SetParametersResult(successful=True)
        current = node.config
        frozen = [] if current is None else [
            p.name for p in params if p.name in fields and fields[p.name].name not in cls.LIVE
            and changes[fields[p.name].name] != getattr(current, fields[p.name].name)]
        if frozen:
            return SetParametersResult(successful=False, reason=f"{', '.join(frozen)} is read at start-up "
                                       "(a managed node's configure); restart or reconfigure the node")
        try:
            new = dataclasses.replace(current, **changes) if current is not None else read_config(node, cls, changes)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if current is not None:
            node.config = new
            node.on_config_changed()
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)


def read_config(node, cls, changes: dict | None = None):
    """Return the config the node's parameters (with ``changes``, keyed by field name, applied) describe.

    ValueError on a bad value (the node refuses to start).
    """
    values = {f.name: _coerce(name, node.get_parameter(name).value, type(f.default))
              for name, f in _param_fields(cls).items()}
    return cls(**(values | (changes or {})))


def _coerce(name: str, value, kind):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is tuple:  # a list of numbers (exit_weights: [0.5, 1.0]); unset (the default) is ()
        if value is None:
            return ()
        value = value.tolist() if hasattr(value, "tolist") else value  # array.array from some rclpy calls
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in value):
            return tuple(float(v) for v in value)
        raise ValueError(f"parameter {name} must be a list of numbers, got {value!r}")
    if type(value) is not kind:
        raise ValueError(f"parameter {name} must be a {kind.__name__}, got {value!r}")
    return value


class Rejections:
    """Counts rejected inputs by kind and logs them at a throttled rate."""

    def __init__(self, node, period_s: float = 2.0):
        self._node = node
        self._period = period_s
        self._lock = threading.Lock()  # counted from the executor, the intake thread and the workers
        self.counts: Counter = Counter()

    def __call__(self, kind: str, reason) -> None:
        with self._lock:
            # a new Counter each time: a reader iterating the old one never sees it change size
            self.counts = self.counts + Counter({kind: 1})
            count = self.counts[kind]
        self._node.get_logger().warning(f"rejected {kind} (#{count}): {reason}", throttle_duration_sec=self._period)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def message_bytes(msg, skip: str = "auth") -> bytes:
    """Return a canonical encoding of a message's fields, but ``skip``, for its MAC.

    Not the CDR that rclpy publishes: CDR leaves its alignment padding uninitialised, so the same message
    serializes to different bytes (measured: the bytes after a string differed between two calls).  Here every
    scalar has a fixed width (a float32 field's value rounded to float32, as sent) and every string, array and
    sequence a length prefix, in the type's field order, so equal messages give equal bytes and different ones
    different bytes.
    """
    out = bytearray()

    def put(value, kind: str = "") -> None:
        if hasattr(value, "get_fields_and_field_types"):
            for name, field_kind in value.get_fields_and_field_types().items():
                if not (value is msg and name == skip):
                    put(getattr(value, name), field_kind)
        elif isinstance(value, (bool, int)):
            out.extend(b"i" + int(value).to_bytes(9, "little", signed=True))
        elif isinstance(value, float):
            # As the wire has it: a float32 field holds whatever Python float it was given until it is sent.
            out.extend(b"f" + struct.pack("<f" if kind == "float" else "<d", value))
        elif isinstance(value, str):
            data = value.encode()
            out.extend(b"s" + len(data).to_bytes(8, "little") + data)
        elif isinstance(value, (bytes, bytearray)) or hasattr(value, "tobytes"):  # array.array, numpy arrays
            data = value.tobytes() if hasattr(value, "tobytes") else bytes(value)
            out.extend(b"a" + len(data).to_bytes(8, "little") + data)
        elif isinstance(value, (list, tuple)):
            out.extend(b"l" + len(value).to_bytes(8, "little"))
            for item in value:
                put(item)
        else:
            raise TypeError(f"cannot encode a {type(value).__name__} field for a MAC")

    put(msg)
    return bytes(out)


class MessageAuth:
    """Signs what a node sends and checks what it receives, for the messages that change state (issue 15).

    The kinds are the topics' keys: ``features``, ``labels`` and ``heartbeat``.  With a key file
    (``auth_key_file``), outgoing messages get their ``auth`` field (:class:`core.auth.Signer`: HMAC-SHA256
    over :func:`message_bytes`), and incoming ones without a valid, new signature are
    refused and counted (``rejected_<kind>_<reason>`` on /diagnostics).  Without a key nothing is signed or
    checked, and the node warns once: anyone on the DDS domain can then feed it.  A key file that cannot be
    used is a clear error.
    """

    def __init__(self, node, key_file: str, sender: str, rejections: Rejections):
        self.enabled = bool(key_file)
        self._rejections = rejections
        self._lock = threading.Lock()  # the counter and the replay window, from any callback or worker thread
        if self.enabled:
            key = load_key(key_file)  # ValueError naming the file
            self._signer, self._verifier = Signer(key, sender), Verifier(key)
        else:
            node.get_logger().warning("auth_key_file is empty: messages are neither signed nor checked, so any "
                                      "participant on this DDS domain can send features, labels and heartbeats "
                                      "(see docs/security.md)")

    def sign(self, kind: str, msg):
        """Return ``msg`` signed (as is without a key)."""
        if self.enabled:
            from hiertrain_interfaces.msg import Auth

            with self._lock:
                nonce, counter, mac = self._signer.sign(kind, message_bytes(msg))
            msg.auth = Auth(sender=self._signer.sender, nonce=list(nonce), counter=counter, mac=list(mac))
        return msg

    def check(self, kind: str, msg) -> bool:
        """Return whether to take ``msg``; a refused one is counted and logged."""
        if not self.enabled:
            return True
        auth = msg.auth
        try:
            with self._lock:
                self._verifier.check(kind, auth.sender, bytes(auth.nonce), auth.counter, bytes(auth.mac),
                                     message_bytes(msg))
        except Refused as exc:
            self._rejections(f"{kind}_{exc.reason.lower().replace(' ', '_')}", exc)
            return False
        return True


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def received_s(info) -> float | None:
    """Return when the middleware received a message (s, system clock), from a subscription's message info.

    None where the middleware does not say (0).
    """
    return info["received_timestamp"] * 1e-9 or None


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


class Spinner:
    """A node spun by a SingleThreadedExecutor in a background thread until :meth:`close`."""

    def __init__(self, node, *, context=None):
        self.node = node
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # shutdown races (ExternalShutdownException among them) end the thread quietly
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


class StopFlag:
    """SIGINT/SIGTERM only set a flag (signal-safe: no I/O, no locks); the owner polls it.

    An exception raised from a handler could land inside rclpy's C++ calls and come out as a
    RuntimeError, so nothing here raises.
    """

    def __init__(self, install: bool = True):
        self.event = threading.Event()
        self._old = {}
        if install and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class Intake:
    """A node's fast streams (a camera's frames and labels), taken in a thread of their own, not by the executor.

    rclpy's executors wake once per message and pay a fraction of a millisecond of Python for each wake-up: for a
    lifecycle node's SingleThreadedExecutor, 0.7 ms of CPU per frame of a 400 Hz camera (a frame and its label),
    more than a 0.3-core edge's whole quota (issue 14, docs/linkbench.md).  Here a wait set over these subscriptions
    alone wakes the thread, and everything waiting on each subscription is taken before it waits again, so a burst
    (the messages that came while the process was descheduled, or held back by its CPU quota) costs one wake-up.
    With ``min_interval_s`` the thread wakes at most that often: a message that comes sooner after the last
    wake-up waits for the next one (a camera's label right behind its frame; the frames of a camera faster than
    1 / ``min_interval_s``), so a fast stream costs fewer wake-ups, and a slower one is taken as it comes.

    The subscriptions live on a side node, ``<node>_intake`` in the node's namespace, that no executor spins.  The
    node resolves their topics (``resolve_topic_name``), so its own remappings apply; the side node takes no
    command-line arguments of its own (a ``__node:=`` remap would otherwise rename it too).  Callbacks run in this
    thread, concurrently with the executor's callbacks and the node's workers, and must be safe against them.  The
    wait set is rclpy's own (``_rclpy.WaitSet``, as rclpy's ``wait_for_message`` uses it).
    """

    def __init__(self, node, min_interval_s: float = 0.0, timeout_s: float = 0.1):
        self._side = rclpy.create_node(f"{node.get_name()}_intake", namespace=node.get_namespace(),
                                       context=node.context, use_global_arguments=False,
                                       start_parameter_services=False, enable_rosout=False)
        self._resolve = node.resolve_topic_name
        self._log = node.get_logger()
        self._timeout_ns = int(timeout_s * 1e9)
        self._interval = min_interval_s
        self._subs: tuple = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, msg_type, topic: str, callback, qos) -> None:
        """Take ``topic`` (resolved by the node) in this thread: ``callback(msg)`` for each message."""
        sub = self._side.create_subscription(msg_type, self._resolve(topic), callback, qos)
        self._subs = (*self._subs, sub)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="intake")
            self._thread.start()

    def _run(self) -> None:
        try:  # the OS thread's name, as /proc, top -H and py-spy show it (Python 3.11 names only its own object)
            ctypes.CDLL(None).prctl(15, b"intake")  # PR_SET_NAME
        except (OSError, AttributeError):
            pass
        # Each subscription's handle is held while this thread lives: one destroyed meanwhile (close() after a join
        # that timed out, a shutdown) is destroyed once it is released.  The wait set is made again only when a
        # subscription is added: per wake-up, as the executor does it, it cost 10 % more.
        with ExitStack() as held:
            subs, plan, wait_set, woke = (), [], None, 0.0
            while not self._stop.wait(max(0.0, woke + self._interval - time.monotonic())):
                woke = time.monotonic()
                if self._subs is not subs:
                    subs = self._subs
                    for sub in subs[len(plan):]:
                        held.enter_context(sub.handle)
                    plan = [(sub.handle, sub.msg_type, sub.raw, sub.callback) for sub in subs]
                    wait_set = _rclpy.WaitSet(len(subs), 0, 0, 0, 0, 0, self._side.context.handle)
                try:
                    self._take_all(wait_set, plan)
                except Exception as exc:  # a bug must show, but must not silently stop the intake
                    if not self._side.context.ok():
                        return
                    self._log.error(f"intake: {exc!r}", throttle_duration_sec=2.0)
                    time.sleep(0.01)

    def _take_all(self, wait_set, plan: list) -> None:
        wait_set.clear_entities()
        for handle, *_ in plan:
            wait_set.add_subscription(handle)
        wait_set.wait(self._timeout_ns)
        ready = wait_set.get_ready_entities("subscription")
        for handle, msg_type, raw, callback in plan:
            if handle.pointer in ready:
                while not self._stop.is_set() and (taken := handle.take_message(msg_type, raw)) is not None:
                    callback(taken[0])

    def close(self) -> None:
        """Stop the thread (a callback under way finishes first), then drop the subscriptions and the side node."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._side.destroy_node()


EXECUTORS = ("single", "events")


def make_executor(kind: str):
    """Return the executor that runs a node's callbacks, by name.

    ``single``: rclpy's SingleThreadedExecutor, which rebuilds its wait set over every entity of the node
    (a lifecycle node has about 40: services, timers, QoS events) in Python after each wake-up.
    ``events``: rclpy's EventsExecutor (``rclpy.experimental`` in this ROS release), which dispatches each
    message from C++.  Before the edge took its camera in with :class:`Intake`, it took a 400 Hz camera (frames
    and labels) in for a third of the CPU with it, and trained about 1.5x faster than with ``single`` under a 0.3-core
    quota (issue 14, docs/linkbench.md).  It is experimental in rclpy, with an open segfault when subscriptions or
    publishers with event callbacks are destroyed while it spins (ros2/rclpy#1644; a lifecycle node's deactivate
    does that), so ``single`` is the default.
    """
    if kind == "single":
        return SingleThreadedExecutor()
    if kind == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError as exc:  # rclpy before Jazzy has none
            raise ValueError(f"executor: events needs rclpy.experimental.EventsExecutor, which this rclpy "
                             f"lacks ({exc}); use executor: single") from exc
        return EventsExecutor()
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")


def run_node(node_cls, args=None) -> None:
    """Entry point shared by the node executables: spin until Ctrl-C/SIGTERM, then close cleanly.

    rclpy's own signal handler would invalidate the context while the node's worker
    thread may still publish; handling the signal here lets ``close()`` stop the worker
    and write the last checkpoint first.  The ``executor`` parameter (:func:`make_executor`; default the node
    class's ``executor_kind``, else ``single``) picks what spins it.
    """
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopFlag()
    node = None
    try:
        node = node_cls()
        # Start-up leaves ~350k long-lived objects (rclpy, torch, the model) that a full
        # collection of the cyclic GC walks while holding the GIL: 250 ms on an idle core, a
        # stall of every thread (answers, heartbeats) whenever it runs. Frozen, they are skipped.
        gc.collect()
        gc.freeze()
        # Callbacks only validate and enqueue (heavy work has its own thread), so one
        # executor thread is enough, and it leaves the GIL to the worker.
        kind = (node.get_parameter("executor") if node.has_parameter("executor") else  # a TrainerNode declares it
                node.declare_parameter("executor", getattr(node_cls, "executor_kind", "single"))).value
        executor = make_executor(kind)
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
