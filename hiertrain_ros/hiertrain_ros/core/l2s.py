"""Learning the split online (L2S, §IV): LinUCB-E with forced sampling, forgetting, and the delay monitor.

Every policy here answers one question per training round: which arm (a split, or a split and bit width) to
train the next batch with.  They share one interface, :class:`SplitPolicy`: ``choose(t)`` then
``observe(arm, cost)`` with the measured per-sample cost of that round.

- :class:`FixedPolicy`: always the same arm (today's behaviour; also "Algorithm 1's static choice").
- :class:`OraclePolicy`: knows the true cost of every arm at every round; the regret baseline.
- :class:`LinUCBE`: the paper's LinUCB-E.  Each arm has a known front-end (edge) delay ``front[arm]`` and a
  context vector ``x[arm]``; the delay of the offloaded part is learned as ``theta . x``.  The local arm
  (edge-only) has no offloaded part, so choosing it teaches nothing: forced sampling takes another arm every
  ``ceil(T^mu)`` rounds in which the local arm would be chosen, so the policy never gets trapped there.
  Unlike the paper (and ANS, which never forgets), the statistics are discounted by ``gamma`` per round
  (Russac et al.'s D-LinUCB), so that a changed link is relearned instead of averaged away.
- :class:`DelayMonitor`: the paper's mode switch.  It watches the cost of the rounds; a relative change of the
  recent mean beyond ``threshold`` means the environment changed (adaptation mode: explore again), and
  ``settle`` identical choices in a row mean the choice has settled (exploitation mode: no exploration bonus,
  no forced sampling).

The cost combines as the paper's sum ``front + offloaded`` or, for a pipelined system where the edge never
waits (this package's), as its slowest stage ``max(front, offloaded)``; the choice is optimistic either way
(the offloaded part's lower confidence bound).  No ROS here.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

from .splits import Split, SplitContext
from .splits import SplitPolicy as StepPolicy

COMBINE = {"sum": lambda front, offloaded: front + offloaded, "pipeline": max}


class SplitPolicy:
    def choose(self, t: int) -> Hashable:
        raise NotImplementedError

    def observe(self, arm: Hashable, cost: float, offloaded: float | None = None) -> None:
        """Record the measured cost of the round that used ``arm``, and of its offloaded part if measured.

        The default learns nothing.
        """


class FixedPolicy(SplitPolicy):
    def __init__(self, arm: Hashable):
        self.arm = arm

    def choose(self, t: int) -> Hashable:
        return self.arm


class OraclePolicy(SplitPolicy):
    """``cost(t, arm)``: the true expected cost; chooses the cheapest arm each round."""

    def __init__(self, arms: Sequence[Hashable], cost: Callable[[int, Hashable], float]):
        self.arms, self.cost = list(arms), cost

    def choose(self, t: int) -> Hashable:
        return min(self.arms, key=lambda arm: self.cost(t, arm))


def eligible(arms: Sequence[Hashable], privacy: Mapping[Hashable, float], floor: float) -> list:
    """Return the arms whose privacy is at least ``floor`` (L2S §III-C); an error if none is left."""
    kept = [arm for arm in arms if privacy[arm] >= floor]
    if not kept:
        raise ValueError(f"no split has privacy >= {floor}: best is {max(privacy[a] for a in arms):.3g}")
    return kept


class DelayMonitor:
    """Adaptation or exploitation, from the costs and choices of the last rounds (L2S §IV-D)."""

    def __init__(self, window: int = 20, threshold: float = 0.25, settle: int = 30, reentry: float = 0.0,
                 seed: int = 0):
        if window < 1 or settle < 1 or not threshold > 0 or not 0 <= reentry <= 1:
            raise ValueError("window and settle must be >= 1, threshold > 0 and reentry in [0, 1]")
        self.window, self.threshold, self.settle, self.reentry = window, threshold, settle, reentry
        self._rng = np.random.default_rng(seed)
        self._costs: deque = deque(maxlen=2 * window)
        self._choices: deque = deque(maxlen=settle)
        self.adapting = True
        self.changes = 0

    def record(self, arm: Hashable, cost: float) -> bool:
        """Add one round; True when it reveals a change of the environment (the mode is adaptation again).

        Adapting, it waits for ``settle`` identical choices; exploiting, it compares the mean cost of the last
        ``window`` rounds with the ``window`` before (costs while adapting vary with the arms tried), and with
        probability ``reentry`` adapts again anyway (the paper's r_d: on edge-only, a better link shows in no
        cost).
        """
        if self.adapting:
            self._choices.append(arm)
            if len(self._choices) == self.settle and len(set(self._choices)) == 1:
                self.adapting = False
                self._choices.clear()
                self._costs.clear()
            return False
        self._costs.append(cost)
        if len(self._costs) == self._costs.maxlen:
            old = np.mean(list(self._costs)[:self.window])
            new = np.mean(list(self._costs)[self.window:])
            if abs(new - old) > self.threshold * max(old, 1e-12):
                return self.changed()
        if self.reentry and self._rng.random() < self.reentry:
            self.adapting = True
        return False

    def changed(self) -> bool:
        """Enter adaptation: the costs shifted, or the nodes measured a new link rate or step time."""
        self.adapting = True
        self.changes += 1
        return True


class LinUCBE(SplitPolicy):
    """LinUCB-E (L2S Algorithm 1) with discounting and an optional delay monitor.

    ``contexts[arm]`` is the arm's context (the local arm: all zeros, or absent), ``front[arm]`` its known
    front-end delay; ``local`` names the edge-only arm.  ``horizon`` fixes the forced-sampling period
    ``ceil(horizon ** mu)``.  Contexts should be normalised (each feature to about [0, 1]).
    """

    def __init__(self, contexts: Mapping[Hashable, Sequence[float]], front: Mapping[Hashable, float], *,
                 local: Hashable | None = None, alpha: float = 1.0, beta: float = 1.0, mu: float = 0.25,
                 horizon: int = 1000, gamma: float = 1.0, combine: str = "pipeline",
                 monitor: DelayMonitor | None = None, forced_sampling: bool = True):
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {sorted(COMBINE)}, got {combine!r}")
        if not 0 < gamma <= 1 or not 0 < mu < 1 or horizon < 1:
            raise ValueError("need 0 < gamma <= 1, 0 < mu < 1 and horizon >= 1")
        self.arms = list(front)
        dims = {len(x) for arm, x in contexts.items() if arm != local}
        if len(dims) != 1 or set(contexts) - set(self.arms) or set(self.arms) - set(contexts) - {local}:
            raise ValueError("every arm but the local one needs a context, all of one length")
        self.d = dims.pop()
        self.x = {arm: np.zeros(self.d) if arm == local else np.asarray(contexts[arm], dtype=float)
                  for arm in self.arms}
        self.front, self.local = dict(front), local
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.period = math.ceil(horizon ** mu) if forced_sampling else None  # None: plain LinUCB
        self.combine = COMBINE[combine]
        self.monitor = monitor
        self.A = beta * np.eye(self.d)
        self.b = np.zeros(self.d)
        self.forced = 0
        self.preferred = None  # the last choice before forced sampling

    def estimates(self, bonus: bool = True) -> dict:
        """Optimistic cost of every arm: front combined with the offloaded part's lower confidence bound."""
        a_inv = np.linalg.inv(self.A)
        theta = a_inv @ self.b
        out = {}
        for arm in self.arms:
            x = self.x[arm]
            offloaded = 0.0 if arm == self.local else float(theta @ x) - (
                self.alpha * math.sqrt(max(float(x @ a_inv @ x), 0.0)) if bonus else 0.0)
            out[arm] = self.combine(self.front[arm], max(offloaded, 0.0))
        return out

    def set_contexts(self, contexts: Mapping[Hashable, Sequence[float]]) -> None:
        """Replace the arms' contexts (the nodes measured a new link rate); the learned model is kept."""
        for arm, x in contexts.items():
            if arm != self.local:
                self.x[arm] = np.asarray(x, dtype=float)

    def choose(self, t: int) -> Hashable:
        exploring = self.monitor is None or self.monitor.adapting
        costs = self.estimates(bonus=exploring)
        arm = self.preferred = min(self.arms, key=costs.get)
        if arm == self.local and exploring and self.period and t % self.period == 0 and len(self.arms) > 1:
            self.forced += 1
            arm = min((a for a in self.arms if a != self.local), key=costs.get)
        return arm

    def observe(self, arm: Hashable, cost: float, offloaded: float | None = None) -> None:
        """Learn from a round: ``offloaded`` is the measured delay of the offloaded part (link and cloud).

        Without it, it is inferred from the round's ``cost``: cost - front for "sum", the cost itself for
        "pipeline" (too high when the front end was the slowest stage: pass it where the nodes measure it).
        """
        if offloaded is None:
            offloaded = cost - self.front[arm] if self.combine is COMBINE["sum"] else cost
        if self.gamma < 1:  # forget: old rounds weigh gamma^age; the prior keeps A invertible
            self.A = self.gamma * self.A + (1 - self.gamma) * self.beta * np.eye(self.d)
            self.b = self.gamma * self.b
        if arm != self.local:
            x = self.x[arm]
            self.A += np.outer(x, x)
            self.b += x * offloaded
        # The monitor sees the rounds of the policy's own choice: a forced sample would never let the choices
        # settle, and its cost is not a change of the environment.
        if self.monitor is not None and arm == self.preferred and self.monitor.record(arm, cost):
            # A new environment: what was learned is mostly stale.  Keep a tenth of it, so the estimates keep
            # their shape while their confidence bounds widen (a full reset makes every arm look as cheap as
            # its front end, and sends the policy on moves the link cannot pay for).
            eye = self.beta * np.eye(self.d)
            self.A = eye + 0.1 * (self.A - eye)
            self.b = 0.1 * self.b


