"""Which answer goes out: the cloud's while its heartbeat is fresh, the early exit's otherwise.

Every frame the edge predicted gets exactly one output: while the cloud is up the
edge answer waits ``cloud_grace_s`` for the cloud's; if that does not come (or the
cloud is down) the edge answer goes out.  The cloud's answers reach every robot's
fallback; only those for ``robot_id`` count (others are counted in ``foreign``).
Pure logic with an injected clock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

EDGE, CLOUD = 0, 1


class FallbackArbiter:
    def __init__(self, heartbeat_timeout_s: float = 0.3, cloud_grace_s: float = 0.25,
                 max_pending: int = 1000, clock=time.monotonic, robot_id: str = ""):
        self.robot_id = robot_id
        self.foreign = 0
        self.timeout = heartbeat_timeout_s
        self.grace = cloud_grace_s
        self._clock = clock
        self._last_heartbeat: float | None = None
        self._pending: OrderedDict = OrderedDict()  # stamp -> (deadline, edge prediction)
        self._answered: OrderedDict = OrderedDict()  # stamps already answered, bounded
        self._max = max_pending
        self._lock = threading.Lock()
        self.outages = 0
        self._was_alive = False
        self.late_cloud = 0

    def heartbeat(self) -> None:
        with self._lock:
            self._last_heartbeat = self._clock()

    def heartbeat_age(self) -> float:
        return float("inf") if self._last_heartbeat is None else self._clock() - self._last_heartbeat

    def cloud_alive(self) -> bool:
        return self.heartbeat_age() <= self.timeout

    def _mark(self, stamp) -> None:
        self._answered[stamp] = True
        while len(self._answered) > self._max:
            self._answered.popitem(last=False)

    def on_edge(self, stamp, prediction) -> list:
        """Returns the outputs to publish now."""
        with self._lock:
            if stamp in self._answered:
                return []
            if not self.cloud_alive():
                self._mark(stamp)
                return [prediction]
            self._pending[stamp] = (self._clock() + self.grace, prediction)
            out = []
            while len(self._pending) > self._max:
                old_stamp, (_, old) = self._pending.popitem(last=False)
                self._mark(old_stamp)
                out.append(old)
            return out

    def on_cloud(self, stamp, prediction, robot_id: str = "") -> list:
        if robot_id != self.robot_id:
            self.foreign += 1
            return []
        with self._lock:
            if stamp in self._answered:
                self.late_cloud += 1
                return []
            self._pending.pop(stamp, None)
            self._mark(stamp)
            return [prediction]

    def poll(self) -> tuple[list, bool]:
        """Edge answers whose wait is over (all of them when the cloud is down), and liveness."""
        with self._lock:
            alive = self.cloud_alive()
            if self._was_alive and not alive:
                self.outages += 1
            self._was_alive = alive
            now = self._clock()
            out = []
            while self._pending:
                stamp, (deadline, prediction) = next(iter(self._pending.items()))
                if alive and deadline > now:
                    break
                self._pending.popitem(last=False)
                self._mark(stamp)
                out.append(prediction)
            return out, alive
