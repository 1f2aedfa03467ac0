"""Training-runtime model of Sepehri et al. §III-B (Eq. 1-5), ROS-free.

One forward pass per part is timed; backward passes are estimated from it
(``alpha`` x forward) plus an optimizer-update term (``beta`` FLOPs per
parameter over the device's theoretical speed), and communication is
bits / link speed.  The hierarchical epoch overlaps the edge's backward pass
with the link + cloud work (the ``max`` of Eq. 1); full-cloud training
(Eq. 5) sends raw images and does everything in the cloud.  Both equations move
one batch at a time through edge, link and cloud; :func:`pipelined_time` gives
the epoch when batches overlap across those stages, as this package's edge (which
never waits for the cloud) and a streaming full-cloud sender do.

Times returned by :func:`estimate_epoch` are for one epoch of ``samples``
samples.  Forward times are measured on *this* machine, which stands for the
cloud; the edge's forward time is that measurement scaled by
``edge_speed_ratio`` (by default ``s_cloud / s_edge``) to model a weaker edge.
See ``docs/runtime.md``.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from .models import INPUT_SIZE, SplitSpec, build_model, count_params, payload_bits_per_sample, split_model

log = logging.getLogger(__name__)

# Sepehri et al. §IV-C: the edge is an NVIDIA Quadro K620, the cloud an RTX 2080 Ti (theoretical FP32 speeds).
PAPER_EDGE_FLOPS = 863.2e9
PAPER_CLOUD_FLOPS = 13.45e12
# Average US upload speeds the paper simulates (§IV-C, its ref. [12]), bits/s.
LINK_PRESETS = {"3g": 1.1e6, "4g": 5.85e6}
# A raw 32x32 RGB 8-bit image: what full-cloud training sends per sample (paper Fig. 7).
RAW_INPUT_BITS = INPUT_SIZE * INPUT_SIZE * 3 * 8
# FLOPs per parameter per update (paper §III-B, its ref. [8]).
OPTIMIZER_BETA = {"sgd": 2.0, "adam": 18.0}


def beta_for(optimizer_name: str) -> float:
    """FLOPs per parameter per update: 2 for SGD, 18 for Adam."""
    try:
        return OPTIMIZER_BETA[optimizer_name.lower()]
    except KeyError:
        raise ValueError(f"no beta known for optimizer {optimizer_name!r}; "
                         f"known: {sorted(OPTIMIZER_BETA)}") from None


def parse_link(value) -> float:
    """Link speed in bits/s from ``"3g"``, ``"4g"`` or a positive number (``"2e6"``, ``1.5e6``)."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key in LINK_PRESETS:
            return LINK_PRESETS[key]
        try:
            value = float(key)
        except ValueError:
            raise ValueError(f"link must be one of {sorted(LINK_PRESETS)} or bits/s, got {value!r}") from None
    speed = float(value)
    if not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"link speed must be a positive number of bits/s, got {value!r}")
    return speed


def parse_link_schedule(value: str) -> list[tuple[float, float]]:
    """``"4g@0,3g@60,1e6@120"`` -> [(0.0, 5.85e6), (60.0, 1.1e6), (120.0, 1e6)]: the rate from each start (s) on.

    A single rate (``"3g"``) is the schedule [(0, rate)].  The first start must be 0; starts increase.
    """
    schedule = []
    for item in value.split(","):
        rate, at, start = item.partition("@")
        try:
            start_s = float(start) if at else 0.0
        except ValueError:
            raise ValueError(f"link schedule items are RATE@SECONDS, got {item!r}") from None
        schedule.append((start_s, parse_link(rate)))
    starts = [t for t, _ in schedule]
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise ValueError(f"link schedule must start at 0 and go forward in time, got {value!r}")
    return schedule


@dataclass(frozen=True)
class RuntimeParams:
    """Constants of Eq. 1-5.

    alpha:   backward/forward compute ratio; about 2 for convolutional nets with
             large batches (paper §III-B).
    beta:    FLOPs per parameter per optimizer update; 18 for Adam (the paper's
             VGG-16 setting), 2 for SGD (its ResNet-18 setting) -- see :func:`beta_for`.
    s_edge:  edge theoretical speed, FLOP/s (Quadro K620, 863.2 GFLOPS).
    s_cloud: cloud theoretical speed, FLOP/s (RTX 2080 Ti, 13.45 TFLOPS).
    s_net:   edge->cloud link speed, bits/s (3G upload, 1.1 Mbit/s).
    """

    alpha: float = 2.0
    beta: float = OPTIMIZER_BETA["adam"]
    s_edge: float = PAPER_EDGE_FLOPS
    s_cloud: float = PAPER_CLOUD_FLOPS
    s_net: float = LINK_PRESETS["3g"]

    def __post_init__(self):
        for name in ("alpha", "beta", "s_edge", "s_cloud", "s_net"):
            value = getattr(self, name)
            if not (value >= 0 if name in ("alpha", "beta") else value > 0) or not math.isfinite(value):
                raise ValueError(f"{name} must be {'>= 0' if name in ('alpha', 'beta') else '> 0'} "
                                 f"and finite, got {value}")


