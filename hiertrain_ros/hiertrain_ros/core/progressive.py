"""Progressive inference (EdgeLessPart): where the exits go, when an exit is sure enough, what offloading costs.

- :func:`place_exits` puts k exits in one part of the network, the last at the part's end: *linear* spreads
  them evenly over the part's candidate positions; *Pareto* puts them at the quantiles of a bounded Pareto
  distribution over the part's cumulative compute (shape log_4 5, the 80-20 rule the paper cites), so they
  crowd where the compute is cheap and the early layers are.
- :func:`edge_exits` does that for the edge part of a :class:`SplitSpec`, in the ``exits`` form
  :func:`core.models.build_edge` takes.
- :func:`decide` is the progressive decision: the first exit whose confidence (max softmax, or one minus the
  normalised entropy) reaches ``c_thr`` answers; none does: offload.
- :func:`answers` turns the decisions into per-sample arrays (class, max-softmax confidence, exit, sure), as the
  edge and cloud trainers answer.
- :func:`answer_early` answers a batch exit by exit, the frames an exit is sure about leaving the batch there.
- :func:`load_head` loads a user's exit head from ``module:factory``.
- :func:`cloud_exits` and :func:`progressive_cloud` do the same for the cloud part: its k - 1 early exits sit
  after the split, and its k-th is the network's own output.
- :func:`progressive_edge` builds the edge part with k exits (placement, head) as the edge node does: k = 1 with
  the default head is exactly ``build_edge(spec, seed=seed)``.
- ``OFFLOAD_POLICIES``: which inference frames the edge sends to the cloud (``always``: every one, as before
  progressive answering; ``unsure``: those no edge exit is sure about; ``never``: none).
- :func:`offload_cost` prices one offloaded sample: cloud compute time and bytes on the wire.
- :func:`split_by_memory` and :func:`split_by_latency` choose the split as EdgeLessPart §II does: the deepest
  position whose edge part needs at most a share of the whole model's training memory (the paper: 70 %), or
  whose edge forward pass fits a latency budget on a measured profile.

No ROS here.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

PLACEMENTS = ("linear", "pareto")
CONFIDENCE = ("max_softmax", "entropy")
OFFLOAD_POLICIES = ("always", "unsure", "never")
MAX_EXITS = 3
PARETO_SHAPE = math.log(5, 4)  # 80 % of the mass in the first 20 % (the paper's reference [22])
PARETO_RANGE = 10.0            # bounded Pareto on [1, 10], mapped onto the part's compute


def _quantile(u: float) -> float:
    """Fraction of the part's compute at the ``u`` quantile of the bounded Pareto distribution (u=1: all)."""
    h, a = PARETO_RANGE, PARETO_SHAPE
    x = (1 - u * (1 - h ** -a)) ** (-1 / a)
    return (x - 1) / (h - 1)


def place_exits(cumulative_cost: Sequence[float], k: int, how: str = "linear") -> list[int]:
    """Return k candidate indices (1-based) for the exits of a part, the last one its end.

    ``cumulative_cost[i - 1]`` is the part's compute up to candidate position i (increasing).
    """
    n = len(cumulative_cost)
    if how not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {how!r}")
    if not 1 <= k <= min(MAX_EXITS, n):
        raise ValueError(f"exits per part must be in 1..{min(MAX_EXITS, n)} for {n} positions, got {k}")
    if how == "linear":
        wanted = [math.ceil(j * n / k) for j in range(1, k + 1)]
    else:
        total = cumulative_cost[-1]
        wanted = [next(i for i, c in enumerate(cumulative_cost, start=1) if c >= _quantile(j / k) * total - 1e-9)
                  for j in range(1, k + 1)]
    # Distinct and increasing, the last at the end: push collisions later, then pull them back from the end.
    chosen = []
    for w in wanted:
        chosen.append(max(w, chosen[-1] + 1) if chosen else w)
    chosen[-1] = n
    for i in range(k - 2, -1, -1):
        chosen[i] = min(chosen[i], chosen[i + 1] - 1)
    return chosen


def edge_exits(spec, k: int, how: str = "linear") -> tuple[int, ...]:
    """Positions of the edge's k - 1 exits before the split (the k-th is the split's, which trains the edge)."""
    from .costs import cost_table

    rows = cost_table(spec.arch, positions=range(1, spec.split_point + 1), width=spec.width,
                      num_classes=spec.num_classes)
    return tuple(place_exits([r.edge_backbone_forward_macs for r in rows], k, how)[:-1])


