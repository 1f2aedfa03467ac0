"""Bounded buffers used by the edge: drop-oldest queues and label/frame matching."""

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

    def take(self, n: int) -> list:
        """Up to ``n`` oldest items (possibly none), without waiting."""
        with self._cond:
            return [self._items.popleft() for _ in range(min(n, len(self._items)))]

    def wait(self, timeout: float) -> bool:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def maxlen(self) -> int:
        return self._maxlen


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
