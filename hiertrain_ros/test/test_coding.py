"""Lossless coding of the packed codes (core.coding): bit-exact round trips, the decompression bound, bad input."""

import numpy as np
import pytest
import torch
import zstandard

from hiertrain_ros.core import codec
from hiertrain_ros.core.coding import compress, decompress, order0_bits


def _batch(seed=0, n=16, bits=4):
    features = torch.relu(torch.randn(n, 8, 8, 8, generator=torch.Generator().manual_seed(seed)) - 0.5)
    return codec.encode(features, bits=bits, split_point=3)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_round_trip_is_bit_exact_and_mostly_zero_codes_shrink(bits):
    payload = _batch(bits=bits)
    for coding in ("none", "zstd"):
        blob = compress(payload.data, coding)
        assert decompress(blob, coding, len(payload.data)) == payload.data
    assert len(compress(payload.data)) < len(payload.data)  # ReLU features: most codes are 0


def test_a_decompression_bomb_is_refused_before_it_expands():
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(1 << 30))  # 1 GiB of zeros in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="declares 1073741824 bytes, the shape needs 1048576"):
        decompress(bomb, "zstd", 1 << 20)
    # A frame longer than any coding of the shape's bytes is refused before its header is read.
    with pytest.raises(ValueError, match="larger than any coding of 4096 bytes"):
        decompress(bomb, "zstd", 4096)
    # A frame that hides its size is refused too, without decoding it.
    hidden = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(4096))
    with pytest.raises(ValueError, match="declares"):
        decompress(hidden, "zstd", 4096)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_a_coded_payload_decodes_to_the_same_features_as_the_uncoded_one(bits):
    features = torch.relu(torch.randn(16, 8, 8, 8, generator=torch.Generator().manual_seed(1)) - 0.5)
    plain = codec.encode(features, bits=bits, split_point=3)
    coded = codec.encode(features, bits=bits, split_point=3, coding="zstd")
    assert coded.coding == "zstd" and coded.wire_bits < plain.wire_bits
    assert torch.equal(codec.decode(coded), codec.decode(plain))


def test_a_coded_payload_is_checked_before_anything_is_decompressed():
    coded = _batch()
    coded = codec.FeaturePayload(**{**coded.__dict__, "data": compress(coded.data), "coding": "zstd"})
    codec.validate(coded)
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(1 << 30))
    with pytest.raises(ValueError, match="larger than any coding"):
        codec.decode(codec.FeaturePayload(**{**coded.__dict__, "data": bomb}))
    wrong_size = compress(bytes(len(coded.data) - 1))
    with pytest.raises(ValueError, match="declares"):
        codec.validate(codec.FeaturePayload(**{**coded.__dict__, "data": wrong_size}))
    with pytest.raises(ValueError, match="coding"):
        codec.validate(codec.FeaturePayload(**{**coded.__dict__, "coding": "lz4"}))


def test_malformed_payloads_give_a_clear_value_error():
    good = compress(_batch().data)
    size = len(_batch().data)
    for blob in (b"", b"\x00" * 10, good[:-5], good[:4] + b"\xff" * (len(good) - 4)):
        with pytest.raises(ValueError):
            decompress(blob, "zstd", size)
    with pytest.raises(ValueError, match="coding"):
        decompress(good, "lz4", size)
    with pytest.raises(ValueError, match="uncoded"):
        decompress(b"abc", "none", 4)


def test_order0_entropy_is_the_bound_of_a_context_free_coder():
    assert order0_bits(np.zeros(100, dtype=np.uint8)) == 0.0
    assert order0_bits(np.array([0, 1] * 50)) == pytest.approx(100.0)
    codes = codec.unpack(_batch().data, 4, 16 * 8 * 8 * 8)
    assert order0_bits(codes) < 4 * codes.size