# ---- Eq. 2-5 and Eq. 1 ---------------------------------------------------------------------------

def edge_backward_time(t_edge_fwd: float, edge_params: int, params: RuntimeParams, updates: float = 1) -> float:
    """Eq. 2: alpha * T_edge,fwd + beta * P_edge / S_edge per update, ``updates`` times."""
    return params.alpha * t_edge_fwd + updates * params.beta * edge_params / params.s_edge


def cloud_backward_time(t_cloud_fwd: float, cloud_params: int, params: RuntimeParams, updates: float = 1) -> float:
    """Eq. 3: alpha * T_cloud,fwd + beta * P_cloud / S_cloud per update, ``updates`` times.

    The paper prints ``alpha * T_edge,backw`` as the first term; that would make the
    cloud's backward pass depend on the edge, so it is read as a typo for the
    cloud's own forward time (symmetric with Eq. 2, and how Eq. 5 reuses Eq. 3).
    """
    return params.alpha * t_cloud_fwd + updates * params.beta * cloud_params / params.s_cloud


def comm_time(bits: float, s_net: float) -> float:
    """Eq. 4: T_comm = D / S_net with D in bits and S_net in bits/s."""
    if s_net <= 0:
        raise ValueError(f"s_net must be > 0, got {s_net}")
    return bits / s_net


def hierarchical_time(t_edge_fwd: float, t_edge_bwd: float, t_comm: float,
                      t_cloud_fwd: float, t_cloud_bwd: float) -> float:
    """Eq. 1: edge forward, then the edge backward overlapped with link + cloud forward + cloud backward."""
    return t_edge_fwd + max(t_comm + t_cloud_fwd + t_cloud_bwd, t_edge_bwd)


def fullcloud_time(t_comm: float, t_cloud_fwd: float, t_cloud_bwd: float) -> float:
    """Eq. 5: raw inputs over the link, then the whole network's forward and backward in the cloud."""
    return t_comm + t_cloud_fwd + t_cloud_bwd


def pipelined_time(stage_times, batches: float) -> float:
    """Epoch time when successive batches overlap across stages (not in the paper).

    ``stage_times`` are each stage's total for the epoch (e.g. edge forward + backward,
    link, cloud forward + backward).  Eq. 1 and 5 take one batch through the stages at a
    time; with nothing sent back, the edge need not wait, so the next batch enters a stage
    as soon as the stage is free: the first batch fills the pipeline (one pass through every
    stage), the others follow at the slowest stage's pace.  Less than one batch counts as one.
    """
    if not batches > 0:
        raise ValueError(f"batches must be > 0, got {batches}")
    batches = max(batches, 1.0)
    per_batch = [t / batches for t in stage_times]
    return sum(per_batch) + (batches - 1) * max(per_batch)


# ---- forward-time measurement --------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_forward(module: nn.Module, x: torch.Tensor, reps: int, device: torch.device,
                  warmup: int = 1) -> tuple[float, object]:
    """Median wall time of ``reps`` forward passes after ``warmup`` untimed ones; also returns the output."""
    module.train()  # training-mode forward (batch-norm batch statistics, dropout), as in a training step
    with torch.no_grad():
        for _ in range(max(1, warmup)):
            out = module(x)
        _sync(device)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            out = module(x)
            _sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times), out


def measure_forward_times(spec: SplitSpec, batch_size: int, reps: int = 5, device: str = "cpu", *,
                          model: nn.Module | None = None, include_full: bool = True,
                          seed: int = 0, warmup: int = 1) -> tuple[float, float, float | None]:
    """Seconds per batch of (edge forward, cloud forward, full-model forward), measured here.

    Each is the median of ``reps`` timed ``torch.no_grad`` training-mode forward
    passes of a random batch after ``warmup`` (at least one) untimed passes.
    The cloud part is timed on the edge's compressed features.  ``model`` (from :func:`build_model` with the spec's
    arch/width/classes) avoids rebuilding the full network for every position;
    ``include_full=False`` skips the full-model timing (returned as ``None``).
    """
    if batch_size < 1 or reps < 1:
        raise ValueError(f"batch_size and reps must be >= 1, got {batch_size}, {reps}")
    dev = torch.device(device)
    torch.manual_seed(seed)
    full = model if model is not None else build_model(spec.arch, num_classes=spec.num_classes, width=spec.width)
    edge, cloud = split_model(full, spec)
    edge.to(dev)
    cloud.to(dev)
    x = torch.randn(batch_size, 3, INPUT_SIZE, INPUT_SIZE, device=dev)
    t_edge, (features, _) = _time_forward(edge, x, reps, dev, warmup)
    t_cloud, _ = _time_forward(cloud, features.detach(), reps, dev, warmup)
    t_full = None
    if include_full:
        was = next(full.parameters()).device
        full.to(dev)
        t_full, _ = _time_forward(full, x, reps, dev, warmup)
        full.to(was)
    log.debug("forward times %s batch %d: edge %.4g s, cloud %.4g s, full %s s",
              spec.model_id, batch_size, t_edge, t_cloud, t_full)
    return t_edge, t_cloud, t_full


