"""Lossless coding of a feature batch's packed codes (issue 14): zstandard, with a bounded decompression.

The quantized features are very compressible (most 4-bit codes are 0), and this is the layer that takes them
below the raw packing.  zstandard because it is a well-kept, fast library with a streaming-free one-shot API
whose frames declare their decoded size, which makes the bound cheap to check before anything is allocated.

- :func:`compress` codes packed bytes (``coding`` "none" passes them through).
- :func:`check` reads a payload's header only: the frame must be no longer than any coding of the size the batch's
  shape implies, and must declare exactly that size.  :func:`decompress` checks, then decompresses with that size
  as the hard limit, so a tiny message can never expand into gigabytes; every malformed payload is a
  ``ValueError``.
- :func:`order0_bits` is the order-0 entropy of the codes, the bound a per-symbol coder without context can
  approach, to measure the coders against.

No ROS here.
"""

from __future__ import annotations

import numpy as np
import zstandard

CODINGS = ("none", "zstd")
DEFAULT_CODING = "zstd"  # 2.2x below the raw packing at 0.3 ms per batch (docs/seed_systems.md)
DEFAULT_LEVEL = 1  # measured (benchmarks/coding_bench.py): smaller than level 3 or 9 on these codes, and fastest
# zstd's own compressBound(n) is n + n/256 + 64 at most (plus frame headers): a frame above this bound for its
# declared size was not made by an encoder.
_SLACK = 256


def compress(packed: bytes, coding: str = "zstd", level: int = DEFAULT_LEVEL) -> bytes:
    if coding == "none":
        return packed
    if coding != "zstd":
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(packed)


def check(blob: bytes, coding: str, expected_size: int) -> None:
    """Raise ``ValueError`` unless ``blob`` can decode to ``expected_size`` bytes; reads the header only."""
    if coding == "none":
        if len(blob) != expected_size:
            raise ValueError(f"uncoded payload is {len(blob)} bytes, the shape needs {expected_size}")
        return
    if coding != "zstd":
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    if len(blob) > expected_size + expected_size // 256 + _SLACK:
        raise ValueError(f"zstd frame of {len(blob)} bytes is larger than any coding of {expected_size} bytes")
    try:
        declared = zstandard.get_frame_parameters(blob).content_size
    except zstandard.ZstdError as exc:
        raise ValueError(f"not a zstd frame: {exc}") from None
    if declared != expected_size:  # also refuses frames that do not declare their size
        raise ValueError(f"zstd frame declares {declared} bytes, the shape needs {expected_size}")


def decompress(blob: bytes, coding: str, expected_size: int) -> bytes:
    """Return the packed bytes of ``blob``, which must decode to exactly ``expected_size`` bytes."""
    check(blob, coding, expected_size)
    if coding == "none":
        return blob
    try:
        out = zstandard.ZstdDecompressor().decompress(blob, max_output_size=expected_size)
    except zstandard.ZstdError as exc:
        raise ValueError(f"damaged zstd frame: {exc}") from None
    if len(out) != expected_size:
        raise ValueError(f"zstd frame decoded to {len(out)} bytes, the shape needs {expected_size}")
    return out


def order0_bits(codes: np.ndarray) -> float:
    """Order-0 entropy of ``codes`` in bits, in total: the size an ideal context-free coder reaches."""
    _, counts = np.unique(np.asarray(codes).reshape(-1), return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())
