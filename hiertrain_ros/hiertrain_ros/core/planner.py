"""Separation-point selection: Algorithm 1 of Sepehri et al. (§III-C), ROS-free.

:func:`select_position` is the algorithm itself, with every costly step
injected as a callable so it can be driven by fakes, by in-process training
(:func:`default_callables`) or by a real edge/cloud deployment:

* Loop 1 keeps positions whose edge parameters fit the edge memory
  (``edge_bytes(p) < edge_memory``);
* Loop 2 keeps those whose estimated epoch runtime (Eq. 1-4) is below the
  accepted runtime (``estimate_runtime(p) < max_runtime``);
* Loop 3 trains one epoch per remaining position and keeps those whose
  measured epoch runtime is below the accepted runtime
  (``measure_epoch(p) < max_runtime``);
* Loop 4 visits the survivors deepest first, finishes their training
  (``train_accuracy(p)``) and returns the first whose accuracy exceeds the
  accepted accuracy.

A loop whose constraint is ``None`` is skipped and passes its input through
unchanged (paper: "Loop 4 should be removed and all the separation points of
Set S3 are acceptable"); with Loop 4 skipped the deepest survivor is chosen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

log = logging.getLogger(__name__)

BYTES_PER_PARAM = 4  # float32


@dataclass
class PlanResult:
    """Candidate sets after each loop, the per-position numbers behind them, and the choice."""

    positions: list[int]
    s1: list[int] = field(default_factory=list)
    s2: list[int] = field(default_factory=list)
    s3: list[int] = field(default_factory=list)    # sorted deepest first, as Loop 4 visits it
    chosen: int | None = None
    edge_bytes: dict[int, int] = field(default_factory=dict)
    estimated_s: dict[int, float] = field(default_factory=dict)
    measured_s: dict[int, float] = field(default_factory=dict)
    accuracy: dict[int, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "loop1".."loop4" whose constraint was None
    constraints: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def select_position(positions: Sequence[int], *,
                    edge_bytes: Callable[[int], float],
                    estimate_runtime: Callable[[int], float],
                    measure_epoch: Callable[[int], float],
                    train_accuracy: Callable[[int], float],
                    edge_memory: float | None = None,
                    max_runtime: float | None = None,
                    min_accuracy: float | None = None) -> PlanResult:
    """Algorithm 1; constraints are strict (``<`` memory, ``<`` runtime, ``>`` accuracy).

    ``max_runtime`` is the accepted runtime of one epoch (Loop 3 measures one
    epoch and compares it with the same value).  Callables are only invoked for
    the loops that run, and Loop 4 stops at the first acceptable position.
    """
    result = PlanResult(positions=list(positions),
                        constraints={"edge_memory": edge_memory, "max_runtime": max_runtime,
                                     "min_accuracy": min_accuracy})

    # Loop 1: edge memory.
    if edge_memory is None:
        result.skipped.append("loop1")
        result.s1 = list(positions)
    else:
        for p in positions:
            result.edge_bytes[p] = edge_bytes(p)
            if result.edge_bytes[p] < edge_memory:
                result.s1.append(p)
    log.info("loop 1 (edge memory < %s B): S1 = %s", edge_memory, result.s1)

    # Loop 2: estimated runtime (Eq. 1-4).
    if max_runtime is None:
        result.skipped.append("loop2")
        result.s2 = list(result.s1)
    else:
        for p in result.s1:
            result.estimated_s[p] = estimate_runtime(p)
            if result.estimated_s[p] < max_runtime:
                result.s2.append(p)
    log.info("loop 2 (estimated epoch < %s s): S2 = %s", max_runtime, result.s2)

    # Loop 3: measured one-epoch runtime.
    if max_runtime is None:
        result.skipped.append("loop3")
        s3 = list(result.s2)
    else:
        s3 = []
        for p in result.s2:
            result.measured_s[p] = measure_epoch(p)
            if result.measured_s[p] < max_runtime:
                s3.append(p)
    result.s3 = sorted(s3, reverse=True)  # deeper separation points tend to be more accurate
    log.info("loop 3 (measured epoch < %s s): S3 = %s", max_runtime, result.s3)

    # Loop 4: full training, deepest first, first acceptable accuracy wins.
    if min_accuracy is None:
        result.skipped.append("loop4")
        result.chosen = result.s3[0] if result.s3 else None
    else:
        for p in result.s3:
            result.accuracy[p] = train_accuracy(p)
            log.info("loop 4: position %d accuracy %.4f (accepted > %s)", p, result.accuracy[p], min_accuracy)
            if result.accuracy[p] > min_accuracy:
                result.chosen = p
                break
    log.info("chosen position: %s", result.chosen)
    return result


def edge_param_bytes(spec, model=None) -> int:
    """Bytes of the edge part's parameters (float32) for ``spec``: what Loop 1 compares."""
    from .models import build_model, count_params, split_model

    full = model if model is not None else build_model(spec.arch, num_classes=spec.num_classes, width=spec.width)
    edge, _ = split_model(full, spec)
    return BYTES_PER_PARAM * count_params(edge)


