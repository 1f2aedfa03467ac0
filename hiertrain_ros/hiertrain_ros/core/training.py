"""Edge, cloud and full-cloud trainers, and the offline training loop.

The edge trains its layers from the early-exit loss only; the cloud trains its
layers from the final loss on decoded features only.  Nothing but the payload
crosses the split, so no gradient ever flows from cloud to edge.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint, codec, progressive, repartition
from .coding import CODINGS, DEFAULT_CODING
from .config import exit_loss_weights
from .data import Frames, batches
from .models import CloudModel, EdgeModel, SplitSpec, build_cloud, build_edge, build_model
from .optim import OptimConfig, paper_optim  # noqa: F401 (re-exported: trainers take them)
from .splits import FixedSplit, Route, Split, SplitContext, SplitPolicy

log = logging.getLogger(__name__)


class _Trainer:
    """Model + optimizer + step counter, with checkpointable state."""

    role = "model"

    def __init__(self, model: nn.Module, optim: OptimConfig, model_id: str):
        self.model = model
        self.optim_config = optim
        self.model_id = model_id
        self.model_hash = codec.model_hash(model_id)
        params = [p for p in model.parameters() if p.requires_grad]
        if optim.name == "adam":
            self.optimizer = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                                             weight_decay=optim.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, optim.cosine_steps)
                          if optim.cosine_steps > 0 else None)
        self.step = 0
        self.movable = None  # a core.repartition.MovableSide once make_movable: the split can then move

    def _update(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise ValueError(f"non-finite loss {float(loss)}: batch refused, weights untouched")
        self._apply(loss.backward)

    def _classify_step(self, inputs: torch.Tensor, labels: torch.Tensor) -> StepResult:
        """Forward, cross-entropy, one update: the step of every part whose model ends in logits."""
        self.model.train()
        logits = self.model(inputs)
        loss = F.cross_entropy(logits, labels)
        self._update(self._with_shadows(loss, labels))
        return StepResult(float(loss.detach()), int((logits.argmax(1) == labels).sum()), len(labels))

    def _with_shadows(self, loss: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``loss`` plus, on a cloud whose split moves, what keeps the splits past it ready (MovableSide)."""
        shadows = self.movable.shadow_loss(labels) if self.movable is not None else None
        return loss if shadows is None else loss + shadows

    def _apply(self, backward) -> None:
        """One optimizer step around ``backward()``, which fills the gradients."""
        self.optimizer.zero_grad(set_to_none=True)
        backward()
        warmup = self.optim_config.warmup_steps
        if self.step < warmup:  # this step at a fraction of the lr; the schedule itself is untouched
            groups = self.optimizer.param_groups
            scheduled = [g["lr"] for g in groups]
            for g in groups:
                g["lr"] *= (self.step + 1) / warmup
            self.optimizer.step()
            for g, lr in zip(groups, scheduled):
                g["lr"] = lr
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1

    def state_dict(self) -> dict:
        return {"role": self.role, "model_id": self.model_id, "encoder_version": codec.ENCODER_VERSION,
                "step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("role") != self.role or state.get("model_id") != self.model_id:
            raise ValueError(f"checkpoint is for {state.get('role')} {state.get('model_id')!r}, "
                             f"this is {self.role} {self.model_id!r}")
        if state.get("encoder_version") != codec.ENCODER_VERSION:
            raise ValueError(f"checkpoint encoder version {state.get('encoder_version')} "
                             f"!= {codec.ENCODER_VERSION}")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])
        except (KeyError, RuntimeError, TypeError) as exc:
            raise ValueError(f"checkpoint for {self.model_id!r} is incomplete or damaged: {exc}") from exc


    def make_movable(self, side) -> None:
        """Train ``side``'s model (a :class:`core.repartition.MovableSide`), whose split can then :meth:`move`."""
        self.movable, self.model = side, side.model
        self.optimizer.param_groups[0]["params"] = side.parameters()
        self.model_hash = repartition.tag(self.spec, 0)

    def move(self, to: Split, moves: int, incoming: bytes = b"") -> bytes:
        """Move the split to ``to`` (the ``moves``-th move); return the units the other side gains.

        ``incoming``: the units this side gains, from the other side's return value.  ``ValueError`` (nothing
        changed) when they are not those of this move.
        """
        if self.movable is None:
            raise ValueError(f"this {self.role} was built for one split: it cannot move (see split_policy)")
        outgoing = self.movable.export(to, self.optimizer)
        self.model = self.movable.apply(to, incoming, self.optimizer)
        self.spec = replace(self.spec, split_point=to.split_point, bits=to.bits)
        self.model_hash = repartition.tag(self.spec, moves)
        return outgoing

    def load_weights(self, weights: dict, fresh: tuple[str, ...] = ()) -> None:
        """Start from trained ``weights``.

        Every parameter but those under the ``fresh`` prefixes must be there with its shape; the
        optimizer and the step count start anew.
        """
        try:
            result = self.model.load_state_dict(weights, strict=False)
        except RuntimeError as exc:
            raise ValueError(f"weights do not fit {self.role} {self.model_id!r}: {exc}") from exc
        missing = [k for k in result.missing_keys if not k.startswith(fresh)] if fresh else result.missing_keys
        if missing or result.unexpected_keys:
            raise ValueError(f"weights do not fit {self.role} {self.model_id!r}: missing {missing[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]}")


