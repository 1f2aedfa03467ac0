"""rosbag2 bags without ROS: make a bag from a dataset, read one back, describe one.

Everything here uses the pure-Python ``rosbags`` library (no rclpy, no rosbag2_py),
so bags can be written and checked on a machine without a ROS graph.  Messages are
kept as serialized CDR (the bytes rclpy publishes and ``raw=True`` subscriptions
receive); the typestore is Kilted's plus this project's own types, registered from
the installed ``.msg`` files so every bag carries full message definitions.

Errors meant for the user are ``ValueError`` (malformed bag, bad argument) and
``FileNotFoundError`` (no bag there).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import struct
import sys
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from .core.frames import resize_nearest

# The graph's topics for a robot in the root namespace (ros_common.TOPICS; test_bags checks they agree).
TOPIC_IMAGE = "/camera/image_raw"
TOPIC_LABELS = "/hiertrain/labels"
TOPIC_TRUTH = "/hiertrain/eval/truth"
IMAGE_TYPE = "sensor_msgs/msg/Image"
LABEL_TYPE = "hiertrain_interfaces/msg/Label"
AUTH_TYPE = "hiertrain_interfaces/msg/Auth"
# Types published with sensor-data QoS (best effort); everything else goes reliable.
SENSOR_TYPES = {IMAGE_TYPE, "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/PointCloud2",
                "sensor_msgs/msg/LaserScan", "sensor_msgs/msg/Imu"}
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
INTERFACES = "hiertrain_interfaces"


def _store_enum():
    """Kilted's store, or the newest ROS 2 store this rosbags has."""
    if hasattr(Stores, "ROS2_KILTED"):
        return Stores.ROS2_KILTED
    ros2 = [s for s in Stores if s.name.startswith("ROS2_")]
    return ros2[-1] if ros2 else Stores.LATEST


def _share_dirs() -> list[Path]:
    """Install prefixes' share dirs: this interpreter's first, then AMENT_PREFIX_PATH's."""
    prefixes = [Path(sys.prefix)]
    prefixes += [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [p / "share" for p in prefixes]


def interfaces_msg_dir() -> Path:
    """Return the installed hiertrain_interfaces/msg (sys.prefix/share/...), else the source tree's."""
    candidates = [d / INTERFACES / "msg" for d in _share_dirs()]
    candidates.append(Path(__file__).resolve().parents[2] / INTERFACES / "msg")
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.msg")):
            return candidate
    raise FileNotFoundError(f"no {INTERFACES} .msg files in {', '.join(map(str, candidates))}")


def _find_msg_file(typename: str) -> Path | None:
    pkg, kind, name = typename.split("/")
    dirs = [d / pkg / kind for d in _share_dirs()]
    if pkg == INTERFACES:
        dirs.insert(0, interfaces_msg_dir())
    for d in dirs:
        if (d / f"{name}.msg").is_file():
            return d / f"{name}.msg"
    return None


def ensure_type(store, typename: str) -> None:
    """Register ``typename`` (and the types it uses) from its .msg file if the store lacks it."""
    if typename in store.types:
        return
    parts = typename.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"cannot handle type {typename!r} (expected pkg/msg/Name)")
    path = _find_msg_file(typename)
    if path is None:
        raise ValueError(f"message type {typename} is unknown: no {parts[2]}.msg found under "
                         f"{', '.join(str(d) for d in _share_dirs())}")
    types = get_types_from_msg(path.read_text(), typename)
    for _, fields in types.values():
        for _, (_, spec) in fields:
            for sub in _nested(spec):
                if sub not in types:
                    ensure_type(store, sub)
    store.register(types)


def _nested(spec):
    """Names of message types referenced by a rosbags field description."""
    if isinstance(spec, str):
        if spec.count("/") == 2:
            yield spec
        return
    if isinstance(spec, tuple):
        for item in spec:
            yield from _nested(item)


