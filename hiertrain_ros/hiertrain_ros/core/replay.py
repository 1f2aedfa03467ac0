"""What the trainers draw their batches from.

A trainer adds every labelled item it receives and draws a batch when it can.  Today's
behaviour is :class:`FifoSampler`: each item is trained on once, in arrival order, the
oldest dropped when the trainer falls behind.  A replay policy (reservoir or class-balanced
memory, mixing new and replayed items) is another :class:`Sampler`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .buffers import DropOldestQueue


class Sampler(ABC):
    @abstractmethod
    def add(self, item) -> None:
        """Offer one new item (thread-safe: called from the executor thread)."""

    @abstractmethod
    def draw(self, n: int) -> list | None:
        """A batch of ``n`` items to train on now, or ``None`` when there is none yet."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for an item; whether one is there."""

    @abstractmethod
    def __len__(self) -> int:
        """Items held."""


class FifoSampler(DropOldestQueue, Sampler):
    """Each item once, oldest first, as soon as ``n`` are there; beyond ``maxlen`` the oldest
    are dropped (counted in ``dropped``)."""

    def add(self, item) -> None:
        self.put(item)

    def draw(self, n: int) -> list | None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        with self._cond:
            if len(self._items) < n:
                return None
            return [self._items.popleft() for _ in range(n)]
