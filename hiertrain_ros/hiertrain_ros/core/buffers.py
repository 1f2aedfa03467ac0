"""Bounded buffers: drop-oldest queues, a queue shared fairly by several sources, label/frame matching."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque


class DropOldestQueue:
    """Thread-safe bounded FIFO: putting into a full queue evicts (and counts) the oldest item."""

    def __init__(self, maxlen: int):
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        self._items: deque = deque()
        self._maxlen = maxlen
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item):
        """Append ``item``; returns the item evicted to make room, or None."""
        evicted = None
        with self._cond:
            if len(self._items) >= self._maxlen:
                evicted = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()
        return evicted

    def _pop(self):
        """Remove and return the next item (the lock held, the queue not empty)."""
        return self._items.popleft()

    def take(self, n: int) -> list:
        """Up to ``n`` next items (possibly none), without waiting."""
        with self._cond:
            return [self._pop() for _ in range(min(n, len(self)))]

    def add(self, item):
        """Append ``item``; returns the item evicted to make room, or None (a FIFO sampler's name for put)."""
        return self.put(item)

    def draw(self, n: int) -> list | None:
        """``n`` next items once there are that many, else None."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        with self._cond:
            return [self._pop() for _ in range(n)] if len(self) >= n else None

    def wait(self, timeout: float) -> bool:
        with self._cond:
            if not len(self):
                self._cond.wait(timeout)
            return bool(len(self))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def maxlen(self) -> int:
        return self._maxlen


class FairQueue(DropOldestQueue):
    """Thread-safe bounded queue shared by several sources, none of which can crowd out the others.

    Each source (``key(item)``, e.g. a robot id) has a FIFO of its own.
    - **Room.** Putting into a full queue evicts (and counts) the oldest item of the source that holds the most
      cost, so a flooding source evicts its own items, not the others'.
    - **Service.** ``take`` and ``draw`` serve the sources by deficit round robin (Shreedhar & Varghese, 1995):
      each source with items earns ``quantum`` of cost per round and spends ``cost(item)`` per item.  A source
      sending batches 16 times larger is served 16 times less often, so none claims more than an equal share of
      the work while others wait.  ``quantum`` should be at least the largest cost, or such an item waits rounds.
    """

    def __init__(self, maxlen: int, key, cost=lambda item: 1, quantum: float = 1):
        super().__init__(maxlen)
        if not quantum > 0:
            raise ValueError(f"quantum must be > 0, got {quantum}")
        self._queues: dict = {}  # source -> deque of items; a source with none is removed
        self._cost_held: dict = {}  # source -> total cost of its items
        self._deficit: dict = {}  # source -> cost it may still spend this round
        self._round: deque = deque()  # sources with items, in service order
        self._key, self._cost, self._quantum = key, cost, quantum
        self._len = 0

    def put(self, item):
        """Append ``item``; returns the item evicted to make room, or None."""
        evicted = None
        with self._cond:
            if self._len >= self._maxlen:
                evicted = self._pop_from(max(self._cost_held, key=self._cost_held.get))
                self.dropped += 1
            source = self._key(item)
            if source not in self._queues:
                self._queues[source], self._cost_held[source], self._deficit[source] = deque(), 0, 0
                self._round.append(source)
            self._queues[source].append(item)
            self._cost_held[source] += self._cost(item)
            self._len += 1
            self._cond.notify()
        return evicted

    def _pop_from(self, source):
        """Remove and return the oldest item of ``source`` (the lock held)."""
        queue = self._queues[source]
        item = queue.popleft()
        self._cost_held[source] -= self._cost(item)
        self._len -= 1
        if not queue:  # an idle source keeps no credit
            del self._queues[source], self._cost_held[source], self._deficit[source]
            self._round.remove(source)
        return item

    def _pop(self):
        """Remove and return the next item in deficit-round-robin order (the lock held, the queue not empty)."""
        while True:
            source = self._round[0]
            cost = self._cost(self._queues[source][0])
            if self._deficit[source] >= cost:
                self._deficit[source] -= cost
                return self._pop_from(source)
            self._deficit[source] += self._quantum
            self._round.rotate(-1)

    def __len__(self) -> int:
        return self._len


class LabelMatcher:
    """Pairs frames with labels that name the frame's stamp, in whichever order they arrive.

    Unmatched frames and labels are held for at most ``max_pending`` entries each;
    evictions are counted (an unlabelled frame expiring is normal for held-out data,
    a label expiring means its frame never came).
    """

    def __init__(self, max_pending: int):
        self._frames: OrderedDict = OrderedDict()
        self._labels: OrderedDict = OrderedDict()
        self._max = max_pending
        self._lock = threading.Lock()
        self.frames_expired = 0
        self.labels_expired = 0

    def add_frame(self, stamp: int, frame):
        """Return (frame, label) when the label was already there, else None."""
        with self._lock:
            if stamp in self._labels:
                return frame, self._labels.pop(stamp)
            self._frames[stamp] = frame
            if len(self._frames) > self._max:
                self._frames.popitem(last=False)
                self.frames_expired += 1
            return None

    def add_label(self, stamp: int, label: int):
        with self._lock:
            if stamp in self._frames:
                return self._frames.pop(stamp), label
            self._labels[stamp] = label
            if len(self._labels) > self._max:
                self._labels.popitem(last=False)
                self.labels_expired += 1
            return None
