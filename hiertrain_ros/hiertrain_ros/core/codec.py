"""b-bit feature codec with one full-precision scale per batch.

``encode`` quantizes a non-negative (post-ReLU) feature batch to ``bits`` bits,
``scale = (max - min) / (2**bits - 1)`` and ``zero_point = min``, and packs the
codes densely, first value in the most significant bits of a byte (two 4-bit
values per byte); with ``coding="zstd"`` the packed bytes are then coded
losslessly (core.coding).  ``decode`` validates a payload before allocating anything
from it and returns the dequantized batch.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np

from . import coding as lossless

if TYPE_CHECKING:
    import torch

VALID_BITS = (1, 2, 4, 8)
# Bumped whenever the packing or the payload fields change meaning.
ENCODER_VERSION = 1
# Sanity limits checked before any allocation: far above any real batch.
MAX_DIM = 1 << 16
MAX_ELEMENTS = 1 << 28
# Post-BN/ReLU activations are O(1..100); a decoded value beyond this is an attack or a bug,
# and one such batch would turn the cloud's weights to NaN for good.
MAX_FEATURE = 1e4
# Robot ids are names ("r1", "fleet/r1"); the cloud keeps thousands of them in its ledger.
MAX_ROBOT_ID = 128


def model_hash(model_id: str) -> int:
    """Return the 32-bit fingerprint of a model id that travels in every payload (CRC-32)."""
    return zlib.crc32(model_id.encode())


def packed_size(num_values: int, bits: int) -> int:
    """Bytes needed for ``num_values`` codes of ``bits`` bits: ceil(n*b/8)."""
    return math.ceil(num_values * bits / 8)


@dataclass(frozen=True, eq=False)
class FeaturePayload:
    """What travels from edge to cloud for one batch."""

    shape: tuple[int, int, int, int]
    bits: int
    scale: float
    zero_point: float
    data: bytes
    labels: np.ndarray  # int16, -1 = unlabelled
    split_point: int
    encoder_version: int = ENCODER_VERSION
    seq: int = 0
    model_hash: int = 0  # model_hash() of the model id the encoder was built for; 0 = not stated
    frame_stamps: tuple = field(default=())  # (sec, nanosec) per sample; opaque to the core
    robot_id: str = ""  # the edge that made the batch; (robot_id, seq) identifies it
    coding: str = "none"  # how ``data`` holds the packed codes: "none" or "zstd" (core.coding)

    @property
    def num_samples(self) -> int:
        return self.shape[0]

    @property
    def wire_bits(self) -> int:
        """Bits of (coded) codes plus the one 32-bit scale of the batch."""
        return len(self.data) * 8 + 32


def _rounded(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, float, float]:
    """Codes of ``x`` as floats (0 .. 2**bits - 1), scale and zero point: one scale per batch."""
    import torch

    if bits not in VALID_BITS:
        raise ValueError(f"bits must be one of {VALID_BITS}, got {bits}")
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("features contain NaN or Inf; refusing to quantize")
    levels = (1 << bits) - 1
    scale = (hi - lo) / levels
    if scale == 0.0:
        return torch.zeros_like(x), scale, lo
    return torch.round((x - lo) / scale).clamp_(0, levels), scale, lo


def quantize(features: torch.Tensor, bits: int) -> tuple[np.ndarray, float, float]:
    """Codes (uint8, one per value), scale and zero point of a batch."""
    import torch  # in the tensor functions only: pack/unpack/validate serve torch-free nodes

    codes, scale, lo = _rounded(features.detach().to(torch.float32).cpu(), bits)
    return codes.to(torch.uint8).numpy(), scale, lo


def dequantize(codes: np.ndarray, scale: float, zero_point: float) -> torch.Tensor:
    import torch

    return torch.from_numpy(codes.astype(np.float32)) * scale + zero_point


def fake_quantize(features: torch.Tensor, bits: int) -> torch.Tensor:
    """Return what the cloud decodes from ``features`` (:func:`quantize`, then :func:`dequantize`) for training.

    The gradient passes straight through the rounding (the straight-through estimator).
    """
    x = features.detach()
    codes, scale, lo = _rounded(x, bits)
    return features + (codes * scale + lo - x)


def pack(codes: np.ndarray, bits: int) -> bytes:
    """Pack uint8 codes (< 2**bits) densely, first value in the high bits."""
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return flat.tobytes()
    per_byte = 8 // bits
    pad = (-flat.size) % per_byte
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, dtype=np.uint8)])
    groups = flat.reshape(-1, per_byte)
    out = np.zeros(groups.shape[0], dtype=np.uint8)
    for j in range(per_byte):
        out |= groups[:, j] << np.uint8(8 - bits * (j + 1))
    return out.tobytes()


def unpack(data: bytes, bits: int, num_values: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw[:num_values].copy()
    per_byte = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    out = np.empty((raw.size, per_byte), dtype=np.uint8)
    for j in range(per_byte):
        out[:, j] = (raw >> np.uint8(8 - bits * (j + 1))) & mask
    return out.reshape(-1)[:num_values]


def encode(features: torch.Tensor, *, bits: int, split_point: int, labels=None, coding: str = "none",
           **meta) -> FeaturePayload:
    """Quantize, pack and code an N x C x H x W batch.  ``labels`` default to -1 (unlabelled)."""
    if features.dim() != 4:
        raise ValueError(f"features must be N x C x H x W, got shape {tuple(features.shape)}")
    codes, scale, zero_point = quantize(features, bits)
    n = features.shape[0]
    labels = np.full(n, -1, dtype=np.int16) if labels is None else np.asarray(labels, dtype=np.int16).reshape(-1)
    if labels.size != n:
        raise ValueError(f"need one label per sample ({n}), got {labels.size}")
    return FeaturePayload(shape=tuple(int(d) for d in features.shape), bits=bits, scale=scale,
                          zero_point=zero_point, data=lossless.compress(pack(codes, bits), coding), labels=labels,
                          split_point=split_point, coding=coding, **meta)


def validate(payload: FeaturePayload) -> None:
    """Raise ``ValueError`` naming the first inconsistency; allocates nothing."""
    if payload.bits not in VALID_BITS:
        raise ValueError(f"bits must be one of {VALID_BITS}, got {payload.bits}")
    shape = payload.shape
    if len(shape) != 4:
        raise ValueError(f"shape must have 4 dimensions (N, C, H, W), got {tuple(shape)}")
    if any((not isinstance(d, (int, np.integer))) or d < 1 or d > MAX_DIM for d in shape):
        raise ValueError(f"each dimension must be an integer in 1..{MAX_DIM}, got {tuple(shape)}")
    n = math.prod(int(d) for d in shape)
    if n > MAX_ELEMENTS:
        raise ValueError(f"batch of {n} values exceeds the limit of {MAX_ELEMENTS}")
    if not (math.isfinite(payload.scale) and payload.scale >= 0):
        raise ValueError(f"scale must be finite and >= 0, got {payload.scale}")
    if not math.isfinite(payload.zero_point):
        raise ValueError(f"zero_point must be finite, got {payload.zero_point}")
    top = abs(payload.zero_point) + payload.scale * ((1 << payload.bits) - 1)
    if not top <= MAX_FEATURE:
        raise ValueError(f"scale/zero_point decode to values up to {top:.3g}, the limit is {MAX_FEATURE:g}")
    expected = packed_size(n, payload.bits)
    if payload.coding != "none":
        lossless.check(payload.data, payload.coding, expected)  # the header only: nothing decompressed yet
    elif len(payload.data) != expected:
        raise ValueError(f"data is {len(payload.data)} bytes, shape {tuple(shape)} at {payload.bits} bits "
                         f"needs {expected}")
    if len(payload.labels) != shape[0]:
        raise ValueError(f"need one label per sample ({shape[0]}), got {len(payload.labels)}")
    if len(payload.robot_id) > MAX_ROBOT_ID:
        raise ValueError(f"robot_id is {len(payload.robot_id)} characters, the limit is {MAX_ROBOT_ID}")
    if payload.encoder_version != ENCODER_VERSION:
        raise ValueError(f"encoder version {payload.encoder_version} is not the expected {ENCODER_VERSION}")


def decode(payload: FeaturePayload) -> torch.Tensor:
    """Return validated, dequantized float32 batch of ``payload.shape``."""
    validate(payload)
    n = math.prod(payload.shape)
    packed = lossless.decompress(payload.data, payload.coding, packed_size(n, payload.bits))
    codes = unpack(packed, payload.bits, n).reshape(payload.shape)
    return dequantize(codes, payload.scale, payload.zero_point)
