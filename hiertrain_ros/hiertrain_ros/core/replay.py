"""What the trainers draw their batches from, and what they replay.

A trainer adds every labelled item it receives and draws a batch when it can.  Today's
behaviour is :class:`FifoSampler`: each item is trained on once, in arrival order, the
oldest dropped when the trainer falls behind.  :class:`ReplaySampler` still trains each new
item once, but mixes each batch with items replayed from a bounded :class:`ReplayMemory`
(reservoir or class-balanced), so earlier classes and domains keep being rehearsed.

The cloud's counterpart is :class:`LatentReplay`: the quantized feature batches it trained
on, kept packed (a 4-bit batch is 1/8 of its floats), with a staleness policy because the
edge encoder that made them keeps changing.  :class:`ReplayPacer` bounds the extra
replay-only steps a trainer takes while too few new items arrive.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections import deque

import numpy as np

from .buffers import DropOldestQueue

MEMORY_POLICIES = ("reservoir", "balanced")
STALENESS = ("none", "drop", "downweight")


class Sampler(ABC):
    @abstractmethod
    def add(self, item):
        """Offer one new item (thread-safe: called from the executor thread).

        Return an item dropped unused to make room, if the sampler drops any, else None.
        """

    @abstractmethod
    def draw(self, n: int) -> list | None:
        """Return a batch of ``n`` items to train on now, or ``None`` when there is none yet."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for an item; whether one is there."""

    @abstractmethod
    def __len__(self) -> int:
        """Items held."""

    def draw_replay(self, n: int) -> list | None:
        """Return a batch of ``n`` replayed items only (for idle compute), or ``None``: none kept here."""
        return None


class FifoSampler(DropOldestQueue, Sampler):
    """Each item once, oldest first, as soon as ``n`` are there.

    Beyond ``maxlen`` the oldest are dropped (counted in ``dropped``).  ``add`` is the queue's.  ``prepare``, if
    given, turns a drawn batch into what is trained on (the edge's raw frames into tensors): an item dropped
    unused never pays for it.
    """

    def __init__(self, maxlen: int, prepare=None):
        super().__init__(maxlen)
        self._prepare = prepare

    def draw(self, n: int) -> list | None:
        batch = super().draw(n)
        return batch if batch is None or self._prepare is None else self._prepare(batch)


def tensor_bytes(item) -> int:
    """Bytes of a labelled frame ``(tensor, label)`` as held in memory: its tensor's storage."""
    tensor = item[0]
    return tensor.element_size() * tensor.nelement()