def run_rounds(policy: SplitPolicy, rounds: int, cost: Callable[[int, Hashable], tuple[float, float]],
               rng: np.random.Generator | None = None, noise: float = 0.0) -> list[tuple[Hashable, float]]:
    """Simulate ``rounds`` with ``cost(t, arm) -> (total, offloaded)``; returns (arm, measured total) per round.

    ``noise`` adds Gaussian noise of that relative size to both measurements.
    """
    rng = rng or np.random.default_rng(0)
    history = []
    for t in range(1, rounds + 1):
        arm = policy.choose(t)
        total, offloaded = cost(t, arm)
        scale = 1 + noise * rng.standard_normal() if noise else 1.0
        policy.observe(arm, total * scale, offloaded * scale)
        history.append((arm, total))
    return history


def profile_arms(profile: dict, arms: Sequence[Split]) -> tuple[dict, dict]:
    """Return per arm the edge's seconds per sample and the cloud's share of the compute (0..1).

    From a layer profile (core.hierschedule.profile_layers): the edge's layers' forward, backward and update.
    """
    layers = profile["layers"]
    batch = profile["batch_size"]
    work = [layer["forward_s"] + layer["backward_s"] for layer in layers]
    total = sum(work)
    front = {a: sum(work[:a.split_point]) + sum(layer["update_s"] for layer in layers[:a.split_point]) / batch
             for a in arms}
    cloud = {a: sum(work[a.split_point:]) / total for a in arms}
    return front, cloud


