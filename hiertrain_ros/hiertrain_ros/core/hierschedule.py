"""HierTrain's hybrid-parallel scheduler (Liu et al., §IV-V): the per-iteration time model and its minimiser.

One model of N layers is trained over three workers (device, edge server, cloud) mapped to three tasks:
task O trains all N layers on ``b_o`` samples (worker_o), task S layers 1..m_s on ``b_s`` (worker_s), task L
layers 1..m_l on ``b_l`` (worker_l), with ``b_o + b_s + b_l = B``.  Layers 1..m_s run data-parallel on all
three, m_s+1..m_l on worker_o and worker_l, the rest on worker_o; gradients come back across the links and the
shared layers' gradients are averaged by worker_o.

- :func:`iteration_time` is Eqs. 1-12: forward and backward per stage (the slowest worker of each), the input
  samples, activations and their gradients over the links, and the update with the gradient/weight exchange.
  With :class:`Overheads` (measured on the workers) it is Eq. 12 extended by what the paper leaves out: a cost per
  message each worker handles, a fixed cost per step, the links' effective rates in place of the nominal ones,
  and optionally the device's uplink shared by input samples and activations.
- :func:`schedule` is Algorithm 1: for each of the 6 worker mappings and each (m_s, m_l), the relaxed problem
  P1 as a linear program (scipy's HiGHS), rounded as the paper rounds, timed exactly; the best policy wins.
- :func:`baselines`: All-Device, All-Edge, All-Cloud and a JointDNN-style device-cloud split at one layer.
- :func:`profile_layers` measures the per-layer inputs of the model (forward, backward and update time, output
  and parameter size) for this package's models on the machine it runs on.

Times are linear in the batch (Eqs. 1-2): per-sample forward and backward times, per-step update times.
No ROS here.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

ROLES = ("device", "edge", "cloud")


@dataclass(frozen=True)
class Layer:
    """Profile of one layer on one worker."""

    forward_s: float   # L^f: forward time per sample
    backward_s: float  # L^b: backward time per sample
    update_s: float    # L^u: weight update time per step


@dataclass(frozen=True)
class ModelSizes:
    output_bits: tuple[float, ...]  # MO_i: layer i's output per sample, i = 1..N
    param_bits: tuple[float, ...]   # MP_i: layer i's parameters
    sample_bits: float              # Q: one input sample


@dataclass(frozen=True)
class Links:
    """Bandwidths (bits/s).  ``device_cloud`` None: the device reaches the cloud through the edge server."""

    device_edge: float
    edge_cloud: float
    device_cloud: float | None = None

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 bits/s, got {value}")

    def bps(self, a: str, b: str) -> float:
        if a == b:
            return math.inf
        pair = {a, b}
        if pair == {"device", "edge"}:
            return self.device_edge
        if pair == {"edge", "cloud"}:
            return self.edge_cloud
        return self.device_cloud if self.device_cloud is not None else min(self.device_edge, self.edge_cloud)


@dataclass(frozen=True)
class Overheads:
    """What Eq. 12 leaves out, measured on the workers; the defaults (all zero, no rates) give the paper's model.

    The extension of Eq. 12 (:meth:`Problem.iteration_time`):

        T = T_1 + T_2 + T_3 + T_update  (Eqs. 5-11, each transfer at ``rate_bps`` where it is given)
            + sum_w n_w * per_message_s[w]  (n_w: the messages worker w sends or receives in one step)
            + per_step_s[worker_o] + batch_s
            + sum_p per_byte_s[(worker_o, p)] * (bytes worker_o sends to or receives from worker p, but the input
                                                 samples and labels it waits for)

    With ``shared_uplink``, Eq. 5 has one more candidate where the device is worker_s: its one link to worker_o
    carries worker_o's input samples and then its own activations, one after the other (the paper's Eq. 5 has
    them in parallel).

    Message handling is counted one message after another: a step's messages form one chain through worker_o
    (worker_s's and worker_l's may overlap, which the sum ignores).  Worker_o computes throughout the step, so the
    CPU its messages' bytes take is CPU its layers wait for; the bytes of a worker that only waits for them (its
    input samples, or the device handing out the shares) overlap their time on the link, which ``rate_bps`` has.
    """

    per_message_s: Mapping[str, float] = field(default_factory=dict)  # c_w: one message sent or received on role w
    per_step_s: Mapping[str, float] = field(default_factory=dict)  # F_w: worker_o's per-step cost on role w besides
    #                                                                its layers (the step's Python, loss, optimizer)
    batch_s: float = 0.0  # D: the device preparing its batch, once per step
    per_byte_s: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (w, p) -> e_wp: worker_o on role
    #                                    w, per byte it sends to or receives from role p (its CPU, under its quota)
    rate_bps: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (sender, receiver) -> effective bits/s
    shared_uplink: bool = False  # where the device is worker_s, its uplink to worker_o carries worker_o's input
    #                              samples and then the device's activations: Eq. 5 also takes their sum

    def __post_init__(self):
        for name in ("per_message_s", "per_step_s"):
            for role, value in getattr(self, name).items():
                if role not in ROLES or not value >= 0:
                    raise ValueError(f"{name} needs a role of {ROLES} and a value >= 0, got {role!r}: {value}")
        if not self.batch_s >= 0:
            raise ValueError(f"batch_s must be >= 0, got {self.batch_s}")
        pairs = {(a, b) for a in ROLES for b in ROLES if a != b}
        for pair, value in self.rate_bps.items():
            if tuple(pair) not in pairs or not value > 0:
                raise ValueError(f"rate_bps needs (sender, receiver) roles and a rate > 0, got {pair}: {value}")
        for pair, value in self.per_byte_s.items():
            if tuple(pair) not in pairs or not value >= 0:
                raise ValueError(f"per_byte_s needs (role, peer) roles and a value >= 0, got {pair}: {value}")

    @property
    def zero(self) -> bool:
        """True where this is the paper's model: no extra cost and the nominal rates."""
        return (not any(self.per_message_s.values()) and not any(self.per_step_s.values()) and not self.batch_s
                and not any(self.per_byte_s.values()) and not self.rate_bps and not self.shared_uplink)


