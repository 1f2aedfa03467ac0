"""Live repartition (L2S §IV-C): the split point and bit width move while edge and cloud train.

A network whose split moves is held as the whole model's units (torchvision's layers, as
:func:`core.models._units` lists them) plus, per split ``(split_point, bits)``, the adapters only that
split uses:

- on the edge, the compression convolution and the exit that reads its output (:class:`EdgeModel`'s
  ``compress`` and ``exits``);
- on the cloud, a *decoder*: a 3x3 convolution, batch norm and ReLU taking the compressed channels back to
  the backbone's, ahead of the unchanged next layer.  (The fixed-split cloud rebuilds its first layer for the
  compressed channels instead; a rebuilt layer could not move to the edge, a decoder never needs to.)

Each side owns a contiguous run of units: the edge ``[0, end(s))``, the cloud ``[end(s), n)``.  A move from
split ``p`` to ``q`` hands the units between ``end(p)`` and ``end(q)`` to the other side with their weights,
batch-norm buffers and optimizer state (:meth:`MovableSide.export`), as one ``torch.save`` blob that
:meth:`MovableSide.apply` reads back with ``weights_only=True`` (tensors and plain containers only: no code
travels).  Adapters stay where they are; going back to a split resumes its adapters where they were.  The
edge's compression and exit of a split it has left are kept untrained.  The cloud keeps the splits past its own
ready (:meth:`MovableSide.shadow_loss`): for every decoder it holds of a split inside its run of units (the
candidates it is told, and splits it has been at) it trains a compression and an exit of its own with it, the
compression to give back the backbone's map there through the codec's quantization, the exit from the labels, as
the edge's would.  A move to that split hands both to the edge (in the cloud's answer, with the units): the
layers behind the new split get what they got before, and the edge's new exit does not start untrained (an
untrained exit's loss would train the edge's layers on noise).  Before the cloud kept them ready, the cloud's
training accuracy fell from about 0.77 to 0.62 for 20 s after a 3->8 move in the L2S bench's run J
(docs/l2s_bench.md).  The edge keeps nothing ready: its compute is the robot's, and LinUCB-E would charge it to the
split in use.  A split's adapters start from weights seeded by the split (the same on every run, the cloud's
compression and exit the same as the edge's).

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


def move_bytes(arch: str, width: float, num_classes: int):
    """Return ``bound(p, q)``: an upper bound on the size of a move's blob between split points ``p`` and ``q``.

    The units between the two points, with two optimizer moments per weight (Adam; SGD's momentum is one) and
    their batch-norm buffers, at 4 bytes a value, plus 64 KiB for the container.
    """
    units, ends = _units(arch, build_model(arch, num_classes=num_classes, width=width))
    sizes = [4 * (3 * sum(p.numel() for p in unit.parameters()) + sum(b.numel() for b in unit.buffers()))
             for unit in units]

    def bound(p: int, q: int) -> int:
        lo, hi = sorted((ends[p - 1], ends[q - 1]))
        return sum(sizes[lo:hi]) + (64 << 10)
    return bound


def move_bytes_bound(arch: str, width: float, num_classes: int, points) -> int:
    """Return :func:`move_bytes`'s bound for the largest move among the split ``points``."""
    return move_bytes(arch, width, num_classes)(min(points), max(points))


class MovableSide:
    """One side's share of a network whose split moves: its run of units and every split's adapters.

    ``keep_ready`` (the cloud only): train a compression and an exit for the splits past the cloud's (see the
    module), those it has been at and the ``candidates`` (:class:`Split` s the edge may move to) from the start.
    """

    def __init__(self, role: str, spec: SplitSpec, *, seed: int = 0, keep_ready: bool = True, candidates=()):
        if role not in ("edge", "cloud"):
            raise ValueError(f"role must be 'edge' or 'cloud', got {role!r}")
        self.role, self.seed = role, seed
        self.keep_ready = keep_ready and role == "cloud"
        self.ready: dict[Split, nn.Module] = {}  # the cloud's compression and exit of other splits, by split
        self.handed_over = 0  # moves whose answer carried a compression and exit kept ready
        self._hooks, self._taps = [], {}
        self.spec = spec.model_spec()
        _seed(seed, 2)  # the same units on both sides: one side's are placeholders until they arrive
        self.units, self.ends = _units(spec.arch, build_model(spec.arch, num_classes=spec.num_classes,
                                                              width=spec.width))
        self.adapters: dict[Split, nn.Module] = {}
        for split in candidates if self.keep_ready else ():
            self._adapter(replace(self.spec, split_point=split.split_point, bits=split.bits))
        self.model = self._build(self.spec)

    def owned(self, split_point: int) -> range:
        end = self.ends[split_point - 1]
        return range(0, end) if self.role == "edge" else range(end, len(self.units))

    def _adapter(self, spec: SplitSpec) -> nn.Module:
        key = Split(spec.split_point, spec.bits)
        if key not in self.adapters:
            self.adapters[key] = self._edge_adapter(key) if self.role == "edge" else self._seeded(spec, decoder)
        return self.adapters[key]

    def _seeded(self, spec: SplitSpec, make) -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 1000 + spec.split_point * 10 + spec.bits)
            return make(spec)

    def _edge_adapter(self, split: Split) -> nn.ModuleDict:
        """Return the edge's adapters of ``split`` as they start: its compression and its exit."""
        def make(spec):
            return nn.ModuleDict({"compress": compression(spec.backbone_channels, spec.feature_shape[0]),
                                  "exits": nn.ModuleList([linear_exit(*spec.feature_shape, spec.num_classes)])})
        return self._seeded(replace(self.spec, split_point=split.split_point, bits=split.bits), make)

    def shadows(self, split_point: int) -> list[Split]:
        """Return the splits the cloud keeps ready at ``split_point``: those of its decoders past it."""
        if not self.keep_ready:
            return []
        end = self.ends[split_point - 1]
        return sorted((s for s in self.adapters if self.ends[s.split_point - 1] > end),
                      key=lambda s: (s.split_point, s.bits))

    def _tap(self, split: Split, module: nn.Module, out: torch.Tensor) -> None:
        if module.training and torch.is_grad_enabled():
            self._taps[split] = out.detach()

    def shadow_loss(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Return the loss that keeps the splits past the cloud's ready to be moved to (None: there are none).

        Per such split, the backbone's map there (taken in this step's forward pass, not trained through) goes
        through the split's compression, the codec's quantization and the split's decoder, which learn to give it
        back (the mean squared error relative to the map's power), and the split's exit learns from the
        compressed map as the edge's would (cross-entropy on ``labels``).
        """
        taps, self._taps = self._taps, {}
        loss = None
        for split, target in taps.items():
            code = self.ready[split]["compress"](target)
            back = self.adapters[split](fake_quantize(code, split.bits))
            part = (F.mse_loss(back, target) / target.pow(2).mean().clamp_min(1e-12)
                    + F.cross_entropy(self.ready[split]["exits"][-1](code), labels))
            loss = part if loss is None else loss + part
        return loss

    def _build(self, spec: SplitSpec) -> nn.Module:
        units = [self.units[i] for i in self.owned(spec.split_point)]
        adapter = self._adapter(spec)
        for hook in self._hooks:
            hook.remove()
        self._hooks, self._taps = [], {}
        for split in self.shadows(spec.split_point):  # the map after the unit before the split
            if split not in self.ready:
                self.ready[split] = self._edge_adapter(split)
            self._hooks.append(self.units[self.ends[split.split_point - 1] - 1].register_forward_hook(
                lambda module, args, out, split=split: self._tap(split, module, out)))
        if self.role == "cloud":
            return CloudModel(nn.Sequential(adapter, *units), spec.feature_shape)
        with torch.random.fork_rng():  # its own compression and exit are replaced by the split's
            model = EdgeModel(nn.Sequential(*units), spec.backbone_channels, spec.feature_shape, spec.num_classes)
        model.compress, model.exits = adapter["compress"], adapter["exits"]
        return model

    def parameters(self) -> list[nn.Parameter]:
        """Return what this side trains now and may train later: its units and every adapter made so far."""
        units = [p for i in self.owned(self.spec.split_point) for p in self.units[i].parameters()]
        return units + [p for a in [*self.adapters.values(), *self.ready.values()] for p in a.parameters()]

    def leaving(self, to: Split) -> list[int]:
        return sorted(set(self.owned(self.spec.split_point)) - set(self.owned(to.split_point)))

    def export(self, to: Split, optimizer: torch.optim.Optimizer) -> bytes:
        """Return the units this side hands over in a move to ``to``: weights, buffers, optimizer state.

        Keyed by unit index; the cloud's compression and exit kept ready for ``to``, if any, under ``"adapter"``.
        """
        blob = {}
        ready = [("adapter", self.ready[to])] if to in self.shadows(self.spec.split_point) else []
        self.handed_over += len(ready)
        for key, module in [*((i, self.units[i]) for i in self.leaving(to)), *ready]:
            blob[key] = {"weights": module.state_dict(),
                         "optim": {name: optimizer.state[p] for name, p in module.named_parameters()
                                   if p in optimizer.state}}
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        return buffer.getvalue()

    def apply(self, to: Split, incoming: bytes, optimizer: torch.optim.Optimizer) -> nn.Module:
        """Move to ``to``: drop the units that leave, load those that arrive from ``incoming``; return the model.

        The optimizer follows: the state of the units that leave is dropped, that of the units that arrive is
        theirs, and a new split's adapters join with none.  The edge takes the cloud's compression and exit for
        ``to``, with their state, where the cloud sends them.  ``ValueError`` when ``incoming`` is not the other side's
        export for this move (then nothing has changed).
        """
        spec = replace(self.spec, split_point=to.split_point, bits=to.bits)  # checks the position and bits
        arriving = sorted(set(self.owned(to.split_point)) - set(self.owned(self.spec.split_point)))
        blob = _load(incoming)
        units = sorted(k for k in blob if k != "adapter")
        if units != arriving or ("adapter" in blob and not (self.role == "edge" and arriving)):
            raise ValueError(f"a move of the {self.role} from split {self.spec.split_point} to {to.split_point} "
                             f"needs units {arriving}, got {sorted(blob, key=str)}")
        # Loaded aside first: a bad blob changes nothing.
        fresh = {i: copy.deepcopy(self.units[i]) for i in arriving}
        if "adapter" in blob:
            fresh["adapter"] = self._edge_adapter(to)
        states = {}
        for key, module in fresh.items():
            try:
                module.load_state_dict(blob[key]["weights"])
                named = dict(module.named_parameters())
                states.update({named[name]: state for name, state in blob[key]["optim"].items()})
            except (KeyError, RuntimeError, TypeError) as exc:
                raise ValueError(f"part {key} of the move does not fit this model: {exc}") from exc
        leaving = [self.units[i] for i in self.leaving(to)]
        if "adapter" in blob:
            leaving.append(self._adapter(spec))
        for module in leaving:
            for p in module.parameters():
                optimizer.state.pop(p, None)
        for key, module in fresh.items():
            if key == "adapter":
                self.adapters[to] = module
            else:
                self.units[key] = module
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
    if not isinstance(blob, dict) or not all((isinstance(k, int) or k == "adapter") and isinstance(v, dict)
                                             for k, v in blob.items()):
        raise ValueError("a move's state must map unit indices (and 'adapter') to their weights and optimizer "
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