class InProcessTrainer:
    """Default Loop 3/4 callables: hierarchical training of one position in this process.

    ``measure_epoch(p)`` trains a fresh split for one epoch on ``train`` and
    returns its wall time plus the time the payload bits it produced would take
    on a link of ``s_net`` bits/s (edge and cloud run sequentially here, so
    nothing overlaps; with ``s_net=None`` the link is not emulated).  The
    trainers are kept, and ``train_accuracy(p)`` trains them for the remaining
    ``epochs - 1`` epochs and returns the final-exit accuracy on ``test``
    (measured positions that Loop 4 never reaches keep their trainers in memory
    until this object is dropped).
    Both sides run on this machine: for a real deployment inject callables
    that run on the actual edge and cloud instead.
    """

    def __init__(self, spec_for: Callable[[int], object], train, test, *, epochs: int, batch_size: int = 32,
                 s_net: float | None = None, seed: int = 0, optim=None):
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.spec_for = spec_for
        self.train, self.test = train, test
        self.epochs, self.batch_size, self.s_net, self.seed = epochs, batch_size, s_net, seed
        self.optim = optim
        self._trainers: dict[int, tuple] = {}
        self.results: dict[int, dict] = {}

    def _optim(self, spec):
        from .training import paper_optim

        steps = self.epochs * -(-len(self.train) // self.batch_size)
        return self.optim or paper_optim(spec.arch, steps)

    def _epoch(self, edge, cloud, epoch: int) -> tuple[float, int]:
        from .data import batches

        start, wire_bits = time.perf_counter(), 0
        for images, labels in batches(self.train, self.batch_size, shuffle=True, seed=self.seed + epoch):
            _, payload = edge.train_step(images, labels)
            cloud.train_step(payload)
            wire_bits += payload.wire_bits
        return time.perf_counter() - start, wire_bits

    def measure_epoch(self, position: int) -> float:
        from .training import make_trainers

        spec = self.spec_for(position)
        edge, cloud = make_trainers(spec, self._optim(spec), seed=self.seed)
        compute_s, wire_bits = self._epoch(edge, cloud, 0)
        link_s = wire_bits / self.s_net if self.s_net else 0.0
        self._trainers[position] = (edge, cloud)
        self.results[position] = {"epoch1_compute_s": compute_s, "epoch1_link_s": link_s,
                                  "wire_bits": wire_bits}
        return compute_s + link_s

    def train_accuracy(self, position: int) -> float:
        from .training import evaluate_hierarchical

        if position not in self._trainers:
            self.measure_epoch(position)
        edge, cloud = self._trainers[position]
        for epoch in range(1, self.epochs):
            self._epoch(edge, cloud, epoch)
        metrics = evaluate_hierarchical(edge, cloud, self.test)
        self.results.setdefault(position, {}).update(metrics)
        del self._trainers[position]  # trained to the end; free the memory
        return metrics["final_accuracy"]