def cloud_exits(spec, k: int, how: str = "linear") -> tuple[int, ...]:
    """Positions of the cloud's k - 1 early exits after the split (the k-th is the network's own output)."""
    from .archs import POSITIONS
    from .costs import cost_table

    rows = cost_table(spec.arch, positions=range(spec.split_point, len(POSITIONS[spec.arch]) + 1), width=spec.width,
                      num_classes=spec.num_classes)
    base = rows[0].edge_backbone_forward_macs
    cumulative = [r.edge_backbone_forward_macs - base for r in rows[1:]] + [rows[0].full_forward_macs - base]
    return tuple(spec.split_point + i for i in place_exits(cumulative, k, how)[:-1])


@dataclass(frozen=True)
class Decision:
    exit: int | None      # index of the exit that answered; None: no exit was sure, offload
    class_id: int         # the answer (for None: the last exit's best guess)
    confidence: float


def confidence(logits: torch.Tensor, measure: str = "max_softmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Return (class, confidence in [0, 1]) per row of ``logits``."""
    if measure not in CONFIDENCE:
        raise ValueError(f"confidence must be one of {CONFIDENCE}, got {measure!r}")
    p = torch.softmax(logits.float(), dim=-1)
    top, cls = p.max(dim=-1)
    if measure == "max_softmax":
        return cls, top
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)
    return cls, 1 - entropy / math.log(p.shape[-1])


def decide(exit_logits: Sequence[torch.Tensor], c_thr: float, measure: str = "max_softmax") -> list[Decision]:
    """Decide a batch progressively: per sample, the first exit at least ``c_thr`` sure, else offload."""
    if not 0 <= c_thr <= 1:
        raise ValueError(f"c_thr must be in [0, 1], got {c_thr}")
    if not exit_logits:
        raise ValueError("need the logits of at least one exit")
    per_exit = [confidence(logits, measure) for logits in exit_logits]
    out = []
    for row in range(exit_logits[0].shape[0]):
        for index, (cls, conf) in enumerate(per_exit):
            if conf[row] >= c_thr:
                out.append(Decision(index, int(cls[row]), float(conf[row])))
                break
        else:
            cls, conf = per_exit[-1]
            out.append(Decision(None, int(cls[row]), float(conf[row])))
    return out


def check_answering(c_thr: float, measure: str) -> None:
    """Raise ``ValueError`` naming a bad threshold or confidence measure (settable while a node runs)."""
    if measure not in CONFIDENCE:
        raise ValueError(f"confidence measure must be one of {CONFIDENCE}, got {measure!r}")
    if not 0 <= c_thr <= 1:
        raise ValueError(f"c_thr must be in [0, 1], got {c_thr}")


def answers(exit_logits: Sequence[torch.Tensor], c_thr: float,
            measure: str = "max_softmax") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per sample of a progressive batch: class, confidence, answering exit, sure.

    The exit is the first at least ``c_thr`` sure (:func:`decide`), or the last when none is (``sure`` False).
    Class and confidence are that exit's argmax and max softmax, whatever ``measure`` decided with, so that every
    answer's confidence means the same.
    """
    decisions = decide(exit_logits, c_thr, measure)
    last = len(exit_logits) - 1
    index = np.array([last if d.exit is None else d.exit for d in decisions], dtype=np.int64)
    sure = np.array([d.exit is not None for d in decisions], dtype=bool)
    probs = torch.stack([torch.softmax(z.float(), dim=1) for z in exit_logits])  # exits x N x classes
    confidence, classes = probs[torch.from_numpy(index), torch.arange(len(index))].max(dim=1)
    return classes.numpy(), confidence.numpy(), index, sure


@torch.no_grad()
def answer_early(stages, x: torch.Tensor, c_thr: float, measure: str = "max_softmax", *, stop: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """Run ``stages`` ((layers, exit) pairs, the earliest first) and answer each frame from its first sure exit.

    The answers are :func:`answers`' on the same logits.  With ``stop`` a frame answered by an exit leaves the batch
    there, so the later layers run only for the frames still unsure (EdgeLessPart's early stop); without it every
    frame runs to the end.  Returns (class, confidence, exit, sure) per frame, the last layers' output for the
    frames that reached them and their rows (increasing).
    """
    check_answering(c_thr, measure)
    n, last = x.shape[0], len(stages) - 1
    classes, confidences = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float32)
    index, sure = np.full(n, last, dtype=np.int64), np.zeros(n, dtype=bool)
    rows, open_ = torch.arange(n), torch.ones(n, dtype=torch.bool)  # the frames in x; those not answered yet
    for i, (layers, exit_) in enumerate(stages):
        x = layers(x)
        logits = exit_(x).float()
        confident = confidence(logits, measure)[1] >= c_thr
        answered = open_ & (confident | (i == last))
        top, cls = torch.softmax(logits, dim=1).max(dim=1)
        at = rows[answered].numpy()
        classes[at], confidences[at], index[at] = cls[answered].numpy(), top[answered].numpy(), i
        sure[at] = confident[answered].numpy()
        open_ &= ~answered
        if stop and i < last and answered.any():
            x, rows, open_ = x[~answered], rows[~answered], open_[~answered]
    return classes, confidences, index, sure, x, rows


def load_head(path: str):
    """Return the exit-head factory named ``module:factory`` (called with channels, height, width, classes)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"exit head must be 'module:factory', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"exit head {path!r}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"exit head {path!r}: {module_name} has no callable {attr!r}")
    return factory


