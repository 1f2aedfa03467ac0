"""Online-adaptation metrics from the stream itself: answers joined with labels by frame stamp.

Definitions (``W`` is the window, in frames of the sequence at hand):

- **Prequential accuracy** (test, then train): the share of labelled frames a path answered
  correctly.  The edge answers a frame (and sends its features for the cloud's answer) when it
  arrives, and trains on it (and sends it for the cloud's training) only once its label has
  filled a batch, so the answers scored here come before that frame is trained on.  Per
  segment (the label's ``segment``) and over time (non-overlapping blocks of ``W`` labelled
  frames, in stamp order; the last block may be shorter).
- **Held-out accuracy** per segment: the same join on the truth topic's frames, never trained on.
- **Running accuracy** at a frame: accuracy over the last ``W`` scored frames up to it (fewer at
  the start), across segment boundaries.
- **Recovery** after a change (the segment of consecutive labelled frames differs): the baseline
  is the output's running accuracy at the last frame before the change.  Recovery is the number of
  frames after the change until the running accuracy is back to ``fraction`` x baseline, having
  first fallen below it within ``W`` frames of the change (a dip that starts later is not the
  change's); 0 when it does not; None when it has not come back by the next change (or the end).
- **Forgetting** of a segment: its held-out frames in arrival order, cut into blocks of ``W``;
  ``best`` is the best whole block (all its frames when there are fewer than ``W``), ``final``
  the accuracy over its last ``W`` held-out frames (the latest evaluation of that segment).
  forgetting = best - final (negative: the segment gained from what came later).  ``evaluated_after`` says
  whether any of those frames came after a later segment had begun (a recurring segment, or an
  end-of-run evaluation pass); without that, ``final`` is the level at the segment's own end and
  the number cannot show forgetting caused by later segments.
- **Anytime average accuracy**: the mean of the prequential accuracy-over-time curve (the area
  under it divided by its length).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

PATHS = ("edge", "cloud", "output")


@dataclass(frozen=True)
class Outcome:
    stamp: int
    segment: int
    path: str
    correct: bool
    confidence: float


class Prequential:
    """Incremental join of answers and labels by stamp, in whichever order they come.

    Each (path, stamp) is scored once, when both its answer and its label are known.
    ``on_score(outcome)`` is called for each; ``history`` keeps the last ``history`` outcomes
    (0: none) for the sequence metrics.  Frames that never get a label (held-out ones) wait in a
    bounded table, oldest dropped first.
    """

    def __init__(self, paths=PATHS, recent_window: int = 100, max_pending: int = 4000, history: int = 0,
                 on_score=None):
        if recent_window < 1 or max_pending < 1 or history < 0:
            raise ValueError(f"recent_window >= 1, max_pending >= 1, history >= 0 required, got "
                             f"{recent_window}, {max_pending}, {history}")
        self.paths = tuple(paths)
        self.segment = 0                 # the latest label's segment
        self.counts: dict = {}           # segment -> path -> [correct, scored]
        self.recent = {p: deque(maxlen=recent_window) for p in self.paths}
        self.history: deque = deque(maxlen=history or 0)
        self._on_score = on_score
        self._pending: OrderedDict = OrderedDict()  # stamp -> [label (class, segment) or None, {path: answer}]
        self._max = max_pending

    def _entry(self, stamp):
        entry = self._pending.get(stamp)
        if entry is None:
            entry = self._pending[stamp] = [None, {}]
            while len(self._pending) > self._max:
                self._pending.popitem(last=False)
        return entry

    def answer(self, path: str, stamp, class_id: int, confidence: float = 1.0) -> None:
        if path not in self.recent:
            raise ValueError(f"path must be one of {self.paths}, got {path!r}")
        entry = self._entry(stamp)
        if path in entry[1]:
            return  # a duplicate answer is scored once
        entry[1][path] = (int(class_id), float(confidence), False)
        if entry[0] is not None:
            self._score(stamp, entry, path)

    def label(self, stamp, class_id: int, segment: int = 0) -> None:
        entry = self._entry(stamp)
        if entry[0] is not None:
            return
        entry[0] = (int(class_id), int(segment))
        self.segment = int(segment)
        for path in list(entry[1]):
            self._score(stamp, entry, path)

    def _score(self, stamp, entry, path) -> None:
        class_id, confidence, scored = entry[1][path]
        if scored:
            return
        entry[1][path] = (class_id, confidence, True)
        truth, segment = entry[0]
        outcome = Outcome(stamp, segment, path, class_id == truth, confidence)
        tally = self.counts.setdefault(segment, {p: [0, 0] for p in self.paths})[path]
        tally[0] += outcome.correct
        tally[1] += 1
        self.recent[path].append(outcome.correct)
        if self.history.maxlen:
            self.history.append(outcome)
        if self._on_score is not None:
            self._on_score(outcome)

    def recent_accuracy(self, path: str) -> float | None:
        window = self.recent[path]
        return sum(window) / len(window) if window else None

    def accuracy(self, path: str) -> tuple[float | None, int]:
        """Over every segment so far: (accuracy, frames scored)."""
        correct = sum(c[path][0] for c in self.counts.values())
        scored = sum(c[path][1] for c in self.counts.values())
        return (correct / scored if scored else None), scored

    def segment_accuracy(self, path: str, segment: int | None = None) -> tuple[float | None, int]:
        correct, scored = self.counts.get(self.segment if segment is None else segment, {}).get(path, (0, 0))
        return (correct / scored if scored else None), scored


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def blocks(correct: list[bool], window: int) -> list[float]:
    """Accuracy over consecutive blocks of ``window`` (the last one may be shorter)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return [sum(correct[i:i + window]) / len(correct[i:i + window]) for i in range(0, len(correct), window)]