def message_counts(mapping, m_s: int, m_l: int, b_o: int, b_s: int, b_l: int,
                   param_layers: Sequence[bool]) -> dict[str, int]:
    """Messages each role sends or receives in one step of the policy (what ``core.hierexec`` sends).

    ``param_layers[i]``: layer i + 1 has parameters (a PARAM_GRADIENT and a PARAMETERS block each way it is shared).
    """
    o, s, l_ = mapping
    counts = dict.fromkeys(ROLES, 0)
    active = {s: b_s > 0, l_: b_l > 0}
    device_task_idle = "device" != o and not active["device"]

    def message(sender, receiver, k=1):
        counts[sender] += k
        counts[receiver] += k

    for role, b in ((o, b_o), (s, b_s), (l_, b_l)):  # the device hands out the shares
        if b and role != "device":
            message("device", role)
    if o != "device":
        message("device", o)  # the labels
    for role, m in ((s, m_s), (l_, m_l)):
        if active[role]:
            shared = sum(1 for has in param_layers[:m] if has)
            message(role, o, 2)  # the activation up, its gradient down
            message(role, o, 2 * shared)  # the parameter gradients up, the parameters down
    if device_task_idle:
        message(o, "device")  # the end of the step
    return counts


@dataclass(frozen=True)
class Policy:
    mapping: tuple[str, str, str]  # the roles of (worker_o, worker_s, worker_l)
    m_s: int
    m_l: int
    b_o: int
    b_s: int
    b_l: int
    time_s: float  # predicted per iteration, Eq. 12


