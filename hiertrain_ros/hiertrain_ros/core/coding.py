"""Lossless coding of a feature batch's packed codes (issue 14): zstandard, with a bounded decompression.

The quantized features are very compressible (most 4-bit codes are 0), and this is the layer that takes them
below the raw packing.  zstandard because it is a well-kept, fast library with a streaming-free one-shot API
whose frames declare their decoded size, which makes the bound cheap to check before anything is allocated.

- :func:`compress` codes packed bytes (``coding`` "none" passes them through).
- :func:`decompress` first checks the size the frame declares against the size the batch's shape implies, then
  decompresses with that size as the hard limit, so a tiny message can never expand into gigabytes; every
  malformed payload is a ``ValueError``.
- :func:`order0_bits` is the order-0 entropy of the codes, the bound a per-symbol coder without context can
  approach, to measure the coders against.

No ROS here.
"""

from __future__ import annotations

import numpy as np
import zstandard

CODINGS = ("none", "zstd")
DEFAULT_LEVEL = 1  # measured (benchmarks/coding_bench.py): smaller than level 3 or 9 on these codes, and fastest


def compress(packed: bytes, coding: str = "zstd", level: int = DEFAULT_LEVEL) -> bytes:
    if coding == "none":
        return packed
    if coding != "zstd":
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(packed)


def decompress(blob: bytes, coding: str, expected_size: int) -> bytes:
    """Return the packed bytes of ``blob``, which must decode to exactly ``expected_size`` bytes."""
    if coding == "none":
        if len(blob) != expected_size:
            raise ValueError(f"uncoded payload is {len(blob)} bytes, the shape needs {expected_size}")
        return blob
    if coding != "zstd":
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    try:
        declared = zstandard.get_frame_parameters(blob).content_size
    except zstandard.ZstdError as exc:
        raise ValueError(f"not a zstd frame: {exc}") from None
    if declared != expected_size:  # also refuses frames that do not declare their size
        raise ValueError(f"zstd frame declares {declared} bytes, the shape needs {expected_size}")
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
