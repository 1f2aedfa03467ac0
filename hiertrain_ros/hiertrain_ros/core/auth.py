"""Message authentication for the pip wheels, whose Fast DDS has no DDS Security (issue 15).

HMAC-SHA256 with a shared key file, over: the message kind, the sender, a nonce drawn once per sender run, a
per-message counter, and the message's fields but the authentication ones, encoded canonically
(``ros_common.message_bytes``: not CDR, whose padding bytes are not deterministic).  Checked with
``hmac.compare_digest``.  The counter and the nonce are inside the MAC, so a recorded message sent again is
refused by :class:`ReplayWindow`: per (kind, sender, nonce), a sliding window of the counters seen (as IPsec's
anti-replay window), which also accepts messages that DDS delivers a little out of order, once each.

The counter is per message, not the batch sequence number: a resent batch is a new message with a new counter
(the cloud's ledger, not this, keeps it from being trained twice).

No ROS here; the nodes put ``nonce``, ``counter`` and ``mac`` into the messages' fields.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from pathlib import Path

MIN_KEY_BYTES = 32
NONCE_BYTES = 16


def load_key(path: str | Path) -> bytes:
    """Return the shared key in ``path``: at least 32 bytes (e.g. ``head -c 32 /dev/urandom > key``)."""
    try:
        key = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the key file {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key file {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
    return key


def _mac(key: bytes, kind: str, sender: str, nonce: bytes, counter: int, payload: bytes) -> bytes:
    head = b"".join(struct.pack("<H", len(part)) + part for part in (kind.encode(), sender.encode(), nonce))
    return hmac.new(key, head + struct.pack("<Q", counter) + payload, hashlib.sha256).digest()


class Signer:
    """Signs one sender's messages: a fresh nonce for this run, a counter that never repeats within it."""

    def __init__(self, key: bytes, sender: str):
        self.key, self.sender = key, sender
        self.nonce = os.urandom(NONCE_BYTES)
        self._counter = 0

    def sign(self, kind: str, payload: bytes) -> tuple[bytes, int, bytes]:
        """Return (nonce, counter, mac) for ``payload``, the serialized message without them."""
        self._counter += 1
        return self.nonce, self._counter, _mac(self.key, kind, self.sender, self.nonce, self._counter, payload)


class ReplayWindow:
    """Accepts each (kind, sender, nonce, counter) once, within a window of the newest ``window`` counters.

    A receiver that meets a stream midway (it started after the sender) takes every counter below the first one it
    sees as seen: otherwise a recording of the messages it missed could be played to it.  So a message that
    overtakes the first one is refused too; DDS delivers one writer's reliable messages in order.

    At most ``max_streams`` (kind, sender, nonce) streams are remembered, the least recently used forgotten first;
    a forgotten stream is met midway again, so keep it above the number of live senders.
    """

    def __init__(self, window: int = 1024, max_streams: int = 256):
        self.window, self.max_streams = window, max_streams
        self._streams: OrderedDict = OrderedDict()  # stream -> (highest counter, bitmask of the window below it)

    def accept(self, stream: tuple, counter: int) -> bool:
        full = (1 << self.window) - 1
        highest, seen = self._streams.get(stream, (counter - 1, full))  # met now: everything before counts as seen
        if counter > highest:
            shift = counter - highest
            seen = ((seen << shift) | 1) & full if shift < self.window else 1
            highest = counter
        else:
            age = highest - counter
            if age >= self.window or seen >> age & 1:
                return False
            seen |= 1 << age
        self._streams[stream] = (highest, seen)
        self._streams.move_to_end(stream)
        while len(self._streams) > self.max_streams:
            self._streams.popitem(last=False)
        return True


class Refused(ValueError):
    """A message the :class:`Verifier` does not take; ``reason`` is "unsigned", "bad MAC" or "replayed"."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class Verifier:
    """Checks messages signed by any holder of the key; counts what it refuses, by reason."""

    def __init__(self, key: bytes, window: int = 1024):
        self.key = key
        self.replays = ReplayWindow(window)
        self.refused: dict[str, int] = {}

    def check(self, kind: str, sender: str, nonce: bytes, counter: int, mac: bytes, payload: bytes) -> None:
        """Return if the message is authentic and new; else :class:`Refused` saying why (and count it)."""
        reason = None
        if len(nonce) != NONCE_BYTES or counter < 1:
            reason = "unsigned"
        elif not hmac.compare_digest(_mac(self.key, kind, sender, bytes(nonce), counter, payload), bytes(mac)):
            reason = "bad MAC"
        elif not self.replays.accept((kind, sender, bytes(nonce)), counter):
            reason = "replayed"
        if reason:
            self.refused[reason] = self.refused.get(reason, 0) + 1
            raise Refused(f"{kind} from {sender!r}: {reason}", reason)