def progressive_edge(spec, *, seed: int | None = None, exits: int = 1, placement: str = "linear",
                     head: str = ""):
    """Return the edge part with ``exits`` exits placed by ``placement``, each a ``head`` ("": the one-layer head)."""
    from .models import build_edge, linear_exit

    taps = edge_exits(spec, exits, placement) if exits != 1 else ()
    if exits == 1 and placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    return build_edge(spec, seed=seed, exits=taps, exit_head=load_head(head) if head else linear_exit)


def progressive_cloud(spec, *, seed: int | None = None, exits: int = 1, placement: str = "linear",
                      head: str = ""):
    """Return the cloud part with ``exits`` exits (the last its own output), the earlier ones a ``head``."""
    from .models import build_cloud, linear_exit

    if exits == 1:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        return build_cloud(spec, seed=seed)
    return build_cloud(spec, seed=seed, exits=cloud_exits(spec, exits, placement),
                       exit_head=load_head(head) if head else linear_exit)


def offload_cost(cloud_s: float, wire_bytes: float, *, price_per_cloud_hour: float,
                 price_per_gb: float) -> float:
    """Price of one offloaded sample: its cloud compute time and its bytes on the wire."""
    if min(cloud_s, wire_bytes, price_per_cloud_hour, price_per_gb) < 0:
        raise ValueError("times, sizes and prices must be >= 0")
    return cloud_s / 3600 * price_per_cloud_hour + wire_bytes / 1e9 * price_per_gb


def training_memory(arch: str, *, width: float = 1.0, num_classes: int = 10, batch_size: int = 32,
                    state_per_param: int = 4) -> list[float]:
    """Bytes of training memory of the model up to each separation position's end, then of the whole model.

    Per unit: its float32 parameters times ``state_per_param`` (weight, gradient and two Adam moments), plus
    its output activation for the batch, kept for the backward pass.
    """
    from .models import _units, build_model

    model = build_model(arch, num_classes=num_classes, width=width)
    units, ends = _units(arch, model)
    per_unit, x = [], torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        for unit in units:
            x = unit.eval()(x)
            params = sum(p.numel() for p in unit.parameters())
            per_unit.append(4.0 * (state_per_param * params + batch_size * x.numel()))
    cumulative = [sum(per_unit[:end]) for end in ends]
    return cumulative + [sum(per_unit)]


def split_by_memory(arch: str, share: float = 0.7, **kw) -> int:
    """Return the deepest position whose edge part needs at most ``share`` of the model's training memory."""
    if not 0 < share < 1:
        raise ValueError(f"memory share must be in (0, 1), got {share}")
    *upto, whole = training_memory(arch, **kw)
    fitting = [p for p, mem in enumerate(upto, start=1) if mem <= share * whole]
    if not fitting:
        raise ValueError(f"no {arch} split keeps the edge within {share:.0%} of the training memory")
    return fitting[-1]


def split_by_latency(profile: dict, budget_s: float, slowdown: float = 1.0) -> int:
    """Return the deepest position whose edge forward pass (per sample, ``slowdown`` x the profile) fits ``budget_s``.

    ``profile`` is :func:`core.hierschedule.profile_layers`' output: its layer i ends at position i.
    """
    elapsed, deepest = 0.0, 0
    for position, layer in enumerate(profile["layers"][:-1], start=1):  # the last layer ends at the output
        elapsed += layer["forward_s"] * slowdown
        if elapsed > budget_s:
            break
        deepest = position
    if not deepest:
        raise ValueError(f"no split answers within {budget_s * 1e3:.3g} ms on the edge")
    return deepest
