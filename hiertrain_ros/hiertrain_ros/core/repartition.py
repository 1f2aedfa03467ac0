"""Live repartition (L2S §IV-C): the split point and bit width move while edge and cloud train.

A network whose split moves is held as the whole model's units (torchvision's layers, as
:func:`core.models._units` lists them) plus, per split ``(split_point, bits)``, the adapters only that
split uses:

- the compression convolution, which feeds the edge's exit and the codec;
- the exit that reads its output (it stays on the edge);
- a *decoder*: a 3x3 convolution, batch norm and ReLU taking the compressed channels back to the backbone's,
  ahead of the unchanged next layer.  (The fixed-split cloud rebuilds its first layer for the compressed
  channels instead; a rebuilt layer could not move to the edge, a decoder never needs to.)

Each side owns a contiguous run of units: the edge ``[0, end(s))``, the cloud ``[end(s), n)``.  A move from
split ``p`` to ``q`` hands the units between ``end(p)`` and ``end(q)`` to the other side with their weights,
batch-norm buffers and optimizer state (:meth:`MovableSide.export`), as one ``torch.save`` blob that
:meth:`MovableSide.apply` reads back with ``weights_only=True`` (tensors and plain containers only: no code
travels).  A split's compression goes with the unit before the split and its decoder with the unit after it,
so they travel in the same blob.  A side that holds both halves of another split (one it has been at, now
inside its run of units) keeps them trained (:meth:`MovableSide.shadow_loss`): they learn to give back the
backbone's map through the codec's quantization, so that after a move to that split the layers behind it get
what they got before.  (Before they were, the adapters of a split were trained only while it was in use,
and the cloud's training accuracy fell from about 0.77 to 0.62 for 20 s after a 3->8 move in the L2S bench's
run J, docs/l2s_bench.md.)  A split's adapters start from weights seeded by the split (the same on
every run, on both sides).

Every feature batch is tagged with :func:`tag` of the split, the bit width and the move count, so the cloud
never decodes a batch against another split, bit width or encoder.  The protocol that keeps both sides in
step (the edge drains its training batches, then asks; the cloud moves and answers with the layers the edge
gains) is :class:`EdgeMove`'s.  Both sides build the same initial units from the seed, so the weights a side
does not own are placeholders until they arrive.  No ROS here.
"""

from __future__ import annotations

import copy
import io
import zlib
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .codec import fake_quantize
from .models import CloudModel, EdgeModel, SplitSpec, _seed, _units, build_model, compression, linear_exit
from .splits import Split

# A move's blob holds a few layers; anything far bigger is not one (checked before torch.load reads it).
MAX_STATE_BYTES = 256 << 20


def family_id(spec: SplitSpec) -> str:
    """Return the model id without the split: what stays the same across moves."""
    return f"{spec.arch}-w{spec.width:g}-c{spec.num_classes}-B{spec.budget_bits}-movable"


def tag(spec: SplitSpec, moves: int) -> int:
    """Return the model hash a batch carries: of the family, the split, the bit width and the moves so far."""
    return zlib.crc32(f"{family_id(spec)}/p{spec.split_point}/b{spec.bits}/m{moves}".encode())


