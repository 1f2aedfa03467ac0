"""HierTrain's hybrid-parallel iteration (Liu et al., §III-IV): what each of the three workers computes and sends.

A model cut into N layers (the cutting of :func:`.hierschedule.profile_layers`, plus LeNet-5) is trained under a
:class:`.hierschedule.Policy`.  The device holds the data and hands each worker its share of every batch: the
first ``b_o`` samples to worker_o, the next ``b_s`` to worker_s, the last ``b_l`` to worker_l, and all B labels to
worker_o.

- Task S (worker_s) runs layers 1..m_s on its ``b_s`` samples and sends the activation at boundary m_s to
  worker_o, which appends it to its own rows and carries them on through layers m_s+1..m_l (Eq. 7's b_o + b_s).
- Task L (worker_l) runs layers 1..m_l on its ``b_l`` samples and sends the activation at m_l to worker_o, which
  appends it and runs layers m_l+1..N on the whole batch (Eqs. 9-10), in the device's sample order.
- Task O (worker_o) computes the mean loss over all B samples and runs backward; the gradients of the received
  activations go back to worker_s and worker_l, which run their own backward.
- An idle device (its task has no samples) waits for worker_o's end of the step (an empty PARAMETERS block at
  layer 0) before it hands out the next batch, so that iterations do not overlap, as Eq. 12 times them.
- worker_s and worker_l send their parameter gradients of layers 1..m_s and 1..m_l; worker_o adds them to its own
  (each is already scaled by 1/B, so the sum is the whole batch's gradient of the mean loss: the sample-count
  weighting), takes one SGD step on the whole model and sends the new parameters of those layers back (Eq. 11's
  gradient-up, weights-down exchange).

One iteration therefore equals one plain SGD step of the whole model on the whole batch, up to floating-point
order, when every layer is a function of its own sample alone.  BatchNorm in training mode is not: in the shared
layers (1..m_l) each worker normalises its own rows with its own batch statistics (data-parallel training without
synchronised BN), the running statistics are worker_o's (its rows only) and travel to the other copies with the
parameters.  :func:`deterministic` puts BN (running statistics, not updated) and Dropout into eval mode, where the
equality is exact; LeNet-5 has neither.

Each worker's iteration is a generator (:meth:`HierWorker.iteration`) that yields a :class:`Need` whenever it
waits for a message and calls ``send`` for each :class:`Packet` it produces.  :func:`hybrid_step` drives the
three in one process (the reference for the tests); the ROS 2 node drives one of them from its subscription.
No ROS here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import codec
from .hierschedule import ROLES, Policy

# The kinds of hiertrain_interfaces/msg/HierTensor.
INPUT, LABELS, ACTIVATION, GRADIENT, PARAM_GRADIENT, PARAMETERS = range(6)
KIND_NAMES = ("INPUT", "LABELS", "ACTIVATION", "GRADIENT", "PARAM_GRADIENT", "PARAMETERS")
ARCHS = ("lenet5", "vgg16", "resnet18")
TASKS = ("o", "s", "l")

# CIFAR-10's per-channel statistics are not needed for equality: one affine map for every channel keeps the
# input an exact function of its 8-bit codes (what the device sends, as ``sample_bits`` assumes).
INPUT_SCALE = 1.0 / (255.0 * 0.25)
INPUT_ZERO_POINT = -0.5 / 0.25


# -- models as N layers -----------------------------------------------------------------------------------------

def lenet5_layers(num_classes: int = 10) -> list[nn.Module]:
    """LeNet-5 for 3x32x32 inputs as its 5 layers (two convolution stages, three fully connected)."""
    return [
        nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(1), nn.Linear(16 * 5 * 5, 120), nn.ReLU()),
        nn.Sequential(nn.Linear(120, 84), nn.ReLU()),
        nn.Sequential(nn.Linear(84, num_classes)),
    ]


def model_layers(arch: str, *, width: float = 1.0, num_classes: int = 10, seed: int | None = None) -> list[nn.Module]:
    """Return the model as its N HierTrain layers: LeNet-5's 5, or the stretches between this package's positions.

    ``seed`` makes the initial weights reproducible, so that every worker starts from the same model.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if seed is not None:
        torch.manual_seed(seed)
    if arch == "lenet5":
        return lenet5_layers(num_classes)
    from .models import _units, build_model

    model = build_model(arch, num_classes=num_classes, width=width)
    units, ends = _units(arch, model)
    cuts = sorted({0, *ends, len(units)})
    return [nn.Sequential(*units[a:b]) for a, b in zip(cuts, cuts[1:])]