class ReplayMemory:
    """A bounded memory of past items, within ``memory_bytes``.

    ``reservoir`` keeps a uniform sample of every item offered (Vitter's algorithm R).
    ``balanced`` gives each class seen an equal share of the slots: a new class takes its
    slots from the largest, and a class at its share replaces its own items reservoir-style
    (class-balanced reservoir sampling, Chrysakis & Moens 2020).  All items must be of one
    size (``size_of``), so that the memory limit is a number of slots.
    """

    def __init__(self, policy: str, memory_bytes: float, *, size_of=tensor_bytes, label_of=lambda item: item[1],
                 seed: int = 0):
        if policy not in MEMORY_POLICIES:
            raise ValueError(f"replay policy must be one of {MEMORY_POLICIES}, got {policy!r}")
        if not memory_bytes > 0:
            raise ValueError(f"replay memory must be > 0 bytes, got {memory_bytes}")
        self.policy = policy
        self.memory_bytes = memory_bytes
        self._size_of = size_of
        self._label_of = label_of
        self._rng = random.Random(seed)
        self.item_bytes = 0    # measured on the first item
        self.capacity = 0
        self.seen = 0
        self._items: list = []
        self._by_class: dict = {}     # balanced: class -> items
        self._seen_class: dict = {}   # balanced: class -> items of that class offered

    def offer(self, item) -> None:
        size = self._size_of(item)
        if not self.item_bytes:
            self.item_bytes = size
            self.capacity = int(self.memory_bytes // size)
            if self.capacity < 1:
                raise ValueError(f"replay memory of {self.memory_bytes} bytes holds no item of {size} bytes")
        elif size != self.item_bytes:
            raise ValueError(f"replay memory holds items of {self.item_bytes} bytes, got one of {size}")
        self.seen += 1
        if self.policy == "reservoir":
            self._reservoir(item)
        else:
            self._balanced(item)

    def _reservoir(self, item) -> None:
        if len(self._items) < self.capacity:
            self._items.append(item)
            return
        j = self._rng.randrange(self.seen)
        if j < self.capacity:
            self._items[j] = item

    def _balanced(self, item) -> None:
        label = self._label_of(item)
        seen = self._seen_class[label] = self._seen_class.get(label, 0) + 1
        mine = self._by_class.setdefault(label, [])
        if len(self) < self.capacity:
            mine.append(item)
            return
        largest = max(self._by_class.values(), key=len)
        if len(mine) < len(largest):  # below the largest class's share: take a slot from it
            largest.pop(self._rng.randrange(len(largest)))
            mine.append(item)
            return
        j = self._rng.randrange(seen)  # at (or above) its share: a uniform sample of its own class
        if j < len(mine):
            mine[j] = item

    def sample(self, k: int) -> list:
        """``k`` distinct items drawn uniformly (fewer when fewer are held)."""
        if self.policy == "reservoir":
            pool = self._items
        else:
            pool = [item for items in self._by_class.values() for item in items]
        return self._rng.sample(pool, min(k, len(pool)))

    def items(self) -> list:
        return list(self._items) if self.policy == "reservoir" else [i for v in self._by_class.values() for i in v]

    @property
    def bytes(self) -> int:
        return len(self) * self.item_bytes

    def __len__(self) -> int:
        return len(self._items) if self.policy == "reservoir" else sum(len(v) for v in self._by_class.values())


class ReplaySampler(FifoSampler):
    """New items once each, in arrival order (as :class:`FifoSampler`), each batch mixed with replayed ones.

    Of ``n`` items, ``round(n * ratio)`` come from ``memory`` once it holds them.

    New items join the memory after their batch is drawn (and prepared), so a batch never replays its own
    items.  Only the worker thread draws, so the memory needs no lock.
    """

    def __init__(self, maxlen: int, memory: ReplayMemory, ratio: float, prepare=None):
        super().__init__(maxlen, prepare)
        if not 0 <= ratio < 1:
            raise ValueError(f"replay ratio must be in [0, 1), got {ratio}")
        self.memory = memory
        self.ratio = ratio
        self.replayed = 0

    def draw(self, n: int) -> list | None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        k = min(round(n * self.ratio), len(self.memory))  # before the memory fills, more new items
        new = super().draw(n - k)
        if new is None:
            return None
        old = self.memory.sample(k)
        for item in new:
            self.memory.offer(item)
        self.replayed += len(old)
        return new + old

    def draw_replay(self, n: int) -> list | None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if len(self.memory) < n:
            return None
        self.replayed += n
        return self.memory.sample(n)


def make_sampler(maxlen: int, policy: str = "none", memory_mb: float = 0.0, ratio: float = 0.0,
                 seed: int = 0, prepare=None) -> Sampler:
    """Return the edge's sampler from its config: ``none`` = :class:`FifoSampler` (no replay).

    ``prepare``: see :class:`FifoSampler`; the replay memory holds prepared items.
    """
    if policy == "none":
        return FifoSampler(maxlen, prepare)
    return ReplaySampler(maxlen, ReplayMemory(policy, memory_mb * 1e6, seed=seed), ratio, prepare)


def payload_bytes(payload) -> int:
    """Bytes a feature batch holds in the latent memory: its packed codes and its labels."""
    return len(payload.data) + np.asarray(payload.labels).nbytes


class LatentReplay:
    """The cloud's bounded memory of the labelled feature batches it trained on, kept quantized.

    Beyond ``memory_bytes`` the oldest batches go (the newest are the closest to the edge's
    current encoder).  A batch's age is counted in its robot's batch sequence numbers: the
    payload carries no edge step, and ``seq`` grows by one per batch the edge makes (training
    and inference), so it is the edge's step proxy.  ``staleness``:

    - ``none``: every batch replays at full weight until evicted;
    - ``drop``: batches more than ``max_age`` seqs older than their robot's newest are evicted;
    - ``downweight``: a replayed batch's loss weight halves every ``half_life`` seqs of age.

    A batch from another encoder version than its robot's newest is evicted (other layout).
    """

    def __init__(self, memory_bytes: float, *, staleness: str = "none", max_age: int = 2000,
                 half_life: float = 500.0, seed: int = 0):
        if not memory_bytes > 0:
            raise ValueError(f"latent replay memory must be > 0 bytes, got {memory_bytes}")
        if staleness not in STALENESS:
            raise ValueError(f"staleness must be one of {STALENESS}, got {staleness!r}")
        if max_age < 1 or not half_life > 0:
            raise ValueError(f"max_age >= 1 and half_life > 0 required, got {max_age}, {half_life}")
        self.memory_bytes = memory_bytes
        self.staleness = staleness
        self.max_age = max_age
        self.half_life = half_life
        self._rng = random.Random(seed)
        self._batches: deque = deque()
        self._newest: dict = {}    # robot -> (seq, encoder_version) of its newest batch
        self.bytes = 0
        self.evicted_stale = 0

    def add(self, payload) -> None:
        """Keep a trained labelled batch; evict what it makes too old or too much."""
        robot = payload.robot_id
        newest = self._newest.get(robot)
        if newest is None or payload.seq >= newest[0]:
            if newest is not None and newest[1] != payload.encoder_version:
                self._evict(lambda p: p.robot_id == robot)
            self._newest[robot] = (payload.seq, payload.encoder_version)
        self._batches.append(payload)
        self.bytes += payload_bytes(payload)
        while self.bytes > self.memory_bytes:
            self.bytes -= payload_bytes(self._batches.popleft())
        if self.staleness == "drop":
            self._evict(lambda p: self.age(p) > self.max_age)

    def _evict(self, stale) -> None:
        kept = deque(p for p in self._batches if not stale(p))
        self.evicted_stale += len(self._batches) - len(kept)
        self._batches = kept
        self.bytes = sum(payload_bytes(p) for p in kept)

    def age(self, payload) -> int:
        return self._newest[payload.robot_id][0] - payload.seq

    def weight(self, payload) -> float:
        if self.staleness == "downweight":
            return 0.5 ** (self.age(payload) / self.half_life)
        return 1.0

    def sample(self, samples: int, accepts=lambda payload: True) -> list:
        """Draw batches uniformly (among those ``accepts`` takes) until they hold ``samples`` samples.

        Each comes as ``(payload, loss weight)``; the last one drawn may take the total past ``samples``.
        """
        pool = [p for p in self._batches if accepts(p)]
        self._rng.shuffle(pool)
        out, held = [], 0
        for payload in pool:
            if held >= samples:
                break
            out.append((payload, self.weight(payload)))
            held += payload.num_samples
        return out

    def __len__(self) -> int:
        return len(self._batches)


class ReplayPacer:
    """At most ``max_steps_per_s`` replay-only steps per second (0 = none).

    Idle compute that never takes the trainer from new data for long, nor spins a core flat out.
    """

    def __init__(self, max_steps_per_s: float, clock=time.monotonic):
        if max_steps_per_s < 0:
            raise ValueError(f"max replay steps per second must be >= 0, got {max_steps_per_s}")
        self.period = 1.0 / max_steps_per_s if max_steps_per_s else None
        self._clock = clock
        self._last = None

    def due(self) -> bool:
        """Whether a replay step may run now."""
        return self.period is not None and (self._last is None or self._clock() - self._last >= self.period)

    def took(self) -> None:
        """Note that a replay step ran: the next one waits a period."""
        self._last = self._clock()