class Problem:
    """The inputs of Algorithm 1: per-role layer profiles, the model's sizes, the links and the batch size B."""

    def __init__(self, profiles: Mapping[str, Sequence[Layer]], sizes: ModelSizes, links: Links, batch: int,
                 overheads: Overheads | None = None):
        if set(profiles) != set(ROLES):
            raise ValueError(f"need a profile for each of {ROLES}, got {sorted(profiles)}")
        n = len(sizes.output_bits)
        if n < 1 or len(sizes.param_bits) != n or any(len(p) != n for p in profiles.values()):
            raise ValueError(f"every profile and size list needs the model's {n} layers")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.n, self.sizes, self.links, self.batch = n, sizes, links, batch
        self._profiles = profiles
        self.overheads = overheads or Overheads()
        # Prefix sums: [k] = layers 1..k.
        self._sum = {(role, field): list(itertools.accumulate((getattr(layer, field) for layer in layers), initial=0.0))
                     for role, layers in profiles.items() for field in ("forward_s", "backward_s", "update_s")}
        self._params = list(itertools.accumulate(sizes.param_bits, initial=0.0))

    def _s(self, role: str, field: str, first: int, last: int) -> float:
        """Sum of ``field`` over layers first+1..last on ``role``."""
        sums = self._sum[(role, field)]
        return sums[last] - sums[first]

    def _out(self, m: int) -> float:
        return self.sizes.sample_bits if m == 0 else self.sizes.output_bits[m - 1]

    def bps(self, sender: str, receiver: str) -> float:
        """Return the rate from ``sender`` to ``receiver``: the measured effective one, else the link's."""
        return self.overheads.rate_bps.get((sender, receiver)) or self.links.bps(sender, receiver)

    def fixed_cost(self, mapping, m_s: int, m_l: int, b_o: int, b_s: int, b_l: int) -> float:
        """Return the extension's terms beyond Eqs. 5-11 that depend on which shares are empty, not on their sizes.

        Message handling, the per-step cost, and worker_o's bytes of the shared layers' parameter blocks (0 in the
        paper); the bytes that grow with a share are :meth:`byte_coefficients`.
        """
        ov = self.overheads
        if ov.zero:
            return 0.0
        counts = message_counts(mapping, m_s, m_l, b_o, b_s, b_l, [bits > 0 for bits in self.sizes.param_bits])
        o, s, l_ = mapping
        blocks = sum(ov.per_byte_s.get((o, peer), 0.0) * 2 * self._params[m] / 8  # gradients in, weights out
                     for peer, m, b in ((s, m_s, b_s), (l_, m_l, b_l)) if b)
        return (sum(n * ov.per_message_s.get(role, 0.0) for role, n in counts.items())
                + ov.per_step_s.get(o, 0.0) + ov.batch_s + blocks)

    def byte_coefficients(self, mapping, m_s: int, m_l: int) -> tuple[float, float, float]:
        """Seconds per sample of (b_o, b_s, b_l) that worker_o spends on the bytes of its messages (the extension).

        Each sample of worker_s's share is an activation in and its gradient out at m_s (worker_l's at m_l), and,
        where worker_o is the device, an input sample out first.
        """
        o, s, l_ = mapping
        e = self.overheads.per_byte_s
        sent = self.sizes.sample_bits / 8 if o == "device" else 0.0
        return (0.0, e.get((o, s), 0.0) * (sent + 2 * self._out(m_s) / 8),
                e.get((o, l_), 0.0) * (sent + 2 * self._out(m_l) / 8))

    def stage_terms(self, mapping, m_s: int, m_l: int) -> tuple[list, float]:
        """Return the four max-terms of Eqs. 5-8 as per-sample coefficients on (b_o, b_s, b_l), and the rest.

        Each term is a list of coefficient triples: the term is the largest of their dot products with
        (b_o, b_s, b_l).  The rest, T3 (Eqs. 9-10) plus T_update (Eq. 11), depends only on B, m_s and m_l.
        """
        if not 0 <= m_s <= m_l <= self.n:
            raise ValueError(f"need 0 <= m_s <= m_l <= {self.n}, got m_s={m_s}, m_l={m_l}")
        o, s, l_ = mapping
        bw = self.bps  # the paper's one rate per link, or the measured rate of each direction (the extension)
        q = self.sizes.sample_bits
        s_out, s_grad = self._out(m_s) / bw(s, o), self._out(m_s) / bw(o, s)  # T_s,output, T_s,grad per sample
        l_out, l_grad = self._out(m_l) / bw(l_, o), self._out(m_l) / bw(o, l_)
        f, b = "forward_s", "backward_s"
        terms = [
            [(q / bw("device", o) + self._s(o, f, 0, m_s), 0, 0),   # Eq. 5
             (0, q / bw("device", s) + self._s(s, f, 0, m_s) + s_out, 0),
             (0, 0, q / bw("device", l_) + self._s(l_, f, 0, m_s))]
            + ([(q / bw("device", o), s_out, 0)] if s == "device" and self.overheads.shared_uplink else []),
            [(self._s(o, b, 0, m_s), 0, 0), (0, self._s(s, b, 0, m_s) + s_grad, 0),  # Eq. 6
             (0, 0, self._s(l_, b, 0, m_s))],
            [(self._s(o, f, m_s, m_l),) * 2 + (0,), (0, 0, self._s(l_, f, m_s, m_l) + l_out)],  # Eq. 7
            [(self._s(o, b, m_s, m_l),) * 2 + (0,), (0, 0, self._s(l_, b, m_s, m_l) + l_grad)],  # Eq. 8
        ]
        tail = self.batch * (self._s(o, f, m_l, self.n) + self._s(o, b, m_l, self.n))  # Eqs. 9-10
        update = (max(self._s(o, "update_s", 0, self.n), self._s(s, "update_s", 0, m_s),
                      self._s(l_, "update_s", 0, m_l))
                  + max(self._params[m_s] * (1 / bw(s, o) + 1 / bw(o, s)),  # Eq. 11: gradients up, weights down
                        self._params[m_l] * (1 / bw(l_, o) + 1 / bw(o, l_))))
        return terms, tail + update

    def iteration_time(self, mapping, m_s: int, m_l: int, b_o: int, b_s: int, b_l: int) -> float:
        """Eq. 12 for one policy (extended by :class:`Overheads` where they are given)."""
        if b_o + b_s + b_l != self.batch or min(b_o, b_s, b_l) < 0 or (b_s and not m_s) or (b_l and not m_l):
            raise ValueError(f"({b_o}, {b_s}, {b_l}) is not a split of B={self.batch} for m_s={m_s}, m_l={m_l}")
        terms, rest = self.stage_terms(mapping, m_s, m_l)
        split = (b_o, b_s, b_l)
        return (sum(max(sum(c * x for c, x in zip(coef, split)) for coef in term) for term in terms) + rest
                + sum(c * x for c, x in zip(self.byte_coefficients(mapping, m_s, m_l), split))
                + self.fixed_cost(mapping, m_s, m_l, b_o, b_s, b_l))

    def relaxed(self, mapping, m_s: int, m_l: int) -> tuple[tuple[float, float, float], float]:
        """Solve P1 with real (b_o, b_s, b_l): the minimum of Eq. 12 for this mapping and (m_s, m_l).

        In the paper's model, one linear program.  The extension's message count changes where a share becomes
        zero (a worker with no samples sends and receives nothing), so with :class:`Overheads` P1 is solved once
        per pattern of empty and non-empty shares (a non-empty one is >= 1 sample), each with its own fixed cost.
        """
        if self.overheads.zero:
            return self._relaxed(mapping, m_s, m_l, [(0, self.batch)] * 3)
        best = None
        for pattern in itertools.product((False, True), repeat=3):
            if sum(pattern) > self.batch or not any(pattern) or (pattern[1] and not m_s) or (pattern[2] and not m_l):
                continue
            bounds = [(1, self.batch) if used else (0, 0) for used in pattern]
            fixed = self.fixed_cost(mapping, m_s, m_l, *pattern)  # the same for every split of this pattern
            point, value = self._relaxed(mapping, m_s, m_l, bounds)
            if point is not None and (best is None or value + fixed < best[1]):
                best = (point, value + fixed)
        return best

    def _relaxed(self, mapping, m_s: int, m_l: int, share_bounds) -> tuple[tuple[float, float, float] | None, float]:
        """P1 over the shares' ``share_bounds``: the split and the minimum; None if infeasible.

        Eqs. 5-11, and worker_o's bytes where the extension has them; the fixed cost is the caller's.
        """
        from scipy.optimize import linprog

        terms, rest = self.stage_terms(mapping, m_s, m_l)
        # Variables: b_o, b_s, b_l, then one epigraph variable t_k >= every candidate of term k.
        a_ub, b_ub = [], []
        for k, term in enumerate(terms):
            for coef in term:
                row = list(coef) + [0.0] * len(terms)
                row[3 + k] = -1.0
                a_ub.append(row)
                b_ub.append(0.0)
        big_b = self.batch
        (lo_o, hi_o), (lo_s, hi_s), (lo_l, hi_l) = share_bounds
        bounds = [(lo_o, hi_o), (lo_s, hi_s if m_s else 0), (lo_l, hi_l if m_l else 0)] + [(0, None)] * len(terms)
        if any(lo > hi for lo, hi in bounds[:3]):
            return None, math.inf
        result = linprog([*self.byte_coefficients(mapping, m_s, m_l)] + [1.0] * len(terms), A_ub=a_ub, b_ub=b_ub,
                         A_eq=[[1.0, 1.0, 1.0] + [0.0] * len(terms)], b_eq=[big_b], bounds=bounds, method="highs")
        if result.status == 2:  # infeasible: no split of B within these bounds
            return None, math.inf
        if result.status != 0:
            raise RuntimeError(f"P1 for {mapping}, m_s={m_s}, m_l={m_l}: {result.message}")
        return tuple(float(v) for v in result.x[:3]), float(result.fun) + rest

    def round_split(self, split: Sequence[float]) -> tuple[int, int, int]:
        """Round as the paper does: integer parts, then +1 to the largest fractions until they sum to B."""
        ints = [max(0, math.floor(v + 1e-9)) for v in split]  # 2.9999999999 from the solver is 3
        order = sorted(range(3), key=lambda i: split[i] - ints[i], reverse=True)
        for i in order[:self.batch - sum(ints)]:
            ints[i] += 1
        if sum(ints) != self.batch:
            raise RuntimeError(f"cannot round {split} to a split of B={self.batch}")
        return tuple(ints)

    def solve(self, mapping, m_s: int, m_l: int) -> Policy:
        """Policy for a fixed mapping and (m_s, m_l): P1 relaxed, rounded, and timed with Eq. 12."""
        split = self.round_split(self.relaxed(mapping, m_s, m_l)[0])
        return Policy(tuple(mapping), m_s, m_l, *split, self.iteration_time(mapping, m_s, m_l, *split))


