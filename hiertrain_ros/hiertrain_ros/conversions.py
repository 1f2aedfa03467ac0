"""The one place that knows both the ROS messages and the core's types.

Every ``*_from_msg`` raises ``ValueError`` (and only that) for a message that
must be rejected; the checks run before anything large is allocated.
"""

from __future__ import annotations

import array
import math
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Time
from hiertrain_interfaces.msg import FeatureBatch, Heartbeat, HierTensor, Label, Prediction
from sensor_msgs.msg import Image

from .core import codec
from .core.frames import MAX_SIDE, decode_frame

if TYPE_CHECKING:
    from .core.hierexec import Packet

PURPOSE_TRAIN = FeatureBatch.PURPOSE_TRAIN
PURPOSE_INFER = FeatureBatch.PURPOSE_INFER
_CODING_IDS = {"none": FeatureBatch.CODING_NONE, "zstd": FeatureBatch.CODING_ZSTD}
_CODING_NAMES = {v: k for k, v in _CODING_IDS.items()}


def frame_from_msg(msg: Image, max_side: int = MAX_SIDE) -> np.ndarray:
    """RGB uint8 H x W x 3 frame of an rgb8/bgr8/mono8 image no taller or wider than ``max_side``."""
    return decode_frame(msg.encoding, msg.height, msg.width, msg.step, msg.data, max_side)