def deterministic(module: nn.Module) -> nn.Module:
    """Put BatchNorm and Dropout into eval mode (running statistics, no masks): per-sample layers only."""
    for m in module.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
            m.eval()
    return module


# -- the wire ---------------------------------------------------------------------------------------------------

@dataclass
class Packet:
    """One tensor between two workers: the fields of hiertrain_interfaces/msg/HierTensor."""

    sender: str
    receiver: str
    step: int
    kind: int
    layer: int
    bits: int
    scale: float
    zero_point: float
    shape: tuple[int, ...]
    data: bytes

    def describe(self) -> str:
        return f"{KIND_NAMES[self.kind]} (layer {self.layer}, step {self.step}) from {self.sender} to {self.receiver}"


def encode(tensor: torch.Tensor, bits: int = 0) -> tuple[int, float, float, tuple[int, ...], bytes]:
    """(bits, scale, zero_point, shape, data) of a tensor: float32 little-endian, or the package's 8-bit codec."""
    t = tensor.detach().to(torch.float32).contiguous()
    if bits == 0:
        return 0, 0.0, 0.0, tuple(t.shape), t.numpy().astype("<f4", copy=False).tobytes()
    if bits != 8:
        raise ValueError(f"bits must be 0 (float32) or 8, got {bits}")
    codes, scale, zero_point = codec.quantize(t, 8)
    return 8, scale, zero_point, tuple(t.shape), codec.pack(codes, 8)


def decode(packet: Packet) -> torch.Tensor:
    """Return the tensor of a packet; a size that does not match its shape is a ValueError."""
    count = int(np.prod(packet.shape)) if packet.shape else 1
    if packet.bits == 0:
        if len(packet.data) != 4 * count:
            raise ValueError(f"{packet.describe()}: {len(packet.data)} bytes for shape {packet.shape}")
        return torch.from_numpy(np.frombuffer(packet.data, dtype="<f4").astype(np.float32)).reshape(packet.shape)
    if packet.bits != 8:
        raise ValueError(f"{packet.describe()}: bits must be 0 or 8, got {packet.bits}")
    if len(packet.data) != count:
        raise ValueError(f"{packet.describe()}: {len(packet.data)} bytes for shape {packet.shape}")
    codes = codec.unpack(packet.data, 8, count).reshape(packet.shape)
    return codec.dequantize(codes, packet.scale, packet.zero_point)


def input_samples(codes: torch.Tensor) -> torch.Tensor:
    """Return the float input of uint8 image codes, as every worker computes it from an INPUT packet."""
    return codec.dequantize(codes.numpy(), INPUT_SCALE, INPUT_ZERO_POINT)