def schedule(problem: Problem) -> Policy:
    """Algorithm 1: the best policy over the 6 mappings and every 0 <= m_s <= m_l <= N."""
    best = None
    for mapping in itertools.permutations(ROLES):
        for m_s in range(problem.n + 1):
            for m_l in range(m_s, problem.n + 1):
                policy = problem.solve(mapping, m_s, m_l)
                if best is None or policy.time_s < best.time_s:
                    best = policy
    return best


def all_on(problem: Problem, role: str) -> Policy:
    """Every sample and layer on one worker, the samples sent there first (All-Device, All-Edge, All-Cloud)."""
    others = tuple(r for r in ROLES if r != role)
    mapping = (role, *others)
    return Policy(mapping, 0, 0, problem.batch, 0, 0, problem.iteration_time(mapping, 0, 0, problem.batch, 0, 0))


def joint_split(problem: Problem, first: str = "device", second: str = "cloud") -> tuple[int, float]:
    """JointDNN-style: ``first`` trains layers 1..k on the whole batch, ``second`` the rest; the best k and its time.

    Activations go forward and their gradients back over the one link; no weights are shared.  k = 0 sends the
    input samples instead, k = N keeps everything on ``first``.
    """
    big_b, n, bw = problem.batch, problem.n, problem.links.bps(first, second)
    best = None
    for k in range(n + 1):
        compute = big_b * (problem._s(first, "forward_s", 0, k) + problem._s(first, "backward_s", 0, k)
                           + problem._s(second, "forward_s", k, n) + problem._s(second, "backward_s", k, n))
        transfer = 0.0 if k == n else big_b * problem._out(k) / bw * (1 if k == 0 else 2)
        update = max(problem._s(first, "update_s", 0, k), problem._s(second, "update_s", k, n))
        total = compute + transfer + update
        if best is None or total < best[1]:
            best = (k, total)
    return best