def image_msg(frame: np.ndarray, stamp, frame_id: str = "camera") -> Image:
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(frame.shape[0]), int(frame.shape[1])
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = array.array("B", np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    return msg


def label_from_msg(msg: Label, num_classes: int) -> tuple[int, int]:
    """(frame stamp in ns, class) of a label."""
    if not 0 <= msg.class_id < num_classes:
        raise ValueError(f"class_id must be in 0..{num_classes - 1}, got {msg.class_id}")
    stamp = msg.header.stamp
    if stamp.sec < 0 or stamp.nanosec >= 1_000_000_000 or (stamp.sec, stamp.nanosec) == (0, 0):
        raise ValueError(f"label needs the stamp of its frame, got {stamp.sec}.{stamp.nanosec:09d}")
    return stamp.sec * 1_000_000_000 + stamp.nanosec, int(msg.class_id)


def label_msg(stamp, class_id: int, segment: int = 0) -> Label:
    msg = Label()
    msg.header.stamp = stamp
    msg.class_id = int(class_id)
    msg.segment = int(segment)
    return msg


def feature_msg(payload: codec.FeaturePayload, stamp, purpose: int) -> FeatureBatch:
    msg = FeatureBatch()
    msg.header.stamp = stamp
    msg.model_hash = payload.model_hash
    msg.encoder_version = payload.encoder_version
    msg.seq = payload.seq
    msg.robot_id = payload.robot_id
    msg.purpose = purpose
    msg.split_point = payload.split_point
    msg.bits = payload.bits
    msg.scale = float(payload.scale)
    msg.zero_point = float(payload.zero_point)
    msg.shape = array.array("I", payload.shape)
    msg.coding = _CODING_IDS[payload.coding]
    msg.data = array.array("B", payload.data)
    msg.labels = array.array("h", np.asarray(payload.labels, dtype=np.int16).tobytes())
    msg.frame_stamps = [Time(sec=s, nanosec=n) for s, n in payload.frame_stamps]
    return msg


def payload_from_msg(msg: FeatureBatch, max_samples: int | None = None) -> tuple[codec.FeaturePayload, int]:
    """Return (validated payload, purpose) of a feature message of at most ``max_samples`` samples."""
    if msg.purpose not in (PURPOSE_TRAIN, PURPOSE_INFER):
        raise ValueError(f"purpose must be TRAIN or INFER, got {msg.purpose}")
    if msg.coding not in _CODING_NAMES:
        raise ValueError(f"coding must be NONE or ZSTD, got {msg.coding}")
    payload = codec.FeaturePayload(
        shape=tuple(int(d) for d in msg.shape), bits=int(msg.bits), scale=float(msg.scale),
        zero_point=float(msg.zero_point), data=bytes(msg.data), labels=np.asarray(msg.labels, dtype=np.int16),
        split_point=int(msg.split_point), encoder_version=int(msg.encoder_version), seq=int(msg.seq),
        model_hash=int(msg.model_hash), frame_stamps=tuple((t.sec, t.nanosec) for t in msg.frame_stamps),
        robot_id=msg.robot_id, coding=_CODING_NAMES[msg.coding])
    codec.validate(payload)
    n, stamps = payload.num_samples, len(payload.frame_stamps)
    if max_samples is not None and n > max_samples:
        raise ValueError(f"batch of {n} samples is above the limit of {max_samples}")
    if msg.purpose == PURPOSE_INFER and stamps != n:
        raise ValueError(f"inference batch needs one frame stamp per sample ({n}), got {stamps}")
    if stamps not in (0, n):
        raise ValueError(f"training batch needs no frame stamps or one per sample ({n}), got {stamps}")
    return payload, msg.purpose


def prediction_msg(stamp, frame_id: str, class_id: int, confidence: float, source: int,
                   latency: float, robot_id: str, *, exit_index: int = 0, reason: int = 0) -> Prediction:
    msg = Prediction(robot_id=robot_id, exit_index=int(exit_index), reason=int(reason))
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.class_id = int(class_id)
    msg.confidence = float(confidence)
    msg.source = source
    msg.latency = float(latency)
    return msg


def heartbeat_msg(stamp, steps: int, last_seq: int, acks, now: float | None = None) -> Heartbeat:
    """``acks``: (robot_id, seq) pairs, or (robot_id, seq, when received) triples, sent as parallel arrays.

    With triples, ``now`` (on the clock of the receptions) makes each batch's held time, NaN where not known.
    """
    msg = Heartbeat(steps=steps, last_seq=last_seq, acked=[a[1] for a in acks], acked_robots=[a[0] for a in acks])
    if now is not None:
        msg.acked_held_s = [math.nan if len(a) < 3 or a[2] is None else max(now - a[2], 0.0) for a in acks]
    msg.header.stamp = stamp
    return msg


def acks_for(msg: Heartbeat, robot_id: str) -> list[int]:
    """Return the seqs a heartbeat acknowledges to ``robot_id``.

    All of them from a cloud older than robot ids (no ``acked_robots``).  ``ValueError`` when the two arrays do not pair
    up.
    """
    if not msg.acked_robots:
        return list(msg.acked)
    if len(msg.acked_robots) != len(msg.acked):
        raise ValueError(f"heartbeat has {len(msg.acked)} acks but {len(msg.acked_robots)} robot ids")
    return [seq for robot, seq in zip(msg.acked_robots, msg.acked) if robot == robot_id]


def held_for(msg: Heartbeat, robot_id: str) -> dict[int, float]:
    """Return, per seq a heartbeat acknowledges to ``robot_id``, how long the cloud had held it (s), where it says.

    Empty from a cloud that does not say (an older one), or when the arrays do not pair up.
    """
    if len(msg.acked_held_s) != len(msg.acked) or (msg.acked_robots and len(msg.acked_robots) != len(msg.acked)):
        return {}
    robots = msg.acked_robots or [robot_id] * len(msg.acked)
    return {seq: float(held) for robot, seq, held in zip(robots, msg.acked, msg.acked_held_s)
            if robot == robot_id and math.isfinite(held)}


def hier_tensor_msg(packet: Packet) -> HierTensor:
    """Return the message of one HierTrain packet (issue 16)."""
    return HierTensor(sender=packet.sender, receiver=packet.receiver, step=packet.step, kind=packet.kind,
                      layer=packet.layer, bits=packet.bits, scale=float(packet.scale),
                      zero_point=float(packet.zero_point), shape=list(packet.shape),
                      data=array.array("B", packet.data))


def packet_from_msg(msg: HierTensor) -> Packet:
    """Return the packet of a message as it came; core.hierexec checks its size against its shape on decoding."""
    from .core.hierexec import Packet  # torch: only a HierTrain worker pays for it, not every node using this module

    return Packet(msg.sender, msg.receiver, int(msg.step), int(msg.kind), int(msg.layer), int(msg.bits),
                  float(msg.scale), float(msg.zero_point), tuple(int(d) for d in msg.shape), bytes(msg.data))
