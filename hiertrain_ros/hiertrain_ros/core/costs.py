"""Per-position memory, compute and communication costs (Sepehri et al., Figs 5-7).

For every separation position of an architecture, :func:`cost_table` reports

* parameters of the edge part (backbone + compression convolution + one-layer
  early exit), of the cloud part and of the full (unsplit) model;
* multiply-accumulates (MACs) per sample of one training step on the edge, on
  the cloud and for the full-cloud baseline;
* the compressed feature map that crosses the link and its size in bits per
  sample, next to the raw 32x32x3 8-bit image that full-cloud training sends.

MAC convention
--------------
Forward MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`
on one ``1 x 3 x 32 x 32`` sample in eval mode; it counts convolutions and
matrix multiplies only (batch norm, ReLU, pooling, residual additions and the
quantizer are not counted), and ``MACs = FLOPs / 2``.  A training step is taken
as ``3 x forward`` (the backward pass costs about ``2 x`` the forward pass: one
product for the input gradient, one for the weight gradient); the optimizer
update is not counted.  Edge MACs include the compression convolution and the
early-exit fully connected layer.

Bits on the wire
----------------
``bits_per_sample`` is the packed b-bit codes of one sample (rounded up to whole
bytes) plus the batch's single 32-bit float scale amortized over
``batch_size`` samples, as :func:`models.payload_bits_per_sample` defines it.
The compression convolution has ``floor(budget_bits / (bits * H * W))``
output channels, capped at the backbone's channels and at least 1 (so a budget
smaller than one channel's ``bits * H * W`` is exceeded; a warning is logged).

Models are built and split on the meta device: shapes and parameter counts are
exact, but no weight is initialized and no layer is run, so a full table takes
about a second.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import asdict, dataclass
from typing import Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import (DEFAULT_BITS, DEFAULT_BUDGET_BITS, INPUT_SIZE, SplitSpec, build_model, count_params,
                     payload_bits_per_sample, positions as valid_positions, split_model)

log = logging.getLogger(__name__)

# Backward ~ 2 x forward, so one training step ~ 3 x the forward MACs.
TRAIN_STEP_FACTOR = 3
# A raw 32x32 RGB frame with 8 bits per channel: what full-cloud training sends per sample.
RAW_IMAGE_BITS = INPUT_SIZE * INPUT_SIZE * 3 * 8
SCALE_BITS = 32


@dataclass(frozen=True)
class PositionCost:
    """Costs of one separation position; MACs are per sample of one training step."""

    arch: str
    position: int
    width: float
    bits: int
    budget_bits: int
    batch_size: int
    backbone_channels: int            # channels of the edge backbone's output (before compression)
    compressed_channels: int          # output channels of the compression convolution
    feature_shape: tuple[int, int, int]  # C x H x W of the compressed map sent to the cloud
    edge_params: int
    edge_backbone_params: int         # edge params without the compression conv and early exit
    cloud_params: int
    full_params: int                  # full-cloud baseline: the whole unsplit model
    edge_forward_macs: int
    edge_backbone_forward_macs: int
    cloud_forward_macs: int
    full_forward_macs: int
    edge_macs: int                    # training step = TRAIN_STEP_FACTOR x forward
    cloud_macs: int
    full_macs: int
    payload_bits: int                 # packed codes of one sample (whole bytes)
    bits_per_sample: float            # payload + 32-bit scale / batch_size
    raw_bits: int                     # raw 8-bit 32x32x3 image (full-cloud)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["feature_shape"] = list(self.feature_shape)
        return d


def forward_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward MACs (FlopCounterMode FLOPs / 2) of ``module`` on one input of ``input_shape``.

    Counted on a shape-only (meta-device) copy in eval mode: nothing is computed
    and ``module`` itself is left untouched.
    """
    return _meta_macs(copy.deepcopy(module), input_shape)