def baselines(problem: Problem) -> dict[str, float]:
    """Per-iteration time of the paper's baselines (JointDNN with one split, device and cloud)."""
    times = {f"All-{role.capitalize()}": all_on(problem, role).time_s for role in ROLES}
    times["JointDNN (device-cloud, one split)"] = joint_split(problem)[1]
    return times


# -- profiles ---------------------------------------------------------------------------------------------------

def profile_layers(arch: str, *, width: float = 1.0, num_classes: int = 10, batch_size: int = 32,
                   repeats: int = 5) -> dict:
    """Measure the model's layers on this machine: the profile JSON ``hiertrain schedule`` reads.

    A layer is the stretch between two of the package's separation positions (the last one runs to the output),
    so that every HierTrain split is also a split this package can make (``lenet5``: LeNet-5's 5 layers, the
    paper's small model, :func:`.hierexec.lenet5_layers`).  Each time is the median of
    ``repeats`` after one warm-up; forward and backward are per sample at ``batch_size``, the update (plain SGD)
    per step.
    """
    import torch
    from torch import nn

    from .models import _units, build_model

    if arch == "lenet5":  # the paper's small model (core.hierexec), its 5 layers
        from .hierexec import lenet5_layers

        parts = [(f"layer {i}", part.train()) for i, part in enumerate(lenet5_layers(num_classes), 1)]
    else:
        model = build_model(arch, num_classes=num_classes, width=width).train()
        units, ends = _units(arch, model)
        cuts = sorted({0, *ends, len(units)})
        parts = [(f"layer {i} (units {a + 1}-{b})", nn.Sequential(*units[a:b]))
                 for i, (a, b) in enumerate(zip(cuts, cuts[1:]), start=1)]
    x = torch.randn(batch_size, 3, 32, 32)
    layers = []
    for index, (name, part) in enumerate(parts):
        params = [p for p in part.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.0) if params else None
        forward, backward, update = [], [], []
        # Training never needs the input samples' gradient: the first layer's backward is for its weights only.
        input_grad = index > 0 or not params
        for rep in range(repeats + 1):
            inp = x.detach().requires_grad_(input_grad)
            t0 = time.perf_counter()
            out = part(inp)
            t1 = time.perf_counter()
            out.backward(torch.ones_like(out))
            t2 = time.perf_counter()
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            if rep:  # the first is a warm-up
                forward.append(t1 - t0)
                backward.append(t2 - t1)
                update.append(t3 - t2 if optimizer is not None else 0.0)
        layers.append({"name": name,
                       "forward_s": statistics.median(forward) / batch_size,
                       "backward_s": statistics.median(backward) / batch_size,
                       "update_s": statistics.median(update),
                       "output_bits": 32.0 * out[0].numel(),
                       "param_bits": 32.0 * sum(p.numel() for p in params)})
        x = out.detach()
    return {"arch": arch, "width": width, "num_classes": num_classes, "batch_size": batch_size,
            "threads": torch.get_num_threads(), "sample_bits": 8.0 * 3 * 32 * 32, "layers": layers}