# ---- one epoch -----------------------------------------------------------------------------------

def estimate_epoch(spec: SplitSpec, samples: int, batch_size: int, params: RuntimeParams | None = None,
                   forward_times: tuple[float, float, float] | None = None,
                   edge_speed_ratio: float | None = None, *, reps: int = 3, device: str = "cpu",
                   model: nn.Module | None = None) -> dict:
    """Estimated one-epoch runtime of hierarchical (Eq. 1-4) and full-cloud (Eq. 5) training.

    ``forward_times`` are seconds per batch of ``batch_size`` for (edge part,
    cloud part, whole network) on the cloud device; when ``None`` they are
    measured here with :func:`measure_forward_times`.  The edge's forward time
    is multiplied by ``edge_speed_ratio`` (default ``s_cloud / s_edge``) to model
    an edge slower than the machine that measured it; pass ``1.0`` when the
    given edge time already is the edge device's.

    Forward times scale with ``samples / batch_size``; the update term of
    Eq. 2/3 is paid once per optimizer step, ``ceil(samples / batch_size)``.
    D is ``payload_bits_per_sample * samples`` for the hierarchical split and
    ``RAW_INPUT_BITS * samples`` for full-cloud.
    """
    params = params or RuntimeParams()
    if samples < 1 or batch_size < 1:
        raise ValueError(f"samples and batch_size must be >= 1, got {samples}, {batch_size}")
    ratio = params.s_cloud / params.s_edge if edge_speed_ratio is None else float(edge_speed_ratio)
    if not ratio > 0:
        raise ValueError(f"edge_speed_ratio must be > 0, got {edge_speed_ratio}")
    full = model if model is not None else build_model(spec.arch, num_classes=spec.num_classes, width=spec.width)
    edge, cloud = split_model(full, spec)
    if forward_times is None:
        forward_times = measure_forward_times(spec, batch_size, reps, device, model=full)
    fwd_edge_batch, fwd_cloud_batch, fwd_full_batch = forward_times

    batches = samples / batch_size
    updates = math.ceil(samples / batch_size)
    edge_params, cloud_params, full_params = count_params(edge), count_params(cloud), count_params(full)
    payload_bits = payload_bits_per_sample(spec, edge.feature_shape, batch_size)

    t_edge_fwd = fwd_edge_batch * ratio * batches
    t_cloud_fwd = fwd_cloud_batch * batches
    t_edge_bwd = edge_backward_time(t_edge_fwd, edge_params, params, updates)
    t_cloud_bwd = cloud_backward_time(t_cloud_fwd, cloud_params, params, updates)
    t_comm = comm_time(payload_bits * samples, params.s_net)
    t_hier = hierarchical_time(t_edge_fwd, t_edge_bwd, t_comm, t_cloud_fwd, t_cloud_bwd)

    t_full_fwd = fwd_full_batch * batches
    t_full_bwd = cloud_backward_time(t_full_fwd, full_params, params, updates)
    t_full_comm = comm_time(RAW_INPUT_BITS * samples, params.s_net)
    t_full = fullcloud_time(t_full_comm, t_full_fwd, t_full_bwd)
    t_hier_pipe = pipelined_time((t_edge_fwd + t_edge_bwd, t_comm, t_cloud_fwd + t_cloud_bwd), batches)
    t_full_pipe = pipelined_time((t_full_comm, t_full_fwd + t_full_bwd), batches)

    return {
        "model_id": spec.model_id, "arch": spec.arch, "position": spec.split_point,
        "samples": samples, "batch_size": batch_size, "updates": updates,
        "alpha": params.alpha, "beta": params.beta, "s_edge": params.s_edge, "s_cloud": params.s_cloud,
        "s_net": params.s_net, "edge_speed_ratio": ratio,
        "forward_s_per_batch": {"edge": fwd_edge_batch, "cloud": fwd_cloud_batch, "full": fwd_full_batch},
        "edge_params": edge_params, "cloud_params": cloud_params, "full_params": full_params,
        "payload_bits_per_sample": payload_bits, "raw_bits_per_sample": RAW_INPUT_BITS,
        "t_edge_fwd": t_edge_fwd, "t_edge_bwd": t_edge_bwd, "t_comm": t_comm,
        "t_cloud_fwd": t_cloud_fwd, "t_cloud_bwd": t_cloud_bwd,
        "edge_backward_dominates": t_edge_bwd > t_comm + t_cloud_fwd + t_cloud_bwd,
        "t_full_comm": t_full_comm, "t_full_fwd": t_full_fwd, "t_full_bwd": t_full_bwd,
        "T_hier": t_hier, "T_full": t_full, "ratio": t_hier / t_full,
        "T_hier_pipelined": t_hier_pipe, "T_full_pipelined": t_full_pipe, "ratio_pipelined": t_hier_pipe / t_full_pipe,
    }