class LinkRateMeter:
    """The link rate the sender sees, from the acknowledgements of its batches (seconds on the sender's clock).

    When the cloud says how long it held the batches (its queue, its step, the wait for its heartbeat), their
    arrival is the acknowledgement's time less that.  A batch sent after the previous one arrived had the link to
    itself: its bits over its time on the link, from sending to arrival.  That time can only come out too long (the
    sender's middleware takes the heartbeat late when its CPU quota is spent: measured 4 against 6.9 Mbit/s), so
    the rate is the fastest of the last ``lone`` such batches.  One sent before had to wait
    for the link, which is busy: the rate is the bits acknowledged over at least ``window_s`` (acknowledgements
    come in bunches, with the heartbeat).  Where the cloud does not say (an older one), the sender's own view of
    busy is taken (``busy``: others wait to be sent or acknowledged, which is also true of an idle link whose
    acknowledgements come slower than the batches), and on an idle link the time to acknowledgement includes the
    cloud's: the rate then only says the link is at least that fast, a floor.
    """

    def __init__(self, window_s: float = 1.0, lone: int = 8):
        self.window_s = window_s
        self._lone: deque = deque(maxlen=lone)  # rates of the last batches that had the link to themselves
        self.rate = 0.0  # the latest measurement but a floor, bits/s
        self._window: list | None = None  # [since, bits acknowledged] while the link stays busy
        self._arrived = float("-inf")  # when the last batch acknowledged arrived at the cloud (where it says)
        self.lone = False  # the last acknowledgement's batch had the link to itself (where the cloud says)

    def acknowledged(self, now: float, bits: float, first_sent: float, busy: bool,
                     held: float | None = None) -> tuple[float | None, bool]:
        """Return the rate acknowledged batches show (None: not yet one) and whether it is only a floor.

        ``bits`` in all, the first sent at ``first_sent``, acknowledged at ``now``; the cloud held the last one it
        received for ``held`` s.
        """
        self.lone = False
        if held is not None:
            arrived, previous = now - held, self._arrived
            self._arrived = max(previous, arrived)
            busy = first_sent < previous  # it waited for the batch before it
            if not busy and arrived > first_sent:
                self.lone = True
                self._window = None
                self._lone.append(bits / (arrived - first_sent))
                self.rate = max(self._lone)
                return self.rate, False
        if not busy:
            self._window = None
            return bits / max(now - first_sent, 1e-3), True
        if self._window is None:  # these bits crossed partly before the link got busy: not counted
            self._window = [now, 0.0]
            return None, False
        self._window[1] += bits
        if now - self._window[0] < self.window_s:
            return None, False
        self.rate = self._window[1] / (now - self._window[0])
        self._window = [now, 0.0]
        self._lone.clear()
        return self.rate, False


