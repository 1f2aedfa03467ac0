"""Which split a batch uses.

On the edge a policy chooses, on the cloud a router finds the trainer for the split a batch says it was made at.

By default one split runs, fixed at start-up (``FixedSplit``, one route).  ``ScheduledSplit`` moves it at
given training steps; a policy that learns the split while training (L2S) implements :class:`SplitPolicy` too.
The move itself is :mod:`core.repartition`'s.  Torch-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from .codec import ENCODER_VERSION, FeaturePayload


@dataclass(frozen=True)
class Split:
    split_point: int
    bits: int


@dataclass(frozen=True)
class SplitContext:
    """What the edge knows when it asks its policy, once per training batch."""

    step: int  # edge training steps done


class SplitPolicy(ABC):
    @abstractmethod
    def choose(self, context: SplitContext) -> Split:
        """Return the split and bit width for the next training batch."""


class FixedSplit(SplitPolicy):
    """The split read at start-up, for every batch."""

    def __init__(self, split_point: int, bits: int):
        self.split = Split(split_point, bits)

    def choose(self, context: SplitContext) -> Split:
        return self.split


class ScheduledSplit(SplitPolicy):
    """The split for each training step from a schedule ``"3@0,5@40,3@80"`` (split point @ from step).

    Each entry may give a bit width as well: ``"5/2@40"``; without one the bits stay those given at start.
    """

    def __init__(self, schedule: str, bits: int):
        self.entries = parse_split_schedule(schedule, bits)

    def choose(self, context: SplitContext) -> Split:
        current = self.entries[0][1]
        for step, split in self.entries:
            if context.step >= step:
                current = split
        return current


def parse_split_schedule(text: str, bits: int) -> list[tuple[int, Split]]:
    entries = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            what, at = item.split("@")
            point, _, width = what.partition("/")
            entries.append((int(at), Split(int(point), int(width) if width else bits)))
        except ValueError:
            raise ValueError(f"split schedule entries are POINT[/BITS]@STEP, got {item!r} in {text!r}") from None
    if not entries or entries[0][0] != 0 or [s for s, _ in entries] != sorted({s for s, _ in entries}):
        raise ValueError(f"a split schedule starts at step 0 and its steps increase, got {text!r}")
    return entries


@dataclass(frozen=True)
class Route:
    """What a feature batch must match to be decoded by a cloud trainer."""

    split_point: int
    bits: int
    model_hash: int  # of the model id, which names the split and bits too; 0 in a payload = not stated
    encoder_version: int = ENCODER_VERSION

    @classmethod
    def of(cls, payload: FeaturePayload) -> Route:
        return cls(payload.split_point, payload.bits, payload.model_hash, payload.encoder_version)

    def accepts(self, payload: FeaturePayload) -> bool:
        theirs = Route.of(payload)
        return theirs == self or (theirs.model_hash == 0 and theirs == Route(
            self.split_point, self.bits, 0, self.encoder_version))

    def __str__(self) -> str:
        return (f"split_point {self.split_point}, bits {self.bits}, model {self.model_hash:08x}, "
                f"encoder_version {self.encoder_version}")


class TrainerRouter:
    """The cloud's trainers by route: each batch goes to the one made for the split it carries."""

    def __init__(self):
        self._trainers: dict[Route, object] = {}

    def add(self, route: Route, trainer) -> None:
        if route in self._trainers:
            raise ValueError(f"a trainer for {route} is already there")
        self._trainers[route] = trainer

    def trainer_for(self, payload: FeaturePayload):
        """Return the trainer for ``payload``; ``ValueError`` naming the batch's route and ours if none."""
        for route, trainer in self._trainers.items():
            if route.accepts(payload):
                return trainer
        served = "; ".join(str(r) for r in self._trainers) or "none"
        raise ValueError(f"no cloud trainer for a batch made at {Route.of(payload)} (this cloud serves: {served}): "
                         "edge and cloud need the same model, width, num_classes, split_point, bits and budget_bits")

    def __len__(self) -> int:
        return len(self._trainers)