def decoder(spec: SplitSpec) -> nn.Module:
    """Return the cloud's adapter for ``spec``'s split: compressed channels back to the backbone's."""
    return nn.Sequential(nn.Conv2d(spec.feature_shape[0], spec.backbone_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(spec.backbone_channels), nn.ReLU(inplace=True))


ADAPTERS = ("compress", "decoder", "exits")
MOVING_ADAPTERS = ("compress", "decoder")  # the edge's exits never leave it


def _bound_bytes(params: int, buffers: int) -> int:
    return 4 * (3 * params + buffers)  # two optimizer moments per weight (Adam; SGD's momentum is one)


def move_bytes(arch: str, width: float, num_classes: int, arms=None):
    """Return ``bound(p, q)``: an upper bound on the size of a move's blob between split points ``p`` and ``q``.

    The units between the two points and the compression and decoder of every split in ``arms`` (:class:`Split`
    s; None: every position at one bit width) at or between them, with two optimizer moments per
    weight (Adam; SGD's momentum is one) and their batch-norm buffers, at 4 bytes a value, plus 64 KiB for the
    container.  An adapter is bounded as if it kept every channel.
    """
    units, ends = _units(arch, build_model(arch, num_classes=num_classes, width=width))
    sizes = [_bound_bytes(sum(p.numel() for p in unit.parameters()), sum(b.numel() for b in unit.buffers()))
             for unit in units]
    points = [a.split_point for a in set(arms)] if arms is not None else range(1, len(ends) + 1)
    channels = {p: SplitSpec(arch, p, width=width, num_classes=num_classes).backbone_channels for p in set(points)}
    # A compression or a decoder: a 3x3 convolution (no bias) and a batch norm, at most C x C.
    adapter = {p: _bound_bytes(9 * c * c + 2 * c, 2 * c + 1) for p, c in channels.items()}

    def bound(p: int, q: int) -> int:
        lo, hi = sorted((ends[p - 1], ends[q - 1]))
        # A split's compression goes with the unit before it, its decoder with the unit after it.
        adapters = sum(adapter[r] * ((lo < ends[r - 1] <= hi) + (lo <= ends[r - 1] < hi)) for r in points)
        return sum(sizes[lo:hi]) + adapters + (64 << 10)
    return bound


def move_bytes_bound(arch: str, width: float, num_classes: int, arms) -> int:
    """Return :func:`move_bytes`'s bound for the largest move among the splits ``arms`` (:class:`Split` s)."""
    points = [a.split_point for a in arms]
    return move_bytes(arch, width, num_classes, arms)(min(points), max(points))


def adapter_name(kind: str, split: Split) -> str:
    return f"{kind}/{split.split_point}/{split.bits}"


def _parse_adapter(name: str) -> tuple[str, Split]:
    try:
        kind, point, bits = name.split("/")
        if kind in ADAPTERS:
            return kind, Split(int(point), int(bits))
    except ValueError:
        pass
    raise ValueError(f"a move's state names an unknown part {name!r}")


class MovableSide:
    """One side's share of a network whose split moves: its run of units and the splits' adapters it holds."""

    def __init__(self, role: str, spec: SplitSpec, *, seed: int = 0, keep_ready: bool = True):
        if role not in ("edge", "cloud"):
            raise ValueError(f"role must be 'edge' or 'cloud', got {role!r}")
        self.role, self.seed = role, seed
        self.keep_ready = keep_ready  # train the other splits' adapters this side holds (False: only for comparison)
        self.spec = spec.model_spec()
        _seed(seed, 2)  # the same units on both sides: one side's are placeholders until they arrive
        self.units, self.ends = _units(spec.arch, build_model(spec.arch, num_classes=spec.num_classes,
                                                              width=spec.width))
        self.adapters: dict[str, nn.Module] = {}  # by adapter_name: the ones made or received so far
        self._hooks, self._taps = [], {}
        self.model = self._build(self.spec)

    def owned(self, split_point: int) -> range:
        end = self.ends[split_point - 1]
        return range(0, end) if self.role == "edge" else range(end, len(self.units))

    def holds(self, name: str, split_point: int) -> bool:
        """Whether this side holds adapter ``name`` at ``split_point``.

        A split's compression goes with the unit before the split, its decoder with the unit after it; the edge's
        exits stay on the edge.
        """
        kind, at = _parse_adapter(name)
        if not 1 <= at.split_point <= len(self.ends):
            raise ValueError(f"adapter {name!r} is not at a split of this model")
        if kind == "exits":
            return self.role == "edge"
        end = self.ends[at.split_point - 1]
        return (end - 1 if kind == "compress" else end) in self.owned(split_point)

    def _make(self, kind: str, split: Split) -> nn.Module:
        spec = replace(self.spec, split_point=split.split_point, bits=split.bits)  # checks the position and bits
        with torch.random.fork_rng():  # seeded by the split: the same on both sides, on every run
            torch.manual_seed(self.seed * 1000 + split.split_point * 10 + split.bits + 100_000 * ADAPTERS.index(kind))
            if kind == "compress":
                return compression(spec.backbone_channels, spec.feature_shape[0])
            if kind == "decoder":
                return decoder(spec)
            return nn.ModuleList([linear_exit(*spec.feature_shape, spec.num_classes)])

    def _adapter(self, kind: str, split: Split) -> nn.Module:
        name = adapter_name(kind, split)
        if name not in self.adapters:
            self.adapters[name] = self._make(kind, split)
        return self.adapters[name]

    def shadows(self, split_point: int) -> list[Split]:
        """Other splits whose compression and decoder this side both holds at ``split_point``: it trains them."""
        if not self.keep_ready:
            return []
        return [split for split in {_parse_adapter(name)[1] for name in self.adapters}
                if all(adapter_name(kind, split) in self.adapters and self.holds(adapter_name(kind, split), split_point)
                       for kind in MOVING_ADAPTERS)]

    def _tap(self, split: Split, module: nn.Module, out: torch.Tensor) -> None:
        if module.training and torch.is_grad_enabled():
            self._taps[split] = out.detach()

    def shadow_loss(self, labels: torch.Tensor | None = None) -> torch.Tensor | None:
        """Return the loss that keeps the other splits this side holds ready to be moved to (None: there are none).

        Per such split, the backbone's map there (taken in this step's forward pass, not trained through) goes
        through the split's compression, the codec's quantization and its decoder, which learn to give it back
        (the mean squared error relative to the map's power): after a move the next layers get from the new split
        what they got before it.  On the edge the split's exit learns from the compressed map too.
        """
        taps, self._taps = self._taps, {}
        loss = None
        for split, target in taps.items():
            code = self.adapters[adapter_name("compress", split)](target)
            back = self.adapters[adapter_name("decoder", split)](fake_quantize(code, split.bits))
            part = F.mse_loss(back, target) / target.pow(2).mean().clamp_min(1e-12)
            exits = self.adapters.get(adapter_name("exits", split))
            if exits is not None and labels is not None:
                part = part + F.cross_entropy(exits[-1](code), labels)
            loss = part if loss is None else loss + part
        return loss

    def _build(self, spec: SplitSpec) -> nn.Module:
        split = Split(spec.split_point, spec.bits)
        units = [self.units[i] for i in self.owned(spec.split_point)]
        for hook in self._hooks:
            hook.remove()
        self._hooks, self._taps = [], {}
        for other in self.shadows(spec.split_point):
            self._hooks.append(self.units[self.ends[other.split_point - 1] - 1].register_forward_hook(
                lambda module, args, out, other=other: self._tap(other, module, out)))
        if self.role == "cloud":
            return CloudModel(nn.Sequential(self._adapter("decoder", split), *units), spec.feature_shape)
        with torch.random.fork_rng():  # its own compression and exit are replaced by the split's
            model = EdgeModel(nn.Sequential(*units), spec.backbone_channels, spec.feature_shape, spec.num_classes)
        model.compress, model.exits = self._adapter("compress", split), self._adapter("exits", split)
        return model
    def parameters(self) -> list[nn.Parameter]:
        """Return what this side trains now and may train later: its units and every adapter it holds."""
        point = self.spec.split_point
        units = [p for i in self.owned(point) for p in self.units[i].parameters()]
        return units + [p for name, a in self.adapters.items() if self.holds(name, point) for p in a.parameters()]

    def leaving(self, to: Split) -> list[int]:
        return sorted(set(self.owned(self.spec.split_point)) - set(self.owned(to.split_point)))

    def _adapters_leaving(self, to: Split) -> list[str]:
        return sorted(name for name in self.adapters
                      if self.holds(name, self.spec.split_point) and not self.holds(name, to.split_point))

    def export(self, to: Split, optimizer: torch.optim.Optimizer) -> bytes:
        """Return what this side hands over in a move to ``to``: weights, buffers and optimizer state.

        Of the units that leave, keyed by index, and of the adapters that go with them, by :func:`adapter_name`.
        """
        blob = {}
        for key, module in [*((i, self.units[i]) for i in self.leaving(to)),
                            *((name, self.adapters[name]) for name in self._adapters_leaving(to))]:
            blob[key] = {"weights": module.state_dict(),
                         "optim": {name: optimizer.state[p] for name, p in module.named_parameters()
                                   if p in optimizer.state}}
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        return buffer.getvalue()

    def apply(self, to: Split, incoming: bytes, optimizer: torch.optim.Optimizer) -> nn.Module:
        """Move to ``to``: drop the units that leave, load those that arrive from ``incoming``; return the model.

        Adapters that arrive (those of the splits the arriving units hold, which the other side had) are loaded
        the same way; an adapter this side gains that the other side never made is made here, from the same seed.
        The optimizer follows: the state of the units and adapters that leave is dropped, that of those that arrive
        is theirs, and a new split's adapters join with none.  ``ValueError`` when ``incoming`` is not the other
        side's export for this move (then nothing has changed).
        """
        spec = replace(self.spec, split_point=to.split_point, bits=to.bits)  # checks the position and bits
        point = self.spec.split_point
        arriving = sorted(set(self.owned(to.split_point)) - set(self.owned(point)))
        blob = _load(incoming)
        names = sorted(k for k in blob if isinstance(k, str))
        if sorted(k for k in blob if isinstance(k, int)) != arriving:
            raise ValueError(f"a move of the {self.role} from split {point} to {to.split_point} "
                             f"needs units {arriving}, got {sorted(k for k in blob if isinstance(k, int))}")
        for name in names:
            if _parse_adapter(name)[0] not in MOVING_ADAPTERS or self.holds(name, point) \
                    or not self.holds(name, to.split_point):
                raise ValueError(f"a move of the {self.role} from split {point} to {to.split_point} "
                                 f"does not bring adapter {name!r}")
        # Loaded aside first: a bad blob changes nothing.
        fresh = {**{i: copy.deepcopy(self.units[i]) for i in arriving},
                 **{name: self._make(*_parse_adapter(name)) for name in names}}
        states = {}
        for key, module in fresh.items():
            try:
                module.load_state_dict(blob[key]["weights"])
                named = dict(module.named_parameters())
                states.update({named[name]: state for name, state in blob[key]["optim"].items()})
            except (KeyError, RuntimeError, TypeError) as exc:
                raise ValueError(f"part {key} of the move does not fit this model: {exc}") from exc
        for module in [*(self.units[i] for i in self.leaving(to)),
                       *(self.adapters[name] for name in self._adapters_leaving(to))]:
            for p in module.parameters():
                optimizer.state.pop(p, None)
        for key, module in fresh.items():
            if isinstance(key, int):
                self.units[key] = module
            else:
                self.adapters[key] = module
        optimizer.state.update(states)
        self.spec = spec
        self.model = self._build(spec)
        optimizer.param_groups[0]["params"] = self.parameters()
        return self.model


def _load(data: bytes) -> dict:
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"a move's state of {len(data)} bytes is over the {MAX_STATE_BYTES} limit")
    try:
        blob = torch.load(io.BytesIO(bytes(data)), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable blob is refused the same way
        raise ValueError(f"a move's state could not be read: {exc}") from exc
    if not isinstance(blob, dict) or not all(isinstance(k, (int, str)) and isinstance(v, dict)
                                             for k, v in blob.items()):
        raise ValueError("a move's state must map unit indices and adapter names to their weights and optimizer "
                         "state")
    return blob


@dataclass
class MoveRequest:
    move_id: int
    to: Split
    state: bytes


class EdgeMove:
    """The edge's side of a move, as a state machine the node drives (no ROS, no clock of its own).

    ``idle`` → the policy wants another split (:meth:`want`) → ``draining``: no new training batch; the node
    reports when every training batch sent has been acknowledged (:meth:`request` with ``drained``) → the
    request goes out, and again every ``resend_s`` until the cloud's answer (:meth:`answered`) → ``idle`` at
    the new split.  A drain that takes longer than ``drain_timeout_s`` (the cloud is away) gives the move up:
    training resumes at the old split, and no move starts for as long again.  Once asked, the move is never
    given up: the cloud may have made it already.
    """

    def __init__(self, *, resend_s: float = 2.0, drain_timeout_s: float = 10.0):
        self.resend_s, self.drain_timeout_s = resend_s, drain_timeout_s
        self.target: Split | None = None
        self.request_: MoveRequest | None = None
        self.moves = 0  # moves done: part of every batch's tag
        self.abandoned = 0
        self.pauses: list[float] = []  # seconds without training, per move done
        self._since = self._asked = self._quiet_until = None

    @property
    def busy(self) -> bool:
        return self.target is not None

    def want(self, split: Split, current: Split, now: float) -> bool:
        """Take the policy's choice ``split``; True when a move starts (training pauses from now)."""
        if self.busy or split == current or (self._quiet_until is not None and now < self._quiet_until):
            return False
        self.target, self._since = split, now
        return True

    def request(self, drained: bool, now: float, export) -> MoveRequest | None:
        """Return the request to send now, if any; ``export(to)`` gives the units the edge hands over."""
        if self.target is None:
            return None
        if self.request_ is None:
            if not drained:
                if now - self._since > self.drain_timeout_s:
                    self.abandoned += 1
                    self.target, self._quiet_until = None, now + self.drain_timeout_s
                return None
            self.request_ = MoveRequest(self.moves + 1, self.target, export(self.target))
        elif now - self._asked < self.resend_s:
            return None
        self._asked = now
        return self.request_

    def answered(self, move_id: int, now: float) -> MoveRequest | None:
        """Take the cloud's answer to ``move_id``; return the request it answers (None: not the one under way)."""
        if self.request_ is None or move_id != self.request_.move_id:
            return None
        done, self.request_, self.target = self.request_, None, None
        self.moves = done.move_id
        self.pauses.append(now - self._since)
        return done
