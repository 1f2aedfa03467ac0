"""Splittable VGG-16-bn and ResNet-18 for 32x32 inputs, built from torchvision's parts.

A split at separation position ``split_point`` gives an :class:`EdgeModel`
(the first layers, a compression convolution and one or more exits) and a
:class:`CloudModel` (the remaining layers, whose first convolution accepts the
compressed channels).  :func:`build_edge` and :func:`build_cloud` allocate only
their own part, so a node never holds the other side's layers; the positions and
shapes come from the torch-free table in :mod:`.archs`.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

from .archs import (ARCHS, DEFAULT_BITS, DEFAULT_BUDGET_BITS, POSITIONS, RESNET18_STAGES, VGG16_CFG,  # noqa: F401
                    SplitSpec, compressed_channels, position, positions, scaled)
from .frames import INPUT_SIZE  # noqa: F401 (re-exported)

# (channels, height, width, classes) -> a module mapping an N x C x H x W map to N x classes logits.
ExitHead = Callable[[int, int, int, int], nn.Module]


def linear_exit(channels: int, height: int, width: int, classes: int) -> nn.Module:
    """Return the paper's early exit: a single FC layer keeps the edge's memory low."""
    return nn.Sequential(nn.Flatten(1), nn.Linear(channels * height * width, classes))


class _CifarVGG(nn.Module):
    """torchvision's VGG without its ImageNet head: after five poolings a 32x32 input is 1x1."""

    forward = tv_vgg.VGG.forward

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier


class _CifarResNet(nn.Module):
    """torchvision's ResNet-18 with a CIFAR stem (3x3 stride-1 convolution, no max-pool)."""

    forward = tv_resnet.ResNet._forward_impl

    def __init__(self, stem: list[nn.Module], blocks: list[nn.Module], fc: nn.Linear):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = stem
        start = 0
        for i, (_, n, _) in enumerate(RESNET18_STAGES, 1):
            setattr(self, f"layer{i}", nn.Sequential(*blocks[start:start + n]))
            start += n
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = fc


# -- the networks as flat lists of units, built a slice at a time --------------------------------

def _vgg_cfg(width: float) -> list:
    return [v if v == "M" else scaled(v, width) for v in VGG16_CFG]


def _vgg_features(cfg: list) -> list[nn.Module]:
    layers = list(tv_vgg.make_layers(cfg, batch_norm=True))
    for m in layers:  # torchvision VGG's initialisation of its features
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
    return layers


def _vgg_classifier(width: float, num_classes: int) -> nn.Sequential:
    # The CIFAR-style head (512-512-classes) instead of ImageNet's 7x7x512 -> 4096 -> 4096 one.
    hidden = scaled(512, width)
    return nn.Sequential(
        nn.Linear(scaled(VGG16_CFG[-2], width), hidden), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )


def _vgg_cfg_cut(cfg: list, split_point: int) -> int:
    """Index into ``cfg`` just after the ``split_point``-th convolution."""
    return [i for i, v in enumerate(cfg) if v != "M"][split_point - 1] + 1


def _resnet_block_shapes(width: float) -> list[tuple[int, int, int]]:
    """(in channels, planes, stride) of each basic block."""
    shapes, inplanes = [], scaled(RESNET18_STAGES[0][0], width)
    for planes, blocks, stride in RESNET18_STAGES:
        planes = scaled(planes, width)
        for b in range(blocks):
            shapes.append((inplanes, planes, stride if b == 0 else 1))
            inplanes = planes
    return shapes


def _basic_block(inplanes: int, planes: int, stride: int) -> nn.Module:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(tv_resnet.conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    return tv_resnet.BasicBlock(inplanes, planes, stride, downsample)


def _resnet_stem(width: float) -> list[nn.Module]:
    planes = scaled(RESNET18_STAGES[0][0], width)
    # CIFAR stem: a 3x3 stride-1 convolution and no max-pool keep 32x32 resolution.
    return [nn.Conv2d(3, planes, kernel_size=3, stride=1, padding=1, bias=False), nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True), nn.Identity()]


def _kaiming_convs(units: list[nn.Module]) -> list[nn.Module]:
    for unit in units:  # torchvision ResNet's initialisation
        for m in unit.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return units


def _resnet_blocks(width: float, first: int, last: int) -> list[nn.Module]:
    return _kaiming_convs([_basic_block(*s) for s in _resnet_block_shapes(width)[first:last]])