def scaled(profile: dict, factor: float) -> dict:
    """``profile`` on a worker ``factor`` times slower (a stand-in for a measured one; say so where used)."""
    if not factor > 0:
        raise ValueError(f"slowdown factor must be > 0, got {factor}")
    keys = ("forward_s", "backward_s", "update_s")
    return {**profile, "slowdown": factor,
            "layers": [{**layer, **{k: layer[k] * factor for k in keys}} for layer in profile["layers"]]}


def problem_from_profiles(profiles: Mapping[str, dict], links: Links, batch: int,
                          overheads: Overheads | None = None) -> Problem:
    """Return the :class:`Problem` of one profile dict per role (of one model: same layers, sizes and input)."""
    first = profiles[ROLES[0]]
    for role, profile in profiles.items():
        if (profile["arch"], profile["width"], len(profile["layers"])) != (first["arch"], first["width"],
                                                                           len(first["layers"])):
            raise ValueError(f"the {role} profile is of another model than the {ROLES[0]} profile")
    sizes = ModelSizes(tuple(layer["output_bits"] for layer in first["layers"]),
                       tuple(layer["param_bits"] for layer in first["layers"]), first["sample_bits"])
    layers = {role: [Layer(lay["forward_s"], lay["backward_s"], lay["update_s"]) for lay in profile["layers"]]
              for role, profile in profiles.items()}
    return Problem(layers, sizes, links, batch, overheads)


def split_forward_times(edge: dict, cloud: dict, split_point: int, batch_size: int) -> tuple[float, float, float]:
    """Seconds per batch of (edge part, cloud part, whole model) forward from two measured profiles.

    The edge part is layers 1..split_point on the edge's profile, the cloud part the rest and the whole model all
    layers on the cloud's: the ``forward_times`` of :func:`core.runtime.estimate_epoch` (with an edge speed ratio
    of 1, since the edge's own times are given).  The edge's compression convolution and exit are not in a
    profile's layers: the edge time is short by their share.
    """
    if (edge["arch"], edge["width"], len(edge["layers"])) != (cloud["arch"], cloud["width"], len(cloud["layers"])):
        raise ValueError("the edge and cloud profiles are of different models")
    if not 1 <= split_point < len(edge["layers"]):
        raise ValueError(f"split_point must be in 1..{len(edge['layers']) - 1}, got {split_point}")

    def forward(profile, first, last):
        return batch_size * sum(layer["forward_s"] for layer in profile["layers"][first:last])

    return forward(edge, 0, split_point), forward(cloud, split_point, None), forward(cloud, 0, None)
