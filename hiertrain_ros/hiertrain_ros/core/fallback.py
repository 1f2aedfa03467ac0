"""Which answer goes out.

While the cloud is up, the better of the edge's and the cloud's; the early exit's at once while it is down.

Every frame the edge predicted gets exactly one output: while the cloud is up the
edge answer waits ``cloud_grace_s`` for the cloud's; if that does not come (or the
cloud is down) the edge answer goes out alone (``REASON_SOLE``).  When both are there
in time, policy ``best`` picks per frame:

- both paths have enough labelled evidence at their answers' confidence, and their
  estimates differ by more than ``calibration_z`` standard errors: the higher probability
  of being right, from a per-path reliability table over confidence bins
  (``REASON_CALIBRATED``).  Bins, not a temperature: the two paths are trained online and
  their miscalibration changes with the stream and need not be a single scale factor; a
  table with decaying counts follows that with no optimisation step.  A bin's estimate is
  shrunk towards the path's recent accuracy, and the z test keeps a thin or noisy bin from
  overruling a path that has clearly been better;
- otherwise: the path with the higher recent prequential accuracy, the *leader*
  (``REASON_RECENT_ACCURACY``).  Ties and no evidence at all go to the cloud, the deeper model.

Where the bins pick the path that is not the leader (an *override*), the arbiter keeps a paired
record once the frame's label is known: a win when the override was right and the leader wrong, a
loss the other way round, decaying over ``calibration_horizon`` frames.  With ``override_guard``
the bins override the leader only while their wins are at least their losses; the record goes on
counting the overrides it blocked, so it reopens when the bins would have paid off again.  The two
paths' errors are correlated (the cloud continues from the edge's features), which per-path tables
cannot see, and on the adaptation bench that cost the output up to 1.25 points against the edge.

Progressive answering (issue 12): an edge answer whose frame the edge did not offload (its
``Prediction.reason`` is ``NOT_OFFLOADED`` on the edge's topic: an edge exit was sure, or the policy is
``never``) goes out at once as ``REASON_SOLE``: no cloud answer will come, so waiting ``cloud_grace_s``
would only delay it.  The edge says so itself rather than the arbiter comparing the confidence with a
threshold: the arbiter does not know the edge's ``c_thr``, measure or policy, which can change while it
runs.  Edge answers with any other reason wait as before.

Policy ``cloud_first`` serves the cloud whenever its answer is in time (the rule before
labels were used).  Labels come in through :meth:`on_label`; every answer (the edge's, the
cloud's, even a late one, and the output's) is scored prequentially in ``metrics``.
The cloud's answers reach every robot's fallback; only those for ``robot_id`` count
(others are counted in ``foreign``).  Pure logic with an injected clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from .metrics import Prequential, recovery

EDGE, CLOUD = 0, 1  # Prediction.SOURCE_*
REASON_SOLE, REASON_CALIBRATED, REASON_RECENT_ACCURACY = 0, 1, 2  # Prediction.REASON_*
NOT_OFFLOADED = 3  # Prediction.reason on the edge's topic only: the frame stayed on the edge, no cloud answer comes
POLICIES = ("best", "cloud_first")
PRIOR_WEIGHT = 2.0  # labelled frames' worth of the path's recent accuracy in each bin's estimate


class Reliability:
    """P(answer right | confidence bin) for one path, from labelled frames.

    Counts decay by ``1 - 1/horizon`` per scored frame so that the table follows a model that keeps learning.
    """

    def __init__(self, bins: int = 10, horizon: float = 500.0):
        if bins < 1 or horizon < 1:
            raise ValueError(f"bins >= 1 and horizon >= 1 required, got {bins}, {horizon}")
        self.right = [0.0] * bins
        self.seen = [0.0] * bins
        self._keep = 1.0 - 1.0 / horizon

    def bin(self, confidence: float) -> int:
        return min(len(self.seen) - 1, max(0, int(confidence * len(self.seen))))

    def update(self, confidence: float, correct: bool) -> None:
        self.right = [r * self._keep for r in self.right]
        self.seen = [n * self._keep for n in self.seen]
        b = self.bin(confidence)
        self.right[b] += correct
        self.seen[b] += 1.0

    def estimate(self, confidence: float, prior: float, prior_weight: float = PRIOR_WEIGHT) -> tuple[float, float]:
        """(probability of being right, evidence in that bin)."""
        b = self.bin(confidence)
        return (self.right[b] + prior_weight * prior) / (self.seen[b] + prior_weight), self.seen[b]


class FallbackArbiter:
    def __init__(self, heartbeat_timeout_s: float = 0.3, cloud_grace_s: float = 0.25,
                 max_pending: int = 1000, clock=time.monotonic, robot_id: str = "", policy: str = "best",
                 recent_window: int = 200, calibration_bins: int = 10, calibration_horizon: float = 500.0,
                 calibration_min: float = 5.0, calibration_z: float = 2.0, override_guard: bool = True,
                 history: int = 0, serve=None):
        """Take ``serve(prediction, reason)``, which returns what goes out for a chosen answer.

        The node's ``serve`` writes the reason into the message; by default the prediction itself goes out.
        """
        self.robot_id = robot_id
        self.foreign = 0
        self.timeout = heartbeat_timeout_s
        self.grace = cloud_grace_s
        self.policy = policy
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self._clock = clock
        self._serve = serve or (lambda prediction, _reason: prediction)
        self._last_heartbeat: float | None = None
        self._pending: OrderedDict = OrderedDict()  # stamp -> (deadline, edge answer)
        self._answered: OrderedDict = OrderedDict()  # stamps already answered, bounded
        self._max = max_pending
        self._lock = threading.Lock()
        self.outages = 0
        self._was_alive = False
        self.late_cloud = 0
        self.reliability = {EDGE: Reliability(calibration_bins, calibration_horizon),
                            CLOUD: Reliability(calibration_bins, calibration_horizon)}
        self.calibration_min = calibration_min
        self.calibration_z = calibration_z
        self.override_guard = override_guard
        self.overrides = {"won": 0.0, "lost": 0.0, "blocked": 0}  # won/lost decay like the reliability tables
        self._guard_keep = 1.0 - 1.0 / calibration_horizon
        self._override_of: OrderedDict = OrderedDict()  # stamp -> [path the bins picked, {path: correct}]
        self.metrics = Prequential(recent_window=recent_window, history=history, on_score=self._calibrate)
        self.reasons = [0, 0, 0]  # outputs served per REASON_*
        self.not_offloaded = 0  # edge answers served at once: their frames were not offloaded

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

    def _calibrate(self, outcome) -> None:
        path = {"edge": EDGE, "cloud": CLOUD}.get(outcome.path)
        if path is None:
            return
        self.reliability[path].update(outcome.confidence, outcome.correct)
        if path == EDGE:  # once per labelled frame, as the tables
            for k in ("won", "lost"):
                self.overrides[k] *= self._guard_keep
        override = self._override_of.get(outcome.stamp)
        if override is None:
            return
        picked, correct = override
        correct[outcome.path] = outcome.correct
        if len(correct) == 2:  # both paths scored: did the override pay off?
            del self._override_of[outcome.stamp]
            leader = "cloud" if picked == "edge" else "edge"
            if correct[picked] != correct[leader]:
                self.overrides["won" if correct[picked] else "lost"] += 1.0

    def _record(self, path: str, stamp, answer) -> None:
        if answer[1] is not None:
            self.metrics.answer(path, stamp, answer[1], answer[2])

    def _emit(self, stamp, answer, reason: int):
        """``answer`` is (prediction, class_id, confidence)."""
        prediction, class_id, confidence = answer
        self._mark(stamp)
        self.reasons[reason] += 1
        if class_id is not None:
            self.metrics.answer("output", stamp, class_id, confidence)
        return self._serve(prediction, reason)

    def _choose(self, stamp, edge, cloud) -> tuple:
        """Return (the answer to serve, REASON_*) when both are in time."""
        if self.policy == "cloud_first" or edge[1] is None or cloud[1] is None:
            return cloud, REASON_SOLE
        recent_edge, recent_cloud = (self.metrics.recent_accuracy(p) for p in ("edge", "cloud"))
        edge_leads = recent_edge is not None and recent_cloud is not None and recent_edge > recent_cloud
        leader = edge if edge_leads else cloud
        p_edge, n_edge = self.reliability[EDGE].estimate(edge[2], 0.5 if recent_edge is None else recent_edge)
        p_cloud, n_cloud = self.reliability[CLOUD].estimate(cloud[2], 0.5 if recent_cloud is None else recent_cloud)
        # The bins decide only where their estimates differ clearly (z standard errors).  Without that test,
        # on the adaptation bench, a much weaker path's noisy bins cost the output 1-3 points.
        se = math.sqrt(p_edge * (1 - p_edge) / (n_edge + PRIOR_WEIGHT)
                       + p_cloud * (1 - p_cloud) / (n_cloud + PRIOR_WEIGHT))
        if not (min(n_edge, n_cloud) >= self.calibration_min and abs(p_edge - p_cloud) > self.calibration_z * se):
            return leader, REASON_RECENT_ACCURACY
        picked = edge if p_edge > p_cloud else cloud
        if picked is leader:
            return picked, REASON_CALIBRATED
        self._override_of[stamp] = ["edge" if picked is edge else "cloud", {}]
        while len(self._override_of) > self._max:
            self._override_of.popitem(last=False)
        if self.override_guard and self.overrides["won"] < self.overrides["lost"]:
            self.overrides["blocked"] += 1
            return leader, REASON_RECENT_ACCURACY
        return picked, REASON_CALIBRATED

    def on_label(self, stamp, class_id: int, segment: int = 0) -> None:
        with self._lock:
            self.metrics.label(stamp, class_id, segment)

    def on_edge(self, stamp, prediction, class_id: int | None = None, confidence: float = 0.0,
                offloaded: bool = True) -> list:
        """Return the outputs to publish now.  Without ``class_id`` the answer is served but not scored.

        ``offloaded=False``: the edge kept the frame (no cloud answer will come), so its answer goes out now.
        """
        with self._lock:
            # A waiting answer is scored once its frame is decided: the choice must not learn
            # from the label of the very frame it chooses for.
            answer = (prediction, class_id, confidence)
            if stamp in self._answered or not self.cloud_alive() or not offloaded:
                self._record("edge", stamp, answer)
                if stamp in self._answered:
                    return []
                if not offloaded:
                    self.not_offloaded += 1
                return [self._emit(stamp, answer, REASON_SOLE)]
            self._pending[stamp] = (self._clock() + self.grace, answer)
            out = []
            while len(self._pending) > self._max:
                old_stamp, (_, old) = self._pending.popitem(last=False)
                self._record("edge", old_stamp, old)
                out.append(self._emit(old_stamp, old, REASON_SOLE))
            return out

    def on_cloud(self, stamp, prediction, robot_id: str = "", class_id: int | None = None,
                 confidence: float = 0.0) -> list:
        if robot_id != self.robot_id:
            self.foreign += 1
            return []
        with self._lock:
            cloud = (prediction, class_id, confidence)
            if stamp in self._answered:
                self.late_cloud += 1
                self._record("cloud", stamp, cloud)
                return []
            pending = self._pending.pop(stamp, None)
            if pending is None:  # the edge's answer is not there (yet): the cloud's is the only one
                self._record("cloud", stamp, cloud)
                return [self._emit(stamp, cloud, REASON_SOLE)]
            chosen, reason = self._choose(stamp, pending[1], cloud)
            self._record("edge", stamp, pending[1])
            self._record("cloud", stamp, cloud)
            return [self._emit(stamp, chosen, reason)]

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
                stamp, (deadline, answer) = next(iter(self._pending.items()))
                if alive and deadline > now:
                    break
                self._pending.popitem(last=False)
                self._record("edge", stamp, answer)
                out.append(self._emit(stamp, answer, REASON_SOLE))
            return out, alive

    def adaptation(self) -> dict:
        """Prequential accuracy per path now.

        In the current segment, recently and over the run, as (accuracy or None, frames); outputs per REASON_*; the
        output's recovery after each change within the kept history (running window ``recent_window``).
        """
        with self._lock:
            m = self.metrics
            figures = {"segment": m.segment, "reasons": list(self.reasons), "overrides": dict(self.overrides),
                       "segment_accuracy": {p: m.segment_accuracy(p) for p in m.paths},
                       "recent_accuracy": {p: m.recent_accuracy(p) for p in m.paths},
                       "accuracy": {p: m.accuracy(p) for p in m.paths}}
            output = [(o.segment, o.correct) for o in m.history if o.path == "output"]
            window = m.recent["output"].maxlen
        figures["recovery"] = recovery(output, window)
        return figures