def synthetic_batch(seed: int, step: int, batch: int, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a reproducible batch: uint8 3x32x32 image codes and int64 labels."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    codes = torch.randint(0, 256, (batch, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    return codes, labels


def dataset_batches(spec: str, batch: int, seed: int = 1) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """Return ``step -> (codes, labels)``: a real dataset's training split (``core.data.load_dataset``), shuffled.

    The codes are the frames' uint8 pixels as N x 3 x 32 x 32, the labels int64.  Each epoch is a fresh permutation
    from ``seed``; a batch never spans two epochs (the last partial one is dropped), so every step has B samples.
    """
    from .data import load_dataset

    frames = load_dataset(spec, "train")
    per_epoch = len(frames) // batch
    if per_epoch < 1:
        raise ValueError(f"{spec} has {len(frames)} training samples, fewer than the batch of {batch}")
    images = torch.from_numpy(np.ascontiguousarray(frames.images)).permute(0, 3, 1, 2)
    labels = torch.from_numpy(frames.labels)
    orders: dict[int, np.ndarray] = {}

    def get(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, k = divmod(step, per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = np.random.default_rng(seed * 1_000_003 + epoch).permutation(len(frames))
        idx = torch.from_numpy(orders[epoch][k * batch:(k + 1) * batch])
        return images[idx].contiguous(), labels[idx]

    return get


def dataset_accuracy(layers: Sequence[nn.Module], spec: str, *, chunk: int = 1000) -> float:
    """Return the top-1 accuracy of the model (its N layers, in eval mode) on the test split of ``spec``.

    The input is what the workers compute from the uint8 frames (:func:`input_samples`).
    """
    from .data import load_dataset

    frames = load_dataset(spec, "test")
    model = nn.Sequential(*layers).eval()
    images = torch.from_numpy(np.ascontiguousarray(frames.images)).permute(0, 3, 1, 2)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(frames), chunk):
            out = model(input_samples(images[start:start + chunk].contiguous()))
            correct += int((out.argmax(1) == torch.from_numpy(frames.labels[start:start + chunk])).sum())
    return correct / len(frames)


def _state(layer: nn.Module) -> list[torch.Tensor]:
    """Return a layer's parameters, then its floating buffers (BN running statistics): what PARAMETERS carries."""
    return list(layer.parameters()) + [b for b in layer.buffers() if b.is_floating_point()]


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


def _unflat(flat: torch.Tensor, like: Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    sizes = [t.numel() for t in like]
    if flat.numel() != sum(sizes):
        raise ValueError(f"{what}: {flat.numel()} values, the layer has {sum(sizes)}")
    return [piece.reshape(t.shape) for piece, t in zip(torch.split(flat.reshape(-1), sizes), like)]


# -- one worker -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Need:
    """What a worker's iteration waits for."""

    sender: str
    kind: int
    layer: int

    def describe(self, step: int) -> str:
        return f"{KIND_NAMES[self.kind]} (layer {self.layer}, step {step}) from {self.sender}"


def check_policy(policy: Policy, n: int) -> None:
    """Raise a ValueError naming what is wrong with ``policy`` for a model of ``n`` layers."""
    if sorted(policy.mapping) != sorted(ROLES):
        raise ValueError(f"mapping must be a permutation of {ROLES}, got {policy.mapping}")
    if not 0 <= policy.m_s <= policy.m_l <= n:
        raise ValueError(f"need 0 <= m_s <= m_l <= {n}, got m_s={policy.m_s}, m_l={policy.m_l}")
    if min(policy.b_o, policy.b_s, policy.b_l) < 0 or policy.b_o + policy.b_s + policy.b_l < 1:
        raise ValueError(f"batch split ({policy.b_o}, {policy.b_s}, {policy.b_l}) must be >= 0 with a sum >= 1")
    if policy.b_s and not policy.m_s:
        raise ValueError(f"b_s={policy.b_s} needs m_s >= 1")
    if policy.b_l and not policy.m_l:
        raise ValueError(f"b_l={policy.b_l} needs m_l >= 1")


class HierWorker:
    """One of the three workers: its task's layers, and for worker_o the optimizer of the whole model.

    ``layers`` is the whole model's N layers (built from the same seed on every worker); a worker keeps the first
    m_s (task S), m_l (task L) or N (task O) of them.
    """

    def __init__(self, role: str, policy: Policy, layers: Sequence[nn.Module], *, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, activation_bits: int = 0):
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        check_policy(policy, len(layers))
        if activation_bits not in (0, 8):
            raise ValueError(f"activation_bits must be 0 (float32) or 8, got {activation_bits}")
        self.role, self.policy, self.n = role, policy, len(layers)
        self.task = TASKS[policy.mapping.index(role)]
        self.o, self.s, self.l_ = policy.mapping
        self.batch = policy.b_o + policy.b_s + policy.b_l
        self.active = {"o": True, "s": policy.b_s > 0, "l": policy.b_l > 0}
        # An idle device would stream the next batch while worker_o still trains on this one; Eq. 12 (and the
        # paper) times one iteration after the other, so worker_o tells it the step is over (an empty PARAMETERS).
        device_task = TASKS[policy.mapping.index("device")]
        self.device_waits = device_task != "o" and not self.active[device_task]
        self.depth = {"o": self.n, "s": policy.m_s, "l": policy.m_l}[self.task]
        self.layers = nn.ModuleList(layers[:self.depth])
        self.activation_bits = activation_bits
        self.optimizer = None
        if self.task == "o":
            self.optimizer = torch.optim.SGD(self.layers.parameters(), lr=lr, momentum=momentum,
                                             weight_decay=weight_decay)

    def receivers(self) -> set[str]:
        """Return the roles this worker sends to under the policy (an idle worker talks to nobody)."""
        p, out = self.policy, set()
        if self.role == "device":
            out |= {role for role, b in ((self.o, p.b_o), (self.s, p.b_s), (self.l_, p.b_l)) if b}
            out.add(self.o)  # the labels
        if self.task == "o":
            out |= {role for task, role in (("s", self.s), ("l", self.l_)) if self.active[task]}
            if self.device_waits:
                out.add("device")
        elif self.active[self.task]:
            out.add(self.o)
        out.discard(self.role)
        return out

    # the device's part: every worker's share of the batch
    def _shares(self, codes: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if codes.dtype != torch.uint8 or codes.shape[0] != self.batch or labels.shape != (self.batch,):
            raise ValueError(f"the device's batch must be {self.batch} uint8 samples and labels, got "
                             f"{tuple(codes.shape)} {codes.dtype} and {tuple(labels.shape)}")
        p = self.policy
        return {self.o: codes[:p.b_o], self.s: codes[p.b_o:p.b_o + p.b_s], self.l_: codes[p.b_o + p.b_s:]}

    def iteration(self, step: int, send: Callable[[Packet], None],
                  batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> Iterator[Need]:
        """One training iteration as a generator: yields a :class:`Need` and is sent the :class:`Packet`.

        ``batch`` (uint8 image codes and labels of all B samples) is given on the device only.  The generator's
        return value (``StopIteration.value``) is the batch's mean loss on worker_o, None elsewhere.
        """
        def out(receiver, kind, layer, tensor, bits=0, scale=None, zero_point=None):
            if scale is None:
                fields = encode(tensor, bits)
            else:  # INPUT: the uint8 codes as they are, with the input's own affine map
                fields = (8, scale, zero_point, tuple(tensor.shape), tensor.contiguous().numpy().tobytes())
            send(Packet(self.role, receiver, step, kind, layer, *fields))

        def get(sender, kind, layer):
            packet = yield Need(sender, kind, layer)
            return decode(packet)

        own = labels = None
        if self.role == "device":
            if batch is None:
                raise ValueError("the device needs the batch")
            shares = self._shares(*batch)
            for task, role in zip(TASKS, self.policy.mapping):
                if role != "device" and self.active[task] and len(shares[role]):
                    out(role, INPUT, 0, shares[role], scale=INPUT_SCALE, zero_point=INPUT_ZERO_POINT)
            if self.o != "device":
                out(self.o, LABELS, 0, batch[1].to(torch.float32))
            own, labels = shares["device"], batch[1]
            own = input_samples(own) if len(own) else None
            if self.device_waits:
                yield from get(self.o, PARAMETERS, 0)
                return None
        elif self.active[self.task] and (self.task != "o" or self.policy.b_o):
            own = yield from get("device", INPUT, 0)
        if not self.active[self.task]:
            return None
        if self.task == "o":
            if labels is None:
                labels = (yield from get("device", LABELS, 0)).round().to(torch.int64)
            return (yield from self._task_o(own, labels, out, get))
        yield from self._task_sl(own, out, get)
        return None

    def _task_sl(self, x, out, get):
        for p in self.layers.parameters():
            p.grad = None
        h = x
        for layer in self.layers:
            h = layer(h)
        out(self.o, ACTIVATION, self.depth, h, self.activation_bits)
        grad = yield from get(self.o, GRADIENT, self.depth)
        h.backward(grad.reshape(h.shape))
        for i, layer in enumerate(self.layers, 1):
            params = list(layer.parameters())
            if params:
                out(self.o, PARAM_GRADIENT, i, _flat([p.grad if p.grad is not None else torch.zeros_like(p)
                                                      for p in params]))
        for i, layer in enumerate(self.layers, 1):
            state = _state(layer)
            if state:
                flat = yield from get(self.o, PARAMETERS, i)
                with torch.no_grad():
                    for t, new in zip(state, _unflat(flat, state, f"PARAMETERS of layer {i}")):
                        t.copy_(new)

    def _task_o(self, x, labels, out, get):
        self.optimizer.zero_grad(set_to_none=True)
        joins = {}  # boundary -> the tasks whose activations join there, in the device's sample order
        for task, m in (("s", self.policy.m_s), ("l", self.policy.m_l)):
            if self.active[task]:
                joins.setdefault(m, []).append(task)
        received = []  # (task, boundary, leaf tensor)
        h = x
        for k in range(self.n + 1):
            for task in joins.get(k, ()):
                role = self.s if task == "s" else self.l_
                a = (yield from get(role, ACTIVATION, k)).requires_grad_(True)
                # Its gradient goes back the moment autograd has it, before worker_o's own backward through the
                # layers below: the sender's backward overlaps worker_o's, as Eqs. 6 and 8 have it.
                a.register_hook(lambda grad, role=role, k=k: out(role, GRADIENT, k, grad))
                received.append((role, k, a))
                h = a if h is None else torch.cat([h, a])
            if k < self.n and h is not None:
                h = self.layers[k](h)
        if h.shape[0] != self.batch:
            raise RuntimeError(f"worker_o has {h.shape[0]} rows at the output, expected the batch of {self.batch}")
        loss = nn.functional.cross_entropy(h, labels)
        loss.backward()  # sends each GRADIENT on the way
        depth = {self.s: self.policy.m_s, self.l_: self.policy.m_l}
        for role, _, _ in received:  # the shared layers' gradients, summed into worker_o's own
            for i, layer in enumerate(self.layers[:depth[role]], 1):
                params = list(layer.parameters())
                if not params:
                    continue
                flat = yield from get(role, PARAM_GRADIENT, i)
                for p, g in zip(params, _unflat(flat, params, f"PARAM_GRADIENT of layer {i} from {role}")):
                    p.grad = g.clone() if p.grad is None else p.grad.add_(g)
        self.optimizer.step()
        for role, _, _ in received:
            for i, layer in enumerate(self.layers[:depth[role]], 1):
                state = _state(layer)
                if state:
                    out(role, PARAMETERS, i, _flat(state))
        if self.device_waits:
            out("device", PARAMETERS, 0, torch.zeros(0))
        return float(loss.detach())

    def state_dict(self) -> dict:
        return self.layers.state_dict()


# -- a worker process's settings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerConfig:
    """The ROS parameters of ``hier_worker_node`` (one per field); the same policy on all three workers."""

    LIVE = ()

    role: str = "device"
    mapping: str = "device,edge,cloud"  # the roles of worker_o, worker_s, worker_l
    m_s: int = 1
    m_l: int = 2
    b_o: int = 4
    b_s: int = 4
    b_l: int = 4
    arch: str = "lenet5"
    width: float = 0.125
    num_classes: int = 10
    seed: int = 0             # the initial weights, the same on every worker
    data: str = "synthetic"   # the device's batches: synthetic (random codes), fashion-mnist or cifar10-dir:PATH
    data_seed: int = 1        # the device's batches (synthetic ones, or a dataset's shuffling)
    steps: int = 3
    lr: float = 0.05
    momentum: float = 0.0
    activation_bits: int = 0  # 8: forward activations through the package's 8-bit codec (the JALAD baseline)
    deterministic: bool = False  # BN on running statistics and no Dropout: the iteration equals whole-batch SGD
    peer_timeout_s: float = 10.0     # the longest wait for one message after the first step
    startup_timeout_s: float = 60.0  # the longest wait for the other two workers to appear, and in the first step
    dump_path: str = ""       # worker_o writes the final weights here (torch.save of the layers' state_dict)
    topic_prefix: str = "hiertrain/hier"
    auth_key_file: str = ""  # sign and check every HierTensor (core.auth), as the other nodes do
    policy_file: str = ""    # hiertrain schedule --json FILE: its policy replaces mapping, m_s, m_l, b_o, b_s, b_l
    start_file: str = ""     # once the peers are found, wait for this file before the first step (a bench makes it
    #                          after moving the process under its CPU quota); within startup_timeout_s
    trace_dir: str = ""      # at the end, write <trace_dir>/<role>.jsonl: each send, wait and step end with its
    #                          times and the process's CPU time (where a step's time goes, message by message)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if sorted(self.roles) != sorted(ROLES):
            raise ValueError(f"mapping must name each of {ROLES} once (worker_o,worker_s,worker_l), got "
                             f"{self.mapping!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.activation_bits not in (0, 8):
            raise ValueError(f"activation_bits must be 0 or 8, got {self.activation_bits}")
        if self.data not in ("synthetic", "fashion-mnist") and not self.data.startswith("cifar10-dir:"):
            raise ValueError(f"data must be synthetic, fashion-mnist or cifar10-dir:PATH, got {self.data!r}")
        for name in ("peer_timeout_s", "startup_timeout_s", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")

    def batches(self) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        """Return the device's ``step -> (codes, labels)``."""
        if self.data == "synthetic":
            return lambda step: synthetic_batch(self.data_seed, step, self.batch, self.num_classes)
        return dataset_batches(self.data, self.batch, self.data_seed)

    def with_policy_file(self) -> WorkerConfig:
        """Return this config with the policy of ``policy_file`` (as is without one); ``ValueError`` naming the file."""
        if not self.policy_file:
            return self
        try:
            policy = json.loads(Path(self.policy_file).read_text())["policy"]
            fields = {"mapping": ",".join(policy["mapping"]),
                      **{k: int(policy[k]) for k in ("m_s", "m_l", "b_o", "b_s", "b_l")}}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"policy_file {self.policy_file!r} is not a hiertrain schedule --json file: "
                             f"{exc!r}") from None
        return replace(self, **fields)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(r.strip() for r in self.mapping.split(","))

    @property
    def policy(self) -> Policy:
        return Policy(self.roles, self.m_s, self.m_l, self.b_o, self.b_s, self.b_l, float("nan"))

    @property
    def batch(self) -> int:
        return self.b_o + self.b_s + self.b_l

    def worker(self) -> HierWorker:
        layers = model_layers(self.arch, width=self.width, num_classes=self.num_classes, seed=self.seed)
        worker = HierWorker(self.role, self.policy, layers, lr=self.lr, momentum=self.momentum,
                            activation_bits=self.activation_bits)
        if self.deterministic:
            deterministic(worker.layers)
        return worker


class PeerTimeout(RuntimeError):
    """A worker waited longer than its peer timeout for a message: the peer is gone or stalled."""


def run_steps(worker: HierWorker, steps: int, send: Callable[[Packet], None],
              receive: Callable[[Need, int, float], Packet | None], timeout_s: float,
              batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
              on_step: Callable[[int, float | None], None] | None = None,
              first_timeout_s: float | None = None) -> None:
    """Drive one worker for ``steps`` iterations: ``receive(need, step, timeout)`` returns the packet or None.

    None (nothing within ``timeout_s``; ``first_timeout_s`` in step 0, where the peers may still be warming up)
    is a :class:`PeerTimeout` naming the peer and the message.
    """
    for step in range(steps):
        wait_s = first_timeout_s if step == 0 and first_timeout_s else timeout_s
        run = worker.iteration(step, send, batches(step) if worker.role == "device" else None)
        packet, loss = None, None
        while True:
            try:
                need = run.send(packet)
            except StopIteration as done:
                loss = done.value
                break
            packet = receive(need, step, wait_s)
            if packet is None:
                raise PeerTimeout(f"the {worker.role} worker (task {worker.task.upper()}) got no "
                                  f"{need.describe(step)} within {wait_s} s: the {need.sender} worker is gone "
                                  "or stalled")
        if on_step:
            on_step(step, loss)


# -- all three in one process -----------------------------------------------------------------------------------

def make_workers(policy: Policy, layers_fn: Callable[[], Sequence[nn.Module]], **kwargs) -> dict[str, HierWorker]:
    """Return the three workers, each with its own copy of the model from ``layers_fn`` (same seed: same weights)."""
    return {role: HierWorker(role, policy, layers_fn(), **kwargs) for role in ROLES}


def hybrid_step(workers: dict[str, HierWorker], codes: torch.Tensor, labels: torch.Tensor, step: int = 0,
                transport: Callable[[Packet], Packet] | None = None) -> float:
    """One HierTrain iteration of the three workers in this process; the batch's mean loss.

    Packets go through a mailbox (through ``transport`` first, if given: a stand-in for the wire).  A worker
    waiting for a packet that nobody will send is a RuntimeError naming it.
    """
    mailbox: dict[tuple, Packet] = {}

    def send(packet: Packet) -> None:
        packet = transport(packet) if transport else packet
        mailbox[(packet.receiver, packet.sender, packet.kind, packet.layer)] = packet

    running = {role: w.iteration(step, send, (codes, labels) if role == "device" else None)
               for role, w in workers.items()}
    waiting: dict[str, Need | None] = dict.fromkeys(running)
    loss = None
    while running:
        progressed = False
        for role in list(running):
            need = waiting[role]
            key = None if need is None else (role, need.sender, need.kind, need.layer)
            if need is not None and key not in mailbox:
                continue
            try:
                waiting[role] = running[role].send(None if key is None else mailbox.pop(key))
            except StopIteration as done:
                del running[role]
                if workers[role].task == "o":
                    loss = done.value
            progressed = True
        if not progressed:
            stuck = ", ".join(f"{role} waits for {waiting[role].describe(step)}" for role in running)
            raise RuntimeError(f"HierTrain step {step} cannot go on: {stuck}")
    if mailbox:
        raise RuntimeError(f"step {step} left packets nobody read: {[p.describe() for p in mailbox.values()]}")
    return loss


def sgd_reference(layers: Sequence[nn.Module], batches, *, lr: float, momentum: float = 0.0,
                  weight_decay: float = 0.0, prepare: Callable[[nn.Module], nn.Module] | None = None) -> nn.Module:
    """Plain single-process SGD of the whole model on each whole batch (mean loss): what HierTrain must equal."""
    model = nn.ModuleList(layers)
    if prepare:
        prepare(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for codes, labels in batches:
        h = input_samples(codes)
        for layer in model:
            h = layer(h)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(h, labels).backward()
        optimizer.step()
    return model
