"""Validation of raw camera frames (the pure part of sensor_msgs/Image handling).

Every check happens before any array is built from the data, so a hostile
message costs no allocation.
"""

from __future__ import annotations

import numpy as np

INPUT_SIZE = 32  # side of the square model input, px
ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
MAX_SIDE = 4096  # above 4K UHD, small enough that a hostile header cannot cost gigabytes


def decode_frame(encoding: str, height: int, width: int, step: int, data, max_side: int = MAX_SIDE) -> np.ndarray:
    """RGB uint8 H x W x 3 view of a frame, or ``ValueError`` naming what is wrong.

    ``max_side`` (at most ``MAX_SIDE``) is the largest height or width accepted.
    """
    channels = ENCODINGS.get(encoding)
    if channels is None:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    max_side = min(max_side, MAX_SIDE)
    if not (1 <= height <= max_side and 1 <= width <= max_side):
        raise ValueError(f"height and width must be in 1..{max_side}, got {height}x{width}")
    row = width * channels
    if step < row:
        raise ValueError(f"step {step} is smaller than width*channels {row}")
    if step > row + 64 * channels * 64:
        raise ValueError(f"step {step} is implausibly large for width {width}")
    if len(data) != step * height:
        raise ValueError(f"data is {len(data)} bytes, step*height is {step * height}")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row].reshape(height, width, channels)
    if encoding == "rgb8":
        return raw
    if encoding == "bgr8":
        return raw[:, :, ::-1]
    return np.repeat(raw, 3, axis=2)


def resize_nearest(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an H x W x C frame (a camera at another resolution), contiguous."""
    if frame.shape[:2] == (height, width):
        return frame
    rows = np.arange(height) * frame.shape[0] // height
    cols = np.arange(width) * frame.shape[1] // width
    return np.ascontiguousarray(frame[rows][:, cols])
