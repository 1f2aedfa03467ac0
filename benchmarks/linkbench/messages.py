"""Frame batches for the full-cloud baselines, carried in the project's FeatureBatch message.

Raw mode: a FeatureBatch with ``bits = 8``, ``shape = [N, 32, 32, 3]`` (HWC, rgb8),
``scale = 1``, ``zero_point = 0`` and the frames' bytes as ``data``: a valid codec
payload (``conversions.payload_from_msg`` accepts it), with the labels in the same
message.  A sensor_msgs/Image of height N*32 would cost the same bytes but has no
field for the labels.

JPEG mode: each frame is JPEG-encoded on its own with OpenCV (what image_transport's
``compressed`` transport does per image); ``data`` is N little-endian uint32 lengths
followed by the N JPEG streams.  ``model_hash`` names the format so that the cloud never
mistakes one for the other.
"""

from __future__ import annotations

import numpy as np

from hiertrain_ros.core import codec

RAW_FORMAT = codec.model_hash("frames-rgb8")
JPEG_FORMAT = codec.model_hash("frames-jpeg")


def raw_payload(frames: np.ndarray, labels: np.ndarray, seq: int) -> codec.FeaturePayload:
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    return codec.FeaturePayload(shape=tuple(int(d) for d in frames.shape), bits=8, scale=1.0, zero_point=0.0,
                                data=frames.tobytes(), labels=np.asarray(labels, dtype=np.int16),
                                split_point=0, seq=seq, model_hash=RAW_FORMAT)


def raw_frames(payload: codec.FeaturePayload) -> np.ndarray:
    if payload.model_hash != RAW_FORMAT or payload.bits != 8:
        raise ValueError(f"not a raw frame batch: model_hash {payload.model_hash:08x}, bits {payload.bits}")
    return np.frombuffer(payload.data, dtype=np.uint8).reshape(payload.shape).copy()  # writable for torch


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # one 32x32 frame at a time: a thread pool only adds start-up and teardown
    return cv2


def jpeg_payload(frames: np.ndarray, labels: np.ndarray, seq: int, quality: int = 90) -> codec.FeaturePayload:
    """Frames (N x H x W x 3 RGB) as per-frame JPEGs; not codec-validatable (variable length)."""
    cv2 = _cv2()
    streams = []
    for frame in frames:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("OpenCV could not JPEG-encode a frame")
        streams.append(buf.tobytes())
    header = np.asarray([len(s) for s in streams], dtype="<u4").tobytes()
    return codec.FeaturePayload(shape=tuple(int(d) for d in frames.shape), bits=8, scale=1.0, zero_point=0.0,
                                data=header + b"".join(streams), labels=np.asarray(labels, dtype=np.int16),
                                split_point=0, seq=seq, model_hash=JPEG_FORMAT)


def jpeg_frames(shape, data: bytes, model_hash: int) -> np.ndarray:
    """Return decoded N x H x W x 3 RGB frames of a JPEG batch (checks lengths before decoding)."""
    cv2 = _cv2()
    if model_hash != JPEG_FORMAT or len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"not a JPEG frame batch: model_hash {model_hash:08x}, shape {tuple(shape)}")
    n = int(shape[0])
    if not 0 < n <= codec.MAX_DIM or len(data) < 4 * n:
        raise ValueError(f"JPEG batch of {n} frames has only {len(data)} bytes")
    lengths = np.frombuffer(data[:4 * n], dtype="<u4").astype(np.int64)
    if 4 * n + int(lengths.sum()) != len(data):
        raise ValueError(f"JPEG lengths sum to {int(lengths.sum())}, data holds {len(data) - 4 * n}")
    out = np.empty((n, int(shape[1]), int(shape[2]), 3), dtype=np.uint8)
    offset = 4 * n
    for i, length in enumerate(lengths):
        buf = np.frombuffer(data, dtype=np.uint8, count=int(length), offset=offset)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None or img.shape != out.shape[1:]:
            raise ValueError(f"frame {i} is not a {out.shape[1:]} JPEG")
        out[i] = img[..., ::-1]
        offset += int(length)
    return out