class OnlineSplit(StepPolicy):
    """LinUCB-E choosing the edge's split from what the edge measures while it trains (L2S §IV on the nodes).

    A round is ``round_steps`` training steps at one split.  Per arm (a :class:`Split`) the known front end is the
    edge's seconds per sample, from the start-up profile scaled by the edge's measured load (measured step time /
    profiled step time at the split in use).  The context is ``[cloud share of the compute, the arm's bits per
    sample / the link rate the sender sees]``, normalised by the first values; the cost the bandit learns is the
    offloaded stage's seconds per sample (the link and the cloud, from the acknowledgements), and a round costs
    its slowest stage (the pipeline: the edge never waits).  Costs go to the bandit in milliseconds.  A change of
    the link rate or the edge load by more than ``change`` puts the delay monitor in adaptation mode.

    A move is not free: training pauses while the edge's batches in flight drain (``drain_bits[arm]`` on the
    link) and while the layers that change side cross it (``move_bits(from, to)`` the edge sends; the downlink
    is taken as fast).  The bandit's choice of another arm is taken only if, at the estimated costs, it saves
    more than ``hysteresis`` times that pause over the next ``horizon_s`` seconds of training; otherwise the split
    stays (``held`` counts those rounds).  The margin keeps near-ties from moving back and forth on noise.
    Without ``move_bits`` and ``drain_bits`` moves cost nothing (the paper's view).
    """

    def __init__(self, arms: Sequence[Split], front: Mapping[Split, float], cloud_share: Mapping[Split, float],
                 bits: Mapping[Split, float], rate_bps: float, *, round_steps: int = 20, alpha: float = 1.0,
                 gamma: float = 0.98, change: float = 0.3, monitor: DelayMonitor | None = None,
                 drain_bits: Mapping[Split, float] | None = None,
                 move_bits: Callable[[Split, Split], float] | None = None, horizon_s: float = 60.0,
                 hysteresis: float = 2.0):
        if not arms or round_steps < 1 or not rate_bps > 0 or not horizon_s > 0:
            raise ValueError("need at least one arm, round_steps >= 1, a link rate > 0 and horizon_s > 0")
        self.arms, self.round_steps, self.change = list(arms), round_steps, change
        self.drain_bits, self.move_bits, self.horizon_s = dict(drain_bits or {}), move_bits, horizon_s
        self.hysteresis = hysteresis
        self.held = 0
        self.reason = ""  # why the last move was taken or not
        self.profiled = {a: 1e3 * front[a] for a in self.arms}  # ms per sample
        self.cloud_share, self.bits = dict(cloud_share), dict(bits)
        self.rate = rate_bps
        self.rate_seen: float | None = None
        self._wire0 = max(self.bits.values()) / rate_bps
        self.load = 1.0
        self.monitor = monitor or DelayMonitor(window=5, threshold=change, settle=8)
        self.bandit = LinUCBE(self._contexts(), self.profiled, alpha=alpha, beta=1.0, gamma=gamma,
                              monitor=self.monitor)
        self.rounds = 0
        self.arm = self.arms[0]
        self._round_end = 0
        self._costs: list[tuple[float, float]] = []  # (front, offloaded) ms per sample, this round's batches
        self._costs_arm = None

    def _contexts(self) -> dict:
        return {a: [self.cloud_share[a], self.bits[a] / self.rate / self._wire0] for a in self.arms}

    def choose(self, context: SplitContext) -> Split:
        if context.step >= self._round_end:
            self.rounds += 1
            arm = self.bandit.choose(self.rounds)
            if arm != self.arm and not self.worth_moving(arm):
                self.bandit.preferred = arm = self.arm  # staying is the choice: the delay monitor sees it so
                self.held += 1
            self.arm = arm
            self._round_end = context.step + self.round_steps
        return self.arm

    def pause_s(self, to: Split) -> float:
        """Estimated seconds without training for a move from the current arm to ``to``."""
        bits = self.drain_bits.get(self.arm, 0.0) + (self.move_bits(self.arm, to) if self.move_bits else 0.0)
        return bits / self.rate

    def worth_moving(self, to: Split) -> bool:
        """Whether moving to ``to`` saves more than ``hysteresis`` x its pause over the next ``horizon_s``."""
        costs = self.bandit.estimates(bonus=self.monitor.adapting)
        now, then, pause = costs[self.arm], costs[to], self.pause_s(to)
        self.reason = (f"{then:.2f} instead of {now:.2f} ms/sample estimated, a pause of {pause:.1f} s at "
                       f"{self.rate / 1e6:.3g} Mbit/s")
        return now > 0 and self.horizon_s * (1 - then / now) > self.hysteresis * pause

    def measured(self, arm: Split, front_s: float, offloaded_s: float, rate_bps: float | None = None,
                 rate_is_floor: bool = False) -> None:
        """One acknowledged batch trained at ``arm``: edge and offloaded seconds per sample, the link rate seen.

        ``rate_is_floor``: the link was not kept busy (the edge was the slow stage), so the rate seen only says
        the link is at least that fast: it counts when above the current estimate (a link that got faster).
        """
        if arm not in self.profiled:
            return
        if rate_is_floor and rate_bps and rate_bps <= (self.rate_seen or self.rate):
            rate_bps = None
        if rate_bps:  # one batch's rate is noisy (a queue drains in bursts): its moving average decides
            self.rate_seen = rate_bps if self.rate_seen is None else 0.7 * self.rate_seen + 0.3 * rate_bps
        if self.rate_seen and abs(self.rate_seen / self.rate - 1) > self.change:
            self.rate = self.rate_seen
            self.bandit.set_contexts(self._contexts())
            self.monitor.changed()
        load = 1e3 * front_s / self.profiled[arm]
        if abs(load / self.load - 1) > self.change:
            self.monitor.changed()
        self.load = 0.8 * self.load + 0.2 * load
        self.bandit.front = {a: f * self.load for a, f in self.profiled.items()}
        if self._costs and self._costs_arm != arm:  # the rest of a round at another arm: too few to teach
            self._costs = []
        self._costs_arm = arm
        self._costs.append((1e3 * front_s, 1e3 * offloaded_s))
        if len(self._costs) >= max(1, self.round_steps // 2):  # enough of the round measured: it teaches the bandit
            front = sum(c[0] for c in self._costs) / len(self._costs)
            offloaded = sum(c[1] for c in self._costs) / len(self._costs)
            self.bandit.observe(arm, max(front, offloaded), offloaded)
            self._costs = []