@lru_cache(maxsize=1)
def typestore():
    """Kilted's typestore plus every hiertrain_interfaces message."""
    store = get_typestore(_store_enum())
    msg_dir = interfaces_msg_dir()
    types = {}
    for path in sorted(msg_dir.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{INTERFACES}/msg/{path.stem}"))
    store.register(types)
    return store


_store_lock = threading.Lock()


def storage_plugin(name: str) -> StoragePlugin:
    try:
        return STORAGES[name]
    except KeyError:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {name!r}") from None


def normalize_topic(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


# -- header stamps straight from CDR --------------------------------------------------------------
def header_stamp_ns(raw: bytes | memoryview) -> int:
    """Stamp (ns) of a serialized message whose first field is a std_msgs/Header."""
    if len(raw) < 12:
        raise ValueError("message too short for a header")
    fmt = "<iI" if raw[1] == 1 else ">iI"
    sec, nanosec = struct.unpack_from(fmt, raw, 4)
    return sec * 1_000_000_000 + nanosec


# -- writing ----------------------------------------------------------------------------------------
class BagWriter:
    """A rosbag2 writer that adds topics on first use and may be fed from any thread.

    ``close`` is idempotent and never called from a signal handler by this package:
    signal handlers only ask the owner to stop, and the owner closes here.
    """

    def __init__(self, out: str | Path, storage: str = "mcap"):
        out = Path(out)
        if out.exists():
            raise ValueError(f"{out} exists already; a bag is never overwritten")
        self.path = out
        self.store = typestore()
        self._writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=storage_plugin(storage))
        self._writer.open()
        self._connections: dict[str, object] = {}
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.closed = False

    def add_topic(self, topic: str, msgtype: str):
        topic = normalize_topic(topic)
        with self._lock:
            if topic not in self._connections:
                with _store_lock:
                    ensure_type(self.store, msgtype)
                self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
                self.counts[topic] = 0
            return self._connections[topic]

    def write(self, topic: str, timestamp_ns: int, raw: bytes | memoryview) -> None:
        topic = normalize_topic(topic)
        with self._lock:
            if self.closed:
                return
            self._writer.write(self._connections[topic], int(timestamp_ns), raw)
            self.counts[topic] += 1

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def scenario_frames(data: str, count: int, holdout_every: int, seed: int = 0, scenario: str = ""):
    """core.scenarios.StreamFrame items in camera_sim's order: every k-th frame a test image.

    ``scenario`` (a YAML path or a shipped name) plays its segments, ``count`` capping it
    (0 = all of it); without one, ``count`` frames of the dataset as it is.
    """
    from .core.data import load_dataset
    from .core.scenarios import load_scenario, plain, stream

    if count < (0 if scenario else 1):
        raise ValueError(f"--subset must be >= {0 if scenario else 1}, got {count}")
    if holdout_every < 1:
        raise ValueError(f"--holdout-every must be >= 1, got {holdout_every}")
    plan = load_scenario(scenario) if scenario else plain(count)
    frames = stream(plan, load_dataset(data, "train"), load_dataset(data, "test"), holdout_every, seed)
    return itertools.islice(frames, count or None)


def camera_sequence(data: str, count: int, holdout_every: int, seed: int = 0):
    """(frame, class, held_out) in camera_sim's order without a scenario."""
    return ((f.frame, f.label, f.held_out) for f in scenario_frames(data, count, holdout_every, seed))


def make_bag(out: str | Path, data: str = "fashion-mnist", subset: int = 1000, rate_hz: float = 30.0,
             storage: str = "mcap", holdout_every: int = 5, seed: int = 0, width: int = 0, height: int = 0,
             start_ns: int | None = None, label_delay_ns: int = 1000, scenario: str = "") -> dict:
    """Write ``subset`` camera frames at ``rate_hz`` plus their labels (or held-out truth).

    With ``scenario`` the frames are the scenario's (``subset`` 0 = all of it) and every label
    carries its segment.

    Frame i is stamped (and logged) at ``start + i / rate``; its label names the frame's
    stamp in its header and is logged ``label_delay_ns`` later, as a labeller would.
    """
    if not rate_hz > 0:
        raise ValueError(f"--rate must be > 0, got {rate_hz}")
    if width < 0 or height < 0:
        raise ValueError("--width/--height must be >= 0")
    store = typestore()
    Image, Header, Time = (store.types[n] for n in (IMAGE_TYPE, "std_msgs/msg/Header",
                                                    "builtin_interfaces/msg/Time"))
    Label, Auth = store.types[LABEL_TYPE], store.types[AUTH_TYPE]
    unsigned = Auth(sender="", nonce=np.empty(0, np.uint8), counter=0, mac=np.empty(0, np.uint8))  # players sign
    start = time.time_ns() if start_ns is None else int(start_ns)
    period = 1e9 / rate_hz
    frames = scenario_frames(data, subset, holdout_every, seed, scenario)  # bad input fails before the bag exists
    n = held_out = 0
    segments = set()
    with BagWriter(out, storage) as writer:
        writer.add_topic(TOPIC_IMAGE, IMAGE_TYPE)
        writer.add_topic(TOPIC_LABELS, LABEL_TYPE)
        writer.add_topic(TOPIC_TRUTH, LABEL_TYPE)
        for i, item in enumerate(frames):
            frame, label, held, segment = item.frame, item.label, item.held_out, item.segment
            if width or height:
                frame = resize_nearest(frame, height or frame.shape[0], width or frame.shape[1])
            t = start + round(i * period)
            stamp = Time(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000)
            h, w = frame.shape[:2]
            image = Image(header=Header(stamp=stamp, frame_id="camera"), height=h, width=w, encoding="rgb8",
                          is_bigendian=0, step=w * 3,
                          data=np.ascontiguousarray(frame, dtype=np.uint8).reshape(-1))
            writer.write(TOPIC_IMAGE, t, store.serialize_cdr(image, IMAGE_TYPE))
            label_msg = Label(header=Header(stamp=stamp, frame_id=""), class_id=label, segment=segment,
                              auth=unsigned)
            writer.write(TOPIC_TRUTH if held else TOPIC_LABELS, t + label_delay_ns,
                         store.serialize_cdr(label_msg, LABEL_TYPE))
            n += 1
            held_out += held
            segments.add(segment)
    return {"bag": str(out), "frames": n, "held_out": held_out, "labelled": n - held_out, "segments": len(segments),
            "rate_hz": rate_hz, "storage": storage, "duration_s": (n - 1) / rate_hz if n else 0.0}


# -- reading ----------------------------------------------------------------------------------------
_READ_ERRORS = (ReaderError, WriterError, sqlite3.DatabaseError, struct.error, KeyError, EOFError, OSError,
                AssertionError, IndexError, UnicodeDecodeError)


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no bag at {path}")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        raise ValueError(f"{path} is not a rosbag2 bag (no metadata.yaml)")
    return path


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextmanager
def open_bag(path: str | Path):
    """Return a rosbags Reader on ``path``; any failure to read it becomes a ValueError."""
    path = _check_path(path)
    reader = Reader(path)
    try:
        reader.open()
    except (FileNotFoundError, *_READ_ERRORS) as exc:
        raise ValueError(f"{path} is not a readable rosbag2 bag: {_one_line(exc)}") from None
    try:
        yield reader
    except _READ_ERRORS as exc:
        raise ValueError(f"{path}: malformed bag: {_one_line(exc) or type(exc).__name__}") from None
    finally:
        try:
            reader.close()
        except Exception:  # closing a broken bag must not hide the first error
            pass


def read_messages(path: str | Path, topics=None):
    """Yield (topic, msgtype, log time ns, raw CDR bytes) in log-time order."""
    with open_bag(path) as reader:
        wanted = None if topics is None else {normalize_topic(t) for t in topics}
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        for conn, timestamp, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, timestamp, raw


def deserialize(raw: bytes | memoryview, msgtype: str):
    store = typestore()
    with _store_lock:
        ensure_type(store, msgtype)
    return store.deserialize_cdr(raw, msgtype)


def label_decoders(path: str | Path) -> dict:
    """Topic -> function of raw CDR -> (stamp ns, class_id, segment), for each of the bag's Label topics.

    Each reads with the bag's own definition of the type when the bag holds one: a bag written before a field was
    added to ``Label.msg`` (``segment``, ``auth``) still plays; the player re-encodes (and signs) what it reads.
    """
    out = {}
    with open_bag(path) as reader:
        for conn in reader.connections:
            if conn.msgtype != LABEL_TYPE or conn.topic in out:
                continue
            store = typestore()
            if conn.msgdef.format == MessageDefinitionFormat.MSG and conn.msgdef.data:
                store = get_typestore(Stores.EMPTY)
                try:
                    store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
                except Exception as exc:  # rosbags raises several kinds for a definition it cannot parse
                    raise ValueError(f"{path}: cannot read the definition of {conn.msgtype} on {conn.topic}: "
                                     f"{_one_line(exc)}") from None

            def decode(raw, store=store):
                msg = store.deserialize_cdr(raw, LABEL_TYPE)
                return header_stamp_ns(raw), int(msg.class_id), int(getattr(msg, "segment", 0))

            out[conn.topic] = decode
    return out


def bag_topics(path: str | Path) -> dict[str, str]:
    """Topic -> type of a bag."""
    with open_bag(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def bag_info(path: str | Path) -> dict:
    """Topics, types, counts, duration, storage — from the bag's index, checked by a full read."""
    path = _check_path(path)
    with open_bag(path) as reader:
        topics: dict[str, dict] = {}
        for conn in reader.connections:
            entry = topics.setdefault(conn.topic, {"topic": conn.topic, "type": conn.msgtype, "count": 0})
            entry["count"] += conn.msgcount
        files = [path] if path.is_file() else list(path.iterdir())
        storage = "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"
        info = {"path": str(path), "storage": storage, "messages": reader.message_count,
                "start_ns": reader.start_time if reader.message_count else None,
                "end_ns": reader.end_time if reader.message_count else None,
                "duration_s": reader.duration / 1e9 if reader.message_count else 0.0,
                "topics": sorted(topics.values(), key=lambda t: t["topic"])}
        # Count what is actually there: an index that promises more than the file holds is a
        # malformed bag, and should say so here rather than halfway through a replay.
        seen: dict[str, int] = {}
        for conn, _, _ in reader.messages():
            seen[conn.topic] = seen.get(conn.topic, 0) + 1
    for topic in info["topics"]:
        if seen.get(topic["topic"], 0) != topic["count"]:
            raise ValueError(f"{path}: malformed bag: {topic['topic']} indexes {topic['count']} messages "
                             f"but holds {seen.get(topic['topic'], 0)}")
    return info