def _predictions(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    confidence, classes = F.softmax(logits.float(), dim=1).max(dim=1)
    return classes.numpy(), confidence.numpy()


@dataclass(frozen=True)
class StepResult:
    loss: float
    correct: int
    samples: int


@dataclass(frozen=True)
class EdgeAnswers:
    """The edge's progressive answers to an inference batch (see :meth:`EdgeTrainer.answer`)."""

    classes: np.ndarray     # per frame: the answering exit's class (an unsure frame: the last exit's guess)
    confidence: np.ndarray  # max softmax of that exit, as every Prediction reports it
    exit_index: np.ndarray  # the edge exit that answered, 0 = the first (an unsure frame: the last)
    sure: np.ndarray        # some edge exit reached c_thr
    offloaded: np.ndarray   # the frame's features are in ``payload``: the cloud will answer it too
    payload: codec.FeaturePayload | None  # features of the offloaded frames, in order; None: none is


class EdgeTrainer(_Trainer):
    """Trains the edge part from the early-exit (edge) loss and emits the batch's payload.

    Before each training step it asks its split policy (default: the spec's split, fixed).
    Inference answers progressively (:meth:`answer`): ``offload`` (core.progressive.OFFLOAD_POLICIES) says
    which frames' features go to the cloud, ``c_thr`` and ``measure`` when an edge exit is sure.
    """

    role = "edge"

    def __init__(self, edge: EdgeModel, spec: SplitSpec, optim: OptimConfig, policy: SplitPolicy | None = None,
                 coding: str = DEFAULT_CODING, *, offload: str = "always", c_thr: float = 0.9,
                 measure: str = "max_softmax", exit_weights=()):
        super().__init__(edge, optim, spec.model_id)
        if coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
        # One loss weight per exit, earliest first (() = all 1.0); a weight-0 exit is left out of the loss.
        self.exit_weights = exit_loss_weights(exit_weights, len(getattr(edge, "exits", ())) or 1)
        self.spec = spec
        self.coding = coding
        self.set_answering(offload, c_thr, measure)
        self.encode_s, self.encoded = 0.0, 0  # time spent quantizing, packing and coding payloads
        self.policy = policy or FixedSplit(spec.split_point, spec.bits)
        # Batch sequence numbers must never repeat, across restarts too (the cloud would take a
        # new batch for one it already trained): count on from the wall clock in microseconds.
        self.seq = time.time_ns() // 1000

    def _payload(self, features: torch.Tensor, labels, **meta) -> codec.FeaturePayload:
        self.seq += 1
        start = time.perf_counter()
        payload = codec.encode(features, bits=self.spec.bits, split_point=self.spec.split_point, labels=labels,
                               coding=self.coding, seq=self.seq, model_hash=self.model_hash, **meta)
        self.encode_s += time.perf_counter() - start  # part of the edge's stage: the link waits on it
        self.encoded += 1
        return payload

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, **meta) -> tuple[StepResult, codec.FeaturePayload]:
        self._follow(self.policy.choose(SplitContext(step=self.step)))
        self.model.train()
        features, exits = self.model.forward_exits(images)
        logits = exits[-1]
        edge_loss = sum(w * F.cross_entropy(z, labels) for w, z in zip(self.exit_weights, exits, strict=True) if w)
        # The payload carries this forward pass's features: the cloud works on them
        # while the edge runs its own backward pass.
        payload = self._payload(features, labels.numpy(), **meta)
        self._update(edge_loss)
        correct = int((logits.argmax(1) == labels).sum())
        return StepResult(float(edge_loss.detach()), correct, len(labels)), payload

    def _follow(self, split: Split) -> None:
        """Run at ``split``: the one the trainer is at (a move is the node's: core.repartition.EdgeMove)."""
        if split != self.split:
            raise ValueError(f"split policy chose {split}, but this edge runs split_point {self.spec.split_point} "
                             f"at {self.spec.bits} bits: move first (core.repartition), batch refused")

    @property
    def split(self) -> Split:
        return Split(self.spec.split_point, self.spec.bits)

    def move(self, to: Split, moves: int, incoming: bytes = b"") -> bytes:
        outgoing = super().move(to, moves, incoming)
        if isinstance(self.policy, FixedSplit):
            self.policy = FixedSplit(to.split_point, to.bits)
        return outgoing

    @torch.no_grad()
    def infer(self, images: torch.Tensor, **meta) -> tuple[np.ndarray, np.ndarray, codec.FeaturePayload]:
        """Early-exit classes and confidences, plus the unlabelled payload for the cloud's answer."""
        self.model.eval()
        features, logits = self.model(images)
        classes, confidence = _predictions(logits)
        return classes, confidence, self._payload(features, None, **meta)

    def set_answering(self, offload: str, c_thr: float, measure: str) -> None:
        """Change the offload policy, threshold and confidence measure (one assignment: safe while answering)."""
        if offload not in progressive.OFFLOAD_POLICIES:
            raise ValueError(f"offload policy must be one of {progressive.OFFLOAD_POLICIES}, got {offload!r}")
        progressive.check_answering(c_thr, measure)
        self.answering = (offload, float(c_thr), measure)

    @torch.no_grad()
    def answer(self, images: torch.Tensor, frame_stamps: tuple = (), *, offload: str | None = None,
               **meta) -> EdgeAnswers:
        """Answer a batch progressively and build the payload of the frames the cloud should answer.

        Per frame the first exit at least ``c_thr`` sure answers (core.progressive.decide); a frame no exit is
        sure about gets the last exit's guess.  ``always`` offloads every frame, ``unsure`` those no exit is sure
        about, ``never`` none.  Unless every frame is offloaded, a frame stops at the exit that answers it: the
        later layers run only for the others (core.progressive.answer_early).  ``frame_stamps`` (one per image)
        are cut down to the offloaded frames'.  ``offload`` overrides the policy for this batch (``never`` while
        the split moves).
        """
        policy, c_thr, measure = self.answering
        offload = offload or policy
        if frame_stamps and len(frame_stamps) != len(images):
            raise ValueError(f"need one frame stamp per image ({len(images)}), got {len(frame_stamps)}")
        self.model.eval()
        classes, confidence, exit_index, sure, features, rows = progressive.answer_early(
            self.model.stages(), images, c_thr, measure, stop=offload != "always")
        offloaded = {"always": np.ones_like(sure), "unsure": ~sure, "never": np.zeros_like(sure)}[offload]
        payload = None
        if offloaded.any():
            if frame_stamps:
                meta["frame_stamps"] = tuple(frame_stamps[i] for i in np.flatnonzero(offloaded))
            reached = offloaded[rows.numpy()]  # every offloaded frame reached the last layers
            chosen = features if reached.all() else features[torch.from_numpy(reached)]
            payload = self._payload(chosen, None, **meta)
        return EdgeAnswers(classes, confidence, exit_index, sure, offloaded, payload)

    def load_weights(self, weights: dict, fresh: tuple[str, ...] = ()) -> None:
        """Start from trained ``weights``; those of a one-exit edge (``trained/``) start a several-exit one too.

        Their exit is this edge's last (both read the compressed features); the earlier exits start fresh.
        """
        last = len(self.model.exits) - 1
        if last and not any(k.startswith(f"exits.{last}.") for k in weights):
            weights = {f"exits.{last}.{k[len('exits.0.'):]}" if k.startswith("exits.0.") else k: v
                       for k, v in weights.items()}
            fresh = (*fresh, *(f"exits.{i}." for i in range(last)))
        super().load_weights(weights, fresh)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "seq": self.seq}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.seq = max(self.seq, int(state.get("seq", 0)))


