"""Link budget and store-and-forward for the edge's feature stream.

A shaped link collapses when offered more than it carries, so the edge sends
through a token bucket; what cannot be sent yet waits in a bounded outbox
(inference batches first, then training batches oldest-first).
"""

from __future__ import annotations

import threading
import time
from collections import deque


class TokenBucket:
    """``rate_bps`` bits per second with ``burst_bits`` of credit; rate 0 means unlimited."""

    def __init__(self, rate_bps: float, burst_bits: float, clock=time.monotonic):
        if rate_bps < 0 or burst_bits < 0:
            raise ValueError(f"rate and burst must be >= 0, got {rate_bps}, {burst_bits}")
        self.rate = rate_bps
        self.burst = burst_bits
        self._clock = clock
        self._tokens = burst_bits
        self._last = clock()

    def try_consume(self, bits: float) -> bool:
        if self.rate == 0:
            return True
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        # A message bigger than the burst may go once the bucket is full, else it would never go.
        if self._tokens >= bits or self._tokens >= self.burst:
            self._tokens -= bits
            return True
        return False


class Outbox:
    """Bounded two-class queue of (bits, item): urgent items first, then bulk oldest-first.

    Bulk items beyond ``max_bits`` or older than ``max_age_s`` are dropped oldest-first
    and counted; urgent (inference) items older than ``urgent_age_s`` are stale answers
    and are dropped too.
    """

    def __init__(self, max_bits: float, max_age_s: float, urgent_age_s: float = 1.0, clock=time.monotonic):
        self._urgent: deque = deque()
        self._bulk: deque = deque()
        self._bulk_bits = 0.0
        self.max_bits = max_bits
        self.max_age_s = max_age_s
        self.urgent_age_s = urgent_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self.dropped = 0
        self.expired = 0

    def put(self, bits: float, item, *, urgent: bool = False) -> None:
        with self._lock:
            entry = (self._clock(), bits, item)
            if urgent:
                self._urgent.append(entry)
                return
            self._bulk.append(entry)
            self._bulk_bits += bits
            while self._bulk_bits > self.max_bits and len(self._bulk) > 1:
                self._bulk_bits -= self._bulk.popleft()[1]
                self.dropped += 1

    def expire(self) -> None:
        """Drop stale entries: urgent ones after ``urgent_age_s``, bulk ones after ``max_age_s``."""
        with self._lock:
            now = self._clock()
            for queue, age in ((self._urgent, self.urgent_age_s), (self._bulk, self.max_age_s)):
                while queue and now - queue[0][0] > age:
                    _, bits, _ = queue.popleft()
                    if queue is self._bulk:
                        self._bulk_bits -= bits
                    self.expired += 1

    def pop_sendable(self, bucket: TokenBucket, max_bulk: int = 4) -> list:
        """Items the bucket lets through now, in send order: urgent first, then at most
        ``max_bulk`` of the oldest bulk items, so that flushing a backlog after an outage
        never holds up live traffic for long."""
        self.expire()
        out = []
        with self._lock:
            for queue, limit in ((self._urgent, len(self._urgent)), (self._bulk, max_bulk)):
                while queue and limit > 0 and bucket.try_consume(queue[0][1]):
                    limit -= 1
                    _, bits, item = queue.popleft()
                    if queue is self._bulk:
                        self._bulk_bits -= bits
                    out.append(item)
                if queue:
                    break
        return out

    def __len__(self) -> int:
        return len(self._urgent) + len(self._bulk)

    @property
    def bulk_bits(self) -> float:
        return self._bulk_bits


class AckTracker:
    """Training batches sent but not yet acknowledged by the cloud.

    The cloud acknowledges each training batch it received by sequence number (a
    duplicate is acknowledged again, since the first acknowledgement may have been
    lost).  A batch still unacknowledged ``resend_after_s`` after it was sent (lost in
    an outage the heartbeat had not yet revealed) is offered again; the cloud drops the
    copy if it already trained it.  Beyond ``max_items`` the oldest are given up and
    counted.
    """

    def __init__(self, max_items: int, resend_after_s: float, clock=time.monotonic):
        self._items: dict = {}  # seq -> [sent time, bits, item], insertion (= seq) order
        self.max_items = max_items
        self.resend_after_s = resend_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self.acked_seq = 0
        self.dropped = 0
        self.resent = 0

    def sent(self, seq: int, bits: float, item) -> None:
        with self._lock:
            self._items.pop(seq, None)
            self._items[seq] = [self._clock(), bits, item]
            while len(self._items) > self.max_items:
                del self._items[next(iter(self._items))]
                self.dropped += 1

    def ack(self, seqs) -> None:
        with self._lock:
            for seq in seqs:
                if self._items.pop(seq, None) is not None:
                    self.acked_seq = max(self.acked_seq, seq)

    def due(self) -> list:
        """(bits, item) of the batches to send again, oldest first."""
        with self._lock:
            now = self._clock()
            out = []
            for entry in sorted(self._items.values(), key=lambda e: e[0]):
                if now - entry[0] >= self.resend_after_s:
                    entry[0] = now
                    out.append((entry[1], entry[2]))
            self.resent += len(out)
            return out

    def __len__(self) -> int:
        return len(self._items)