def _meta_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Like :func:`forward_macs` but on ``module`` itself: moves it to meta and leaves it in eval mode."""
    module.to("meta").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(input_shape, device="meta"))
    return int(counter.get_total_flops()) // 2


def cost_table(arch: str, *, positions: Iterable[int] | None = None, bits: int = DEFAULT_BITS,
               budget_bits: int = DEFAULT_BUDGET_BITS, width: float = 1.0, num_classes: int = 10,
               batch_size: int = 32) -> list[PositionCost]:
    """One :class:`PositionCost` per separation position (all positions when ``positions`` is None).

    MACs are counted on one 1x3x32x32 sample and a training step counts as
    3 x forward (see the module docstring); parameters are exact counts.
    Results are cached per argument set (the rows are immutable).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if budget_bits < 1:
        raise ValueError(f"budget_bits must be >= 1, got {budget_bits}")
    valid = valid_positions(arch)
    chosen = tuple(valid) if positions is None else tuple(int(p) for p in positions)
    for p in chosen:
        if p not in valid:
            raise ValueError(f"position for {arch} must be in {valid[0]}..{valid[-1]}, got {p}")
    return list(_cost_rows(arch, chosen, bits, budget_bits, float(width), num_classes, batch_size))


@functools.lru_cache(maxsize=32)
def _cost_rows(arch: str, chosen: tuple[int, ...], bits: int, budget_bits: int, width: float,
               num_classes: int, batch_size: int) -> tuple[PositionCost, ...]:
    # Everything is built on the meta device: shapes and parameter counts are exact,
    # but no weights are initialized and no layer is actually run.
    specs = [SplitSpec(arch, p, num_classes=num_classes, width=width, bits=bits, budget_bits=budget_bits)
             for p in chosen]
    with torch.device("meta"):
        full = build_model(arch, num_classes=num_classes, width=width)
        parts = [split_model(full, spec) for spec in specs]
    image = (1, 3, INPUT_SIZE, INPUT_SIZE)
    full_params = count_params(full)
    rows = []
    for spec, (edge, cloud) in zip(specs, parts):
        p = spec.split_point
        compressed, h, w = edge.feature_shape
        counts = dict(
            backbone_channels=edge.compress[0].in_channels,
            edge_params=count_params(edge), edge_backbone_params=count_params(edge.backbone),
            cloud_params=count_params(cloud))
        edge_fwd = _meta_macs(edge, image)
        backbone_fwd = _meta_macs(edge.backbone, image)
        cloud_fwd = _meta_macs(cloud, (1, *edge.feature_shape))
        bits_per_sample = payload_bits_per_sample(spec, edge.feature_shape, batch_size)
        rows.append(dict(
            arch=arch, position=p, width=width, bits=bits, budget_bits=budget_bits, batch_size=batch_size,
            compressed_channels=compressed, feature_shape=(compressed, h, w), full_params=full_params,
            edge_forward_macs=edge_fwd, edge_backbone_forward_macs=backbone_fwd, cloud_forward_macs=cloud_fwd,
            edge_macs=TRAIN_STEP_FACTOR * edge_fwd, cloud_macs=TRAIN_STEP_FACTOR * cloud_fwd,
            payload_bits=int(round(bits_per_sample - SCALE_BITS / batch_size)),
            bits_per_sample=bits_per_sample, raw_bits=RAW_IMAGE_BITS, **counts))
    full_fwd = _meta_macs(full, image)
    out = []
    for row in rows:
        cost = PositionCost(full_forward_macs=full_fwd, full_macs=TRAIN_STEP_FACTOR * full_fwd, **row)
        log.debug("%s position %d: edge %d params, %d MACs/step; %g bits/sample",
                  arch, cost.position, cost.edge_params, cost.edge_macs, cost.bits_per_sample)
        if cost.payload_bits > budget_bits:
            log.warning("%s position %d: one %dx%d channel at %d bits (%d bits) exceeds the %d-bit budget",
                        arch, cost.position, cost.feature_shape[1], cost.feature_shape[2], bits,
                        cost.payload_bits, budget_bits)
        out.append(cost)
    return tuple(out)