def _head_units(head: nn.Module, pool: nn.Module) -> list[nn.Module]:
    return [pool, nn.Flatten(1), head]


# -- full model ------------------------------------------------------------------------------------

def build_model(arch: str, *, num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """Full (unsplit) network for 32x32 inputs; the full-cloud baseline trains this."""
    SplitSpec(arch, num_classes=num_classes, width=width)  # its checks: arch, classes, width
    if arch == "vgg16":
        return _CifarVGG(nn.Sequential(*_vgg_features(_vgg_cfg(width))), _vgg_classifier(width, num_classes))
    blocks = _resnet_blocks(width, 0, None)
    return _CifarResNet(_kaiming_convs(_resnet_stem(width)), blocks, nn.Linear(blocks[-1].conv2.out_channels,
                                                                                 num_classes))


def _units(arch: str, model: nn.Module) -> tuple[list[nn.Module], list[int]]:
    """Return a full model as a flat list of units, plus per position how many units the edge keeps."""
    ends = [p.end for p in POSITIONS[arch]]
    if arch == "vgg16":
        return list(model.features) + _head_units(model.classifier, model.avgpool), ends
    stem = [model.conv1, model.bn1, model.relu, model.maxpool]
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    return stem + blocks + _head_units(model.fc, model.avgpool), ends


# -- the two parts ---------------------------------------------------------------------------------

def compression(in_channels: int, compressed: int) -> nn.Module:
    """Return the edge's compression convolution: the backbone's channels down to the ``compressed`` ones sent."""
    # ReLU at the end makes the map non-negative, so the quantizer's zero point is 0.
    return nn.Sequential(nn.Conv2d(in_channels, compressed, kernel_size=3, padding=1, bias=False),
                         nn.BatchNorm2d(compressed), nn.ReLU(inplace=True))


class EdgeModel(nn.Module):
    """Edge layers + compression conv + exits; ``forward`` returns (compressed features, last exit's logits).

    ``exits[-1]`` reads the compressed features (the paper's early exit); any exit before it reads the
    backbone's output after unit ``exit_ends[i]`` (progressive inference answers from the first that is
    confident enough).  The edge trains from the sum of all exits' losses.
    """

    def __init__(self, backbone: nn.Sequential, in_channels: int, feature_shape: tuple[int, int, int],
                 num_classes: int, *, taps: tuple[tuple[int, tuple[int, int, int]], ...] = (),
                 exit_head: ExitHead = linear_exit):
        super().__init__()
        self.backbone = backbone
        self.compress = compression(in_channels, feature_shape[0])
        self.exit_ends = tuple(end for end, _ in taps)
        if list(self.exit_ends) != sorted(set(self.exit_ends)) or any(not 0 < e < len(backbone)
                                                                      for e in self.exit_ends):
            raise ValueError(f"exit taps must be increasing units inside the backbone (1..{len(backbone) - 1}), "
                             f"got {self.exit_ends}")
        self.exits = nn.ModuleList([exit_head(*shape, num_classes) for _, shape in taps]
                                   + [exit_head(*feature_shape, num_classes)])
        self.feature_shape = tuple(feature_shape)

    @property
    def early_exit(self) -> nn.Module:
        """The exit on the compressed features (the only one by default)."""
        return self.exits[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits = self.forward_exits(x)
        return features, logits[-1]

    def forward_exits(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Compressed features and every exit's logits, the earliest first."""
        logits = []
        for body, exit_ in self.stages():
            x = body(x)
            logits.append(exit_(x))
        return x, logits

    def stages(self) -> list[tuple[nn.Module, nn.Module]]:
        """(layers, exit) pairs in order, for progressive answering to stop a frame at its first sure exit.

        The backbone is cut after each exit's unit; the last part ends in the compression conv, and its exit reads
        the compressed features.
        """
        cuts = (0, *self.exit_ends, len(self.backbone))
        bodies = [self.backbone[a:b] for a, b in zip(cuts, cuts[1:])]
        bodies[-1] = nn.Sequential(*bodies[-1], self.compress)
        return list(zip(bodies, self.exits, strict=True))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the exits list name the one exit "early_exit".
        old = prefix + "early_exit."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[f"{prefix}exits.{len(self.exits) - 1}.{key[len(old):]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CloudModel(nn.Module):
    """Remaining layers; ``body[0..]`` starts with a layer that accepts the compressed channels.

    ``forward`` returns the final logits.  Optional early exits read the body's output after unit
    ``exit_ends[i]`` (progressive inference: the cloud answers from the first that is sure enough);
    ``forward_exits`` returns every exit's logits, the final ones last.  By default there are none.
    """

    def __init__(self, body: nn.Sequential, feature_shape: tuple[int, int, int], *,
                 taps: tuple[tuple[int, tuple[int, int, int]], ...] = (), num_classes: int = 10,
                 exit_head: ExitHead = linear_exit):
        super().__init__()
        self.body = body
        self.feature_shape = tuple(feature_shape)
        self.exit_ends = tuple(end for end, _ in taps)
        if list(self.exit_ends) != sorted(set(self.exit_ends)) or any(not 0 < e < len(body) for e in self.exit_ends):
            raise ValueError(f"cloud exit taps must be increasing units inside the body (1..{len(body) - 1}), "
                             f"got {self.exit_ends}")
        self.exits = nn.ModuleList([exit_head(*shape, num_classes) for _, shape in taps])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every exit's logits, the earliest first and the final ones last."""
        logits = []
        for body, exit_ in self.stages():
            x = body(x)
            logits.append(exit_(x))
        return logits

    def stages(self) -> list[tuple[nn.Module, nn.Module]]:
        """(layers, exit) pairs in order, as :meth:`EdgeModel.stages`; the last exit is the network's output."""
        cuts = (0, *self.exit_ends, len(self.body))
        bodies = [self.body[a:b] for a, b in zip(cuts, cuts[1:])]
        return list(zip(bodies, [*self.exits, nn.Identity()], strict=True))


def _accepting(module: nn.Module, channels: int) -> nn.Module:
    """Copy of the cloud's first layer rebuilt to take ``channels`` input channels."""
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(channels, module.out_channels, module.kernel_size, module.stride,
                         module.padding, bias=module.bias is not None)
    if isinstance(module, tv_resnet.BasicBlock):
        return _basic_block(channels, module.conv1.out_channels, module.conv1.stride[0])
    raise TypeError(f"cannot rebuild {type(module).__name__} for new input channels")


def _edge(spec: SplitSpec, backbone: list[nn.Module], exits: tuple[int, ...], exit_head: ExitHead) -> EdgeModel:
    taps = []
    for p in exits:
        if not 1 <= p < spec.split_point:
            raise ValueError(f"exit positions must be in 1..{spec.split_point - 1} (before the split), got {p}")
        at = position(spec.arch, p)
        taps.append((at.end, (scaled(at.channels, spec.width), at.size, at.size)))
    return EdgeModel(nn.Sequential(*backbone), spec.backbone_channels, spec.feature_shape, spec.num_classes,
                     taps=tuple(taps), exit_head=exit_head)


def _first_accepting(units) -> int:
    """Index of the cloud's first layer, the one rebuilt to take the compressed channels."""
    return next(i for i, m in enumerate(units) if isinstance(m, (nn.Conv2d, tv_resnet.BasicBlock)))


def _cloud(spec: SplitSpec, rest: list[nn.Module]) -> CloudModel:
    first = _first_accepting(rest)
    rest[first] = _accepting(rest[first], spec.feature_shape[0])
    return CloudModel(nn.Sequential(*rest), spec.feature_shape)


def _seed(seed: int | None, part: int) -> None:
    # Each part draws from a stream of its own, so a node builds its part alone and gets the same
    # weights as the offline trainer that builds both.
    if seed is not None:
        torch.manual_seed(2 * seed + part)


def build_edge(spec: SplitSpec, *, seed: int | None = None, exits: tuple[int, ...] = (),
               exit_head: ExitHead = linear_exit) -> EdgeModel:
    """Return the edge part alone; ``exits`` adds exits after those positions (before the split)."""
    _seed(seed, 0)
    if spec.arch == "vgg16":
        cfg = _vgg_cfg(spec.width)
        backbone = _vgg_features(cfg[:_vgg_cfg_cut(cfg, spec.split_point)])
    else:
        backbone = _kaiming_convs(_resnet_stem(spec.width)) + _resnet_blocks(spec.width, 0, spec.split_point)
    return _edge(spec, backbone, exits, exit_head)


def build_cloud(spec: SplitSpec, *, seed: int | None = None, exits: tuple[int, ...] = (),
                exit_head: ExitHead = linear_exit) -> CloudModel:
    """Return the cloud part alone; ``exits`` adds early exits after those positions (after the split)."""
    _seed(seed, 1)
    if spec.arch == "vgg16":
        cfg = _vgg_cfg(spec.width)
        rest = _vgg_features(cfg[_vgg_cfg_cut(cfg, spec.split_point):])
        head = _vgg_classifier(spec.width, spec.num_classes)
        pool = nn.AdaptiveAvgPool2d(1)
    else:
        rest = _resnet_blocks(spec.width, spec.split_point, None)
        head = nn.Linear(rest[-1].conv2.out_channels, spec.num_classes)
        pool = nn.AdaptiveAvgPool2d((1, 1))
    cloud = _cloud(spec, rest + _head_units(head, pool))
    if not exits:
        return cloud
    start, taps = position(spec.arch, spec.split_point).end, []
    for p in exits:
        if not spec.split_point < p <= len(POSITIONS[spec.arch]):
            raise ValueError(f"cloud exit positions must be in {spec.split_point + 1}..{len(POSITIONS[spec.arch])} "
                             f"(after the split), got {p}")
        at = position(spec.arch, p)
        taps.append((at.end - start, (scaled(at.channels, spec.width), at.size, at.size)))
    return CloudModel(cloud.body, spec.feature_shape, taps=tuple(taps), num_classes=spec.num_classes,
                      exit_head=exit_head)


def build_split(spec: SplitSpec, *, seed: int | None = None) -> tuple[EdgeModel, CloudModel]:
    """Fresh edge and cloud parts for ``spec``.

    The same weights as :func:`build_edge` and :func:`build_cloud` give for ``seed``.
    """
    return build_edge(spec, seed=seed), build_cloud(spec, seed=seed)


def split_model(model: nn.Module, spec: SplitSpec) -> tuple[EdgeModel, CloudModel]:
    """Cut a full ``model`` (from :func:`build_model` with the same spec) at ``spec.split_point``.

    The parts are deep copies, so the edge and the cloud never share a tensor.
    """
    units, ends = _units(spec.arch, model)
    end = ends[spec.split_point - 1]
    return _edge(spec, copy.deepcopy(units[:end]), (), linear_exit), _cloud(spec, copy.deepcopy(units[end:]))


def split_state_dict(whole: dict, spec: SplitSpec) -> dict[str, tuple[dict, tuple[str, ...]]]:
    """Cut a whole model's weights at ``spec.split_point``.

    ``whole`` is the ``state_dict`` of :func:`build_model`, in torchvision's layout: VGG
    ``features.N``/``classifier.N``, ResNet ``conv1``/``layerX``/``fc``.

    Per role (``"edge"``, ``"cloud"``): the part's weights and the prefixes of its parameters a whole
    model does not have, which start fresh: the edge's compression convolution and exits, and the
    cloud's first layer (it takes the compressed channels).  ``ValueError`` names the expected
    model when ``whole`` is for another architecture, width or number of classes.
    """
    model = build_model(spec.arch, num_classes=spec.num_classes, width=spec.width)
    try:
        model.load_state_dict(whole)
    except RuntimeError as exc:
        raise ValueError(f"the whole-model weights are not those of {spec.arch} at width {spec.width:g} with "
                         f"{spec.num_classes} classes: {exc}") from exc
    units, ends = _units(spec.arch, model)
    end = ends[spec.split_point - 1]
    rest = units[end:]
    first = _first_accepting(rest)
    edge = nn.Sequential(*units[:end]).state_dict(prefix="backbone.")
    cloud = {key: value for i, unit in enumerate(rest) if i != first
             for key, value in unit.state_dict(prefix=f"body.{i}.").items()}
    return {"edge": (edge, ("compress.", "exits.")), "cloud": (cloud, (f"body.{first}.",))}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def payload_bits_per_sample(spec: SplitSpec, feature_shape: tuple[int, int, int], batch_size: int) -> float:
    """Wire bits per sample: packed codes plus the batch's one 32-bit scale, amortized."""
    c, h, w = feature_shape
    return math.ceil(c * h * w * spec.bits / 8) * 8 + 32 / batch_size
