"""Link budget and store-and-forward for the edge's feature stream.

A shaped link collapses when offered more than it carries, so the edge sends
through a token bucket; what cannot be sent yet waits in a bounded outbox
(inference batches first, then training batches oldest-first), optionally on disk
beyond a memory limit.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
import zlib
from collections import deque
from pathlib import Path


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


class DiskSpill:
    """One file per item in ``directory``, written so that a crash loses nothing that reached the disk.

    - Items are written with ``dump(item) -> bytes`` and read back with ``load(bytes) -> item``, in a file named
      ``name_of(item)``: one name per item, in the order to send them after a restart.
    - A file is framed (magic, length, CRC-32), written to a temporary name, fsynced and renamed, so a file torn
      by a crash is told from a whole one.
    - A file stays until ``discard``: the edge discards a batch's file when the cloud acknowledges the batch, not
      when it sends it.
    - ``recover()`` returns the whole files an earlier run left, in ``name_of`` order (the edge names a batch by
      its sequence number).  It removes, and counts, the torn ones (``torn``) and those ``keep`` refuses
      (``foreign``: the edge's batches of another model or robot, which the cloud would never acknowledge).
    """

    SUFFIX = ".spill"
    MAGIC = b"HTS1"
    _HEADER = struct.Struct("<4sQI")  # magic, payload length, CRC-32 of the payload

    def __init__(self, directory, dump, load, name_of):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._dump, self._load, self._name_of = dump, load, name_of
        self.torn = self.foreign = 0

    def path_for(self, item) -> Path:
        return self.directory / f"{self._name_of(item)}{self.SUFFIX}"

    def write(self, item) -> Path:
        """Return the file now holding ``item``; ``OSError`` (disk full, read-only) leaves no file."""
        path = self.path_for(item)
        tmp = path.with_name(path.name + ".tmp")
        data = self._dump(item)
        try:
            with open(tmp, "wb") as f:
                f.write(self._HEADER.pack(self.MAGIC, len(data), zlib.crc32(data)) + data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self._sync_directory()
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, path: Path):
        """Return the item in ``path`` (the file stays); ``ValueError`` if it is torn or damaged."""
        raw = path.read_bytes()
        if len(raw) < self._HEADER.size:
            raise ValueError(f"{path.name}: {len(raw)} bytes, shorter than the header")
        magic, length, crc = self._HEADER.unpack_from(raw)
        data = raw[self._HEADER.size:]
        if magic != self.MAGIC or length != len(data) or zlib.crc32(data) != crc:
            raise ValueError(f"{path.name}: torn or damaged ({len(data)} of {length} bytes, magic {magic!r})")
        return self._load(data)

    @staticmethod
    def discard(path: Path) -> None:
        path.unlink(missing_ok=True)

    def recover(self, keep=lambda item: True) -> list[Path]:
        """Return the whole files an earlier run left whose item ``keep`` accepts, oldest name first."""
        for tmp in self.directory.glob(f"*{self.SUFFIX}.tmp"):  # a write the crash interrupted
            tmp.unlink(missing_ok=True)
            self.torn += 1
        whole = []
        for path in sorted(self.directory.glob(f"*{self.SUFFIX}")):
            try:
                kept = keep(self.read(path))
            except Exception:  # torn or damaged: never a crash
                kept, self.torn = False, self.torn + 1
            else:
                self.foreign += not kept
            if kept:
                whole.append(path)
            else:
                path.unlink(missing_ok=True)
        return whole


class Outbox:
    """Bounded queue of (bits, item) in three classes: urgent, resends, then bulk oldest-first.

    Resends are items already sent once; they are never dropped here.

    Bulk items beyond ``max_bits`` or older than ``max_age_s`` are dropped oldest-first
    and counted; urgent (inference) items older than ``urgent_age_s`` are stale answers
    and are dropped too.  With a ``spill``, bulk items beyond ``memory_bits`` in memory
    wait on disk instead (an item the disk refuses stays in memory, counted); the files an
    earlier run left come first, and a sent item's file goes at ``acknowledged``.
    """

    def __init__(self, max_bits: float, max_age_s: float, urgent_age_s: float = 1.0, clock=time.monotonic,
                 spill: DiskSpill | None = None, memory_bits: float = math.inf):
        self._urgent: deque = deque()
        self._resend: deque = deque()  # (bits, item)
        self._bulk: deque = deque()  # (time, bits, item or spilled Path)
        self._bulk_bits = 0.0
        self._memory_bits = 0.0  # of the bulk items held in memory
        self.max_bits = max_bits
        self.max_age_s = max_age_s
        self.urgent_age_s = urgent_age_s
        self._clock = clock
        self._spill = spill
        self.memory_bits = memory_bits
        self._lock = threading.Lock()
        self.dropped = 0
        self.expired = 0  # bulk items (training batches) older than max_age_s
        self.stale = 0  # urgent items (inference features) older than urgent_age_s: their frames got the edge's answer
        self.spilled = 0  # bulk items on disk now
        self.spill_errors = 0
        self.recovered = 0  # bulk items an earlier run left on disk

    def put(self, bits: float, item, *, urgent: bool = False, resend: bool = False) -> None:
        with self._lock:
            if resend:
                self._resend.append((bits, item))
                return
            if urgent:
                self._urgent.append((self._clock(), bits, item))
                return
            if self._spill is not None and self._memory_bits + bits > self.memory_bits:
                try:
                    item = self._spill.write(item)
                    self.spilled += 1
                except OSError:
                    self.spill_errors += 1
            if not isinstance(item, Path):
                self._memory_bits += bits
            self._bulk.append((self._clock(), bits, item))
            self._bulk_bits += bits
            while self._bulk_bits > self.max_bits and len(self._bulk) > 1:
                self._forget(self._bulk.popleft())
                self.dropped += 1

    def _forget(self, entry) -> None:
        """Account for a bulk entry leaving the queue unsent."""
        _, bits, item = entry
        self._bulk_bits -= bits
        if isinstance(item, Path):
            self._spill.discard(item)
            self.spilled -= 1
        else:
            self._memory_bits -= bits

    def discard_bulk(self) -> int:
        """Drop every bulk item not yet sent (resends stay) and return how many.

        For a move of the split: they were made for the old split, so nobody could train them after it.
        """
        with self._lock:
            n = len(self._bulk)
            while self._bulk:
                self._forget(self._bulk.popleft())
            return n

    def _take_bulk(self):
        """Return the oldest bulk item, read back from disk if it waited there (None if unreadable)."""
        _, bits, item = self._bulk.popleft()
        self._bulk_bits -= bits
        if not isinstance(item, Path):
            self._memory_bits -= bits
            return item
        self.spilled -= 1
        try:
            return self._spill.read(item)  # the file stays until the item is acknowledged
        except Exception:  # a damaged or vanished file: counted as dropped, never a crash
            self._spill.discard(item)
            self.spill_errors += 1
            self.dropped += 1
            return None

    def take_over(self, paths) -> None:
        """Queue the spill files an earlier run left (``DiskSpill.recover``) ahead of every new bulk item."""
        with self._lock:
            for path in reversed(paths):
                bits = 8 * path.stat().st_size
                self._bulk.appendleft((self._clock(), bits, path))
                self._bulk_bits += bits
                self.spilled += 1
                self.recovered += 1

    def acknowledged(self, item) -> None:
        """Remove the file of ``item``, which the receiver now has (if it had a file)."""
        if self._spill is not None:
            self._spill.discard(self._spill.path_for(item))

    def expire(self) -> None:
        """Drop old entries: urgent ones after ``urgent_age_s`` (``stale``), bulk after ``max_age_s`` (``expired``)."""
        with self._lock:
            now = self._clock()
            while self._urgent and now - self._urgent[0][0] > self.urgent_age_s:
                self._urgent.popleft()
                self.stale += 1
            while self._bulk and now - self._bulk[0][0] > self.max_age_s:
                self._forget(self._bulk.popleft())
                self.expired += 1

    def pop_sendable(self, bucket: TokenBucket, max_bulk: int = 4) -> list:
        """Items the bucket lets through now, in send order.

        Urgent first, then resends, then at most ``max_bulk`` of the oldest bulk items, so that flushing a
        backlog after an outage never holds up live traffic for long.
        """
        self.expire()
        out = []
        with self._lock:
            while self._urgent and bucket.try_consume(self._urgent[0][1]):
                out.append(self._urgent.popleft()[2])
            while not self._urgent and self._resend and bucket.try_consume(self._resend[0][0]):
                out.append(self._resend.popleft()[1])
            if self._urgent or self._resend:
                return out
            for _ in range(max_bulk):
                if not (self._bulk and bucket.try_consume(self._bulk[0][1])):
                    break
                item = self._take_bulk()
                if item is not None:
                    out.append(item)
        return out

    def __len__(self) -> int:
        return len(self._urgent) + len(self._resend) + len(self._bulk)

    @property
    def bulk_bits(self) -> float:
        return self._bulk_bits

    def holds_bulk(self) -> bool:
        """Whether a bulk (training) item waits here, new or to be sent again."""
        with self._lock:
            return bool(self._bulk or self._resend)


class AckTracker:
    """Training batches sent but not yet acknowledged by the cloud: a sliding window.

    The cloud acknowledges each training batch it trained by sequence number (a
    duplicate is acknowledged again, since the first acknowledgement may have been
    lost).  At most ``max_items`` are in flight: the sender sends a new batch only while
    ``room()`` is positive, so after an outage the backlog leaves the outbox at the pace
    the cloud trains it, instead of flooding the cloud's queue and the link in front of
    live answers.  A batch still unacknowledged ``resend_after_s`` after it was sent (lost
    in an outage the heartbeat had not yet revealed, or in a cloud that restarted) is
    offered again; the cloud drops the copy if it already trained it.
    """

    def __init__(self, max_items: int, resend_after_s: float, clock=time.monotonic):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self._items: dict = {}  # seq -> [sent time, bits, item], insertion (= seq) order
        self.max_items = max_items
        self.resend_after_s = resend_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self.acked_seq = 0
        self.resent = 0

    def sent(self, seq: int, bits: float, item) -> None:
        with self._lock:
            self._items.pop(seq, None)
            self._items[seq] = [self._clock(), bits, item]

    def room(self) -> int:
        """How many new batches may be sent now."""
        with self._lock:
            return max(0, self.max_items - len(self._items))

    def ack(self, seqs) -> list:
        """Return the items of ``seqs`` that were waiting for their acknowledgement."""
        acked = []
        with self._lock:
            for seq in seqs:
                entry = self._items.pop(seq, None)
                if entry is not None:
                    self.acked_seq = max(self.acked_seq, seq)
                    acked.append(entry[2])
        return acked

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


class BatchLedger:
    """The cloud's record of the training batches it trained, keyed by (robot_id, seq).

    Several edges share one cloud and each numbers its own batches, so a sequence number
    alone identifies nothing; the pair does.  ``is_trained`` stops a resent batch from
    being trained twice, and ``admit`` also keeps a resent copy of a batch still waiting in
    the queue out of it; every trained batch (and every duplicate of a trained one, since the
    first acknowledgement may have been lost) is acknowledged, and the most recent ``max_acks``
    acknowledgements are repeated in every heartbeat so that one lost heartbeat costs nothing.
    Each acknowledgement keeps when its copy of the batch was received (``received``, any clock the
    caller uses throughout), so that the heartbeat can say how long the cloud held it.
    The lock is never held during training, so heartbeats stay on time.
    """

    def __init__(self, max_trained: int = 4096, max_acks: int = 256):
        self._trained: dict = {}  # (robot_id, seq) -> None, oldest first, bounded
        self._queued: dict = {}  # (robot_id, seq) admitted and not yet trained or evicted -> when received
        self._acks: deque = deque(maxlen=max_acks)  # (robot_id, seq, when received or None)
        self._max = max_trained
        self._lock = threading.Lock()
        self._last_seq: dict[str, int] = {}  # highest seq trained, per robot
        self.duplicates = 0

    def is_trained(self, robot_id: str, seq: int) -> bool:
        with self._lock:
            return (robot_id, seq) in self._trained

    def admit(self, robot_id: str, seq: int, received: float | None = None) -> bool:
        """Tell whether a training batch received at ``received`` goes into the queue.

        A copy of one trained (acknowledged again) or still queued does not, and counts as a duplicate.
        """
        key = (robot_id, seq)
        with self._lock:
            if key in self._trained or key in self._queued:
                self.duplicates += 1
                if key in self._trained:
                    self._acks.append((*key, received))
                return False
            self._queued[key] = received
            return True

    def evicted(self, robot_id: str, seq: int) -> None:
        """Forget a queued batch dropped untrained (a full queue), so that its resent copy is admitted."""
        with self._lock:
            self._queued.pop((robot_id, seq), None)

    def trained(self, robot_id: str, seq: int) -> None:
        with self._lock:
            received = self._queued.pop((robot_id, seq), None)
            self._trained[(robot_id, seq)] = None
            while len(self._trained) > self._max:
                del self._trained[next(iter(self._trained))]
            self._last_seq[robot_id] = max(self._last_seq.get(robot_id, 0), seq)
            self._acks.append((robot_id, seq, received))

    def duplicate(self, robot_id: str, seq: int) -> None:
        """Record a resent batch already trained: not again, but acknowledged again."""
        with self._lock:
            self.duplicates += 1
            self._acks.append((robot_id, seq, None))

    def last_seqs(self) -> dict[str, int]:
        """Return the highest seq trained, per robot."""
        with self._lock:
            return dict(self._last_seq)

    def acks(self) -> list[tuple[str, int, float | None]]:
        """Return the recent acknowledgements, oldest first: (robot_id, seq, when that copy was received)."""
        with self._lock:
            return list(self._acks)

    def state(self) -> dict:
        """Return what a checkpoint keeps (plain lists: the checkpoint loader accepts no custom types)."""
        with self._lock:
            return {"trained_batches": [[r, s] for r, s in self._trained], "last_seqs": dict(self._last_seq)}

    def restore(self, state: dict) -> None:
        """From :meth:`state`, or from a checkpoint written before robot ids (robot "")."""
        trained = [(str(r), int(s)) for r, s in state.get("trained_batches", ())]
        trained += [("", int(s)) for s in state.get("trained_seqs", ())]
        last = {str(r): int(s) for r, s in state.get("last_seqs", {}).items()}
        if "last_seq" in state and "last_seqs" not in state:
            last[""] = int(state["last_seq"])
        with self._lock:
            self._trained.update(dict.fromkeys(trained))
            self._last_seq.update(last)