def running_accuracy(correct: list[bool], window: int) -> list[float]:
    """At each frame: the accuracy over the last ``window`` frames up to it."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out, hits = [], 0
    for i, c in enumerate(correct):
        hits += c
        if i >= window:
            hits -= correct[i - window]
        out.append(hits / min(i + 1, window))
    return out


def recovery(sequence: list[tuple[int, bool]], window: int, fraction: float = 0.9) -> list[dict]:
    """Per change of segment in ``sequence`` ((segment, correct) in frame order): see the module text."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    running = running_accuracy([c for _, c in sequence], window)
    changes = [i for i in range(1, len(sequence)) if sequence[i][0] != sequence[i - 1][0]]
    result = []
    for n, at in enumerate(changes):
        end = changes[n + 1] if n + 1 < len(changes) else len(sequence)
        baseline = running[at - 1]
        target = fraction * baseline
        fell, frames = False, 0
        for i in range(at, end):
            if running[i] < target:
                fell = True
            elif fell:
                frames = i - at + 1
                break
            elif i - at + 1 >= window:  # a window after the change and never below: unharmed
                break
        else:
            frames = None if fell else 0
        result.append({"segment": sequence[at][0], "after_segment": sequence[at - 1][0], "at_frame": at,
                       "baseline": baseline, "frames": frames})
    return result


def forgetting(held_out: list[tuple[int, bool]], window: int) -> dict:
    """Per segment of ``held_out`` ((segment, correct) in arrival order): see the module text."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    per: dict = {}
    started: dict = {}  # segment -> position of its first frame
    later = {}          # segment -> a later segment began before its last frame
    for i, (segment, correct) in enumerate(held_out):
        per.setdefault(segment, []).append(correct)
        started.setdefault(segment, i)
        later[segment] = any(s != segment and first > started[segment] for s, first in started.items())
    result = {}
    for segment, correct in per.items():
        whole = correct[:len(correct) - len(correct) % window]
        best = max(blocks(whole, window)) if whole else sum(correct) / len(correct)
        final = sum(correct[-window:]) / len(correct[-window:])
        result[segment] = {"best": best, "final": final, "forgetting": best - final,
                           "evaluated_after": later[segment], "frames": len(correct)}
    return result


def join(labels: dict, answers: dict) -> list[Outcome]:
    """Outcomes in stamp order.

    ``labels`` maps stamp -> (class, segment), ``answers`` path -> stamp -> class (or a tuple whose first item is the
    class).
    """
    scorer = Prequential(paths=tuple(answers), history=max(1, sum(len(a) for a in answers.values())),
                         max_pending=max(1, len(labels) + sum(len(a) for a in answers.values())))
    for stamp in sorted(labels):
        scorer.label(stamp, *labels[stamp])
        for path, by_stamp in answers.items():
            if stamp in by_stamp:
                answer = by_stamp[stamp]
                scorer.answer(path, stamp, answer[0] if isinstance(answer, tuple) else answer)
    return list(scorer.history)


def _by_segment(outcomes: list[Outcome], paths) -> dict:
    table: dict = {}
    for o in outcomes:
        table.setdefault(o.segment, {p: [] for p in paths})[o.path].append(o.correct)
    return {seg: {p: {"accuracy": _mean(v), "frames": len(v)} for p, v in row.items()} for seg, row in table.items()}


def summarize(labels: dict, answers: dict, truth: dict | None = None, window: int = 50,
              fraction: float = 0.9) -> dict:
    """Every metric of the module text from one run.

    ``labels`` and ``truth`` map stamp -> (class, segment), ``answers`` maps path -> stamp -> class.  Works without
    ``truth``.
    """
    paths = tuple(answers)
    prequential = join(labels, answers)
    per_path = {p: [o for o in prequential if o.path == p] for p in paths}
    over_time = {p: blocks([o.correct for o in per_path[p]], window) for p in paths}
    report = {
        "window": window,
        "fraction": fraction,
        "segments": sorted({seg for _, seg in labels.values()} | {seg for _, seg in (truth or {}).values()}),
        "prequential": {p: {"accuracy": _mean(o.correct for o in per_path[p]), "frames": len(per_path[p])}
                        for p in paths},
        "prequential_by_segment": _by_segment(prequential, paths),
        "prequential_over_time": over_time,
        "anytime_average": {p: _mean(over_time[p]) for p in paths},
        "recovery": recovery([(o.segment, o.correct) for o in per_path.get("output", [])], window, fraction),
    }
    if truth:
        held_out = join(truth, answers)
        report["held_out_by_segment"] = _by_segment(held_out, paths)
        report["forgetting"] = {p: forgetting([(o.segment, o.correct) for o in held_out if o.path == p], window)
                                for p in paths}
    return report