class CloudTrainer(_Trainer):
    """Trains the cloud part from the final (cloud) loss on decoded payloads."""

    role = "cloud"

    def __init__(self, cloud: CloudModel, spec: SplitSpec, optim: OptimConfig, *, c_thr: float = 0.9,
                 measure: str = "max_softmax", exit_weights=()):
        super().__init__(cloud, optim, spec.model_id)
        self.spec = spec
        # One loss weight per exit, the network's output last (() = all 1.0); a weight-0 exit is left out.
        self.exit_weights = exit_loss_weights(exit_weights, len(getattr(cloud, "exit_ends", ())) + 1)
        self.set_answering(c_thr, measure)

    def set_answering(self, c_thr: float, measure: str) -> None:
        """When one of the cloud's early exits is sure enough (used only where the cloud has early exits)."""
        progressive.check_answering(c_thr, measure)
        self.answering = (float(c_thr), measure)

    @property
    def _has_exits(self) -> bool:
        return bool(getattr(self.model, "exit_ends", ()))

    @property
    def route(self) -> Route:
        """The batches this trainer decodes (see :class:`TrainerRouter`)."""
        return Route(self.spec.split_point, self.spec.bits, self.model_hash)

    def check(self, payload: codec.FeaturePayload, *, train: bool) -> None:
        """Raise ``ValueError`` unless ``payload`` is well-formed and made by this model's edge.

        For training it must also be labelled within range.  Allocates nothing.
        """
        codec.validate(payload)
        if payload.split_point != self.spec.split_point:
            raise ValueError(f"payload split_point {payload.split_point} != {self.spec.split_point}")
        if payload.model_hash and payload.model_hash != self.model_hash:
            raise ValueError(f"payload from model {payload.model_hash:08x}, not this {self.model_id!r} "
                             f"({self.model_hash:08x}): edge and cloud need the same model, width, "
                             "num_classes, split_point, bits and budget_bits")
        if tuple(payload.shape[1:]) != tuple(self.model.feature_shape):
            raise ValueError(f"payload feature shape {tuple(payload.shape[1:])} != {self.model.feature_shape}")
        labels = np.asarray(payload.labels)
        if train and (labels.min() < 0 or labels.max() >= self.spec.num_classes):
            raise ValueError(f"labels must be in 0..{self.spec.num_classes - 1}, got "
                             f"{int(labels.min())}..{int(labels.max())}")

    def train_step(self, payload: codec.FeaturePayload, replay=()) -> StepResult:
        """Decode, then one step on the final (cloud) loss.

        ``replay``: ``(payload, loss weight)`` pairs of earlier batches trained on in the same step
        (latent replay); the loss is then the weighted mean over all samples, and the result
        counts the new batch's samples only.
        """
        self.check(payload, train=True)
        if not replay and not self._has_exits and self.exit_weights == (1.0,):
            return self._classify_step(codec.decode(payload), _labels(payload))
        return self._weighted_step([(payload, 1.0), *replay], new=payload.num_samples)

    def replay_step(self, replay) -> StepResult:
        """One step on replayed ``(payload, loss weight)`` pairs only (idle compute)."""
        if not replay:
            raise ValueError("a replay step needs at least one batch")
        return self._weighted_step(replay, new=sum(p.num_samples for p, _ in replay))

    def _weighted_step(self, parts, new: int) -> StepResult:
        for payload, _ in parts:
            self.check(payload, train=True)
        features = torch.cat([codec.decode(p) for p, _ in parts])
        labels = torch.cat([_labels(p) for p, _ in parts])
        weights = torch.cat([torch.full((p.num_samples,), float(w)) for p, w in parts])
        self.model.train()
        # With early exits each trains from its own loss on the cloud's side, weighted as on the edge.
        exits = self.model.forward_exits(features) if self._has_exits else [self.model(features)]
        logits = exits[-1]
        loss = sum(w * (F.cross_entropy(z, labels, reduction="none") * weights).sum()
                   for w, z in zip(self.exit_weights, exits, strict=True) if w)
        loss = loss / weights.sum().clamp_min(1e-12)
        self._update(self._with_shadows(loss, labels))
        correct = int((logits[:new].argmax(1) == labels[:new]).sum())
        return StepResult(float(loss.detach()), correct, new)

    @torch.no_grad()
    def predict(self, payload: codec.FeaturePayload,
                serving: ServingCopy | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Classes and confidences for an inference payload, from ``serving`` if given."""
        self.check(payload, train=False)
        features = codec.decode(payload)
        if serving is not None:
            return serving.predict(features)
        self.model.eval()
        return _predictions(self.model(features))

    @torch.no_grad()
    def predict_exits(self, payload: codec.FeaturePayload,
                      serving: ServingCopy | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Classes, confidences (max softmax) and the cloud exit that answered each frame, 0 = the first.

        Without early exits: :meth:`predict`, every frame from exit 0 (the network's output).  With them, the
        first exit at least ``c_thr`` sure answers, else the network's output; a frame answered early skips the
        later layers (core.progressive.answer_early).
        """
        if not self._has_exits:
            classes, confidence = self.predict(payload, serving)
            return classes, confidence, np.zeros(len(classes), dtype=np.int64)
        self.check(payload, train=False)
        features = codec.decode(payload)
        if serving is not None:
            return serving.answer_early(features, *self.answering)
        self.model.eval()
        return progressive.answer_early(self.model.stages(), features, *self.answering)[:3]


def _labels(payload: codec.FeaturePayload) -> torch.Tensor:
    return torch.from_numpy(np.asarray(payload.labels, dtype=np.int64))


class ServingCopy:
    """An eval-mode copy of a model that answers while the original trains.

    Answers from a second thread then never wait for a training step (a full-width
    VGG-16 step takes longer than the fallback waits for the cloud).  The trainer's
    thread calls ``follow`` after its steps; the copy takes the trained weights at
    most every ``refresh_s`` seconds.
    """

    def __init__(self, model: nn.Module, refresh_s: float = 0.5, clock=time.monotonic):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.refresh_s = refresh_s
        self._clock = clock
        self._refreshed = clock()
        self._lock = threading.Lock()

    def follow(self, source: nn.Module) -> bool:
        """Copy ``source``'s weights if the last copy is older than ``refresh_s``."""
        if self._clock() - self._refreshed < self.refresh_s:
            return False
        with self._lock:
            self.model.load_state_dict(source.state_dict())
        self._refreshed = self._clock()
        return True

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return _predictions(self.model(inputs))

    @torch.no_grad()
    def answer_early(self, inputs: torch.Tensor, c_thr: float, measure: str) -> tuple[np.ndarray, ...]:
        """Class, confidence and answering exit per frame from a model with ``stages`` (a cloud part with exits)."""
        with self._lock:
            return progressive.answer_early(self.model.stages(), inputs, c_thr, measure)[:3]


class FullCloudTrainer(_Trainer):
    """The baseline: the whole network trained on raw frames in the cloud."""

    role = "full-cloud"

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        return self._classify_step(images, labels)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        self.model.eval()
        return _predictions(self.model(images))


@dataclass(frozen=True)
class TrainConfig(SplitSpec):
    """The model description plus how to train it offline."""

    mode: str = "hierarchical"  # or "full-cloud"
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    optim: OptimConfig | None = None  # None: the paper's optimizer for arch
    coding: str = DEFAULT_CODING  # lossless coding of the edge's codes (core.coding); the wire bits count it

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in ("hierarchical", "full-cloud"):
            raise ValueError(f"mode must be 'hierarchical' or 'full-cloud', got {self.mode!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {self.coding!r}")

    def spec(self, num_classes: int) -> SplitSpec:
        return replace(self.model_spec(), num_classes=num_classes)


def make_trainers(spec: SplitSpec, optim: OptimConfig, *, seed: int | None = 0,
                  coding: str = DEFAULT_CODING) -> tuple[EdgeTrainer, CloudTrainer]:
    """Both trainers, with the same weights the edge and cloud nodes build for ``seed``."""
    return (EdgeTrainer(build_edge(spec, seed=seed), spec, optim, coding=coding),
            CloudTrainer(build_cloud(spec, seed=seed), spec, optim))


def evaluate_hierarchical(edge: EdgeTrainer, cloud: CloudTrainer, frames: Frames,
                          batch_size: int = 256) -> dict[str, float]:
    early = final = 0
    for images, labels in batches(frames, batch_size, shuffle=False):
        early_classes, _, payload = edge.infer(images)
        final_classes, _ = cloud.predict(payload)
        early += int((torch.from_numpy(early_classes) == labels).sum())
        final += int((torch.from_numpy(final_classes) == labels).sum())
    return {"final_accuracy": final / len(frames), "early_exit_accuracy": early / len(frames)}


def evaluate_full(trainer: FullCloudTrainer, frames: Frames, batch_size: int = 256) -> dict[str, float]:
    correct = 0
    for images, labels in batches(frames, batch_size, shuffle=False):
        classes, _ = trainer.predict(images)
        correct += int((torch.from_numpy(classes) == labels).sum())
    return {"accuracy": correct / len(frames)}


def train_offline(config: TrainConfig, train: Frames, test: Frames, *, progress=None, save_dir=None) -> dict:
    """Train without ROS and return test accuracies and timings.

    ``progress`` is called after each batch with (samples done, samples total, loss).  With
    ``save_dir`` the trained weights go there for the nodes' ``init_from``: ``edge.pt`` and
    ``cloud.pt`` (hierarchical), or the whole model's state_dict as ``model.pt`` (full-cloud).
    """
    torch.manual_seed(config.seed)
    steps = config.epochs * -(-len(train) // config.batch_size)
    optim = config.optim or paper_optim(config.arch, steps)
    spec = config.spec(train.num_classes)
    if config.mode == "hierarchical":
        edge, cloud = make_trainers(spec, optim, seed=config.seed, coding=config.coding)
    else:
        full = FullCloudTrainer(build_model(config.arch, num_classes=train.num_classes, width=config.width),
                                optim, f"{config.arch}-w{config.width:g}-c{train.num_classes}-full")
    total, done, start = config.epochs * len(train), 0, time.perf_counter()
    wire_bits = uncoded_bits = 0
    for epoch in range(config.epochs):
        for images, labels in batches(train, config.batch_size, shuffle=True, seed=config.seed + epoch):
            if config.mode == "hierarchical":
                edge_result, payload = edge.train_step(images, labels)
                result = cloud.train_step(payload)
                wire_bits += payload.wire_bits
                uncoded_bits += codec.packed_size(math.prod(payload.shape), payload.bits) * 8 + 32
            else:
                result = full.train_step(images, labels)
                wire_bits += images.shape[0] * images[0].numel() * 8
            done += len(labels)
            if progress is not None:
                progress(done, total, result.loss)
    train_seconds = time.perf_counter() - start
    metrics = (evaluate_hierarchical(edge, cloud, test) if config.mode == "hierarchical"
               else evaluate_full(full, test))
    saved = []
    if save_dir is not None:
        if config.mode == "hierarchical":
            saved = checkpoint.save_trained(save_dir, spec, {"edge": edge.model, "cloud": cloud.model})
        else:
            saved = [Path(save_dir) / "model.pt"]
            checkpoint.save(full.model.state_dict(), saved[0])
    return {"config": {**asdict(config), "optim": asdict(optim)}, "train_samples": len(train),
            "test_samples": len(test), "train_seconds": train_seconds,
            "wire_bits_per_sample": wire_bits / total,
            # Raw frames have no coding: the full-cloud's uncoded bits are its wire bits.
            "uncoded_bits_per_sample": (uncoded_bits if config.mode == "hierarchical" else wire_bits) / total,
            "saved": [str(p) for p in saved], **metrics}
