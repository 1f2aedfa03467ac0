import dataclasses
import math

import numpy as np
import pytest
import torch

from hiertrain_ros.core import codec


@pytest.mark.parametrize("bits", codec.VALID_BITS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (4, 16, 16, 16)])
def test_round_trip_error_and_packed_length(bits, shape):
    torch.manual_seed(bits)
    x = torch.relu(torch.randn(shape))
    payload = codec.encode(x, bits=bits, split_point=3)
    n = math.prod(shape)
    assert len(payload.data) == math.ceil(n * bits / 8)
    assert payload.zero_point == float(x.min())  # 0 for any post-ReLU batch with a zero in it
    assert payload.scale == pytest.approx((float(x.max()) - float(x.min())) / (2 ** bits - 1))
    y = codec.decode(payload)
    assert y.shape == x.shape
    assert float((y - x).abs().max()) <= payload.scale / 2 + 1e-6


def test_two_4bit_values_per_byte_first_in_high_nibble():
    codes = np.array([1, 2, 15, 0, 7], dtype=np.uint8)
    assert codec.pack(codes, 4) == bytes([0x12, 0xF0, 0x70])
    np.testing.assert_array_equal(codec.unpack(codec.pack(codes, 4), 4, 5), codes)


def test_negative_batch_uses_min_as_zero_point():
    x = torch.tensor([[[[-2.0, 0.0], [1.0, 4.0]]]])
    payload = codec.encode(x, bits=8, split_point=1)
    assert payload.zero_point == -2.0
    assert float((codec.decode(payload) - x).abs().max()) <= payload.scale / 2 + 1e-6


def test_constant_batch_round_trips():
    x = torch.full((2, 1, 2, 2), 3.0)
    payload = codec.encode(x, bits=4, split_point=1)
    assert payload.scale == 0.0
    assert torch.equal(codec.decode(payload), x)


def _good():
    return codec.encode(torch.relu(torch.randn(2, 4, 8, 8)), bits=4, split_point=3, labels=[1, 2])


@pytest.mark.parametrize("change,match", [
    (dict(data=b"\x00" * 10), "bytes"),
    (dict(bits=3), "bits"),
    (dict(scale=float("nan")), "scale"),
    (dict(scale=float("inf")), "scale"),
    (dict(scale=-1.0), "scale"),
    (dict(zero_point=float("nan")), "zero_point"),
    (dict(shape=(2, 4, 8)), "4 dimensions"),
    (dict(shape=(2, 0, 8, 8)), "dimension"),
    (dict(shape=(2, 1 << 20, 1 << 20, 1 << 20)), "dimension"),
    (dict(shape=(60000, 60000, 60000, 1)), "exceeds"),
    (dict(labels=np.array([1], dtype=np.int16)), "label"),
    (dict(encoder_version=99), "encoder version"),
])
def test_malformed_payloads_rejected(change, match):
    bad = dataclasses.replace(_good(), **change)
    with pytest.raises(ValueError, match=match):
        codec.decode(bad)


def test_encode_rejects_non_finite_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(torch.tensor([[[[float("nan")]]]]), bits=4, split_point=1)
    with pytest.raises(ValueError, match="N x C x H x W"):
        codec.encode(torch.zeros(3, 3), bits=4, split_point=1)
    with pytest.raises(ValueError, match="bits"):
        codec.encode(torch.zeros(1, 1, 1, 1), bits=5, split_point=1)
