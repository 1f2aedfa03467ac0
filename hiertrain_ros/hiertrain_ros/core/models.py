"""Splittable VGG-16-bn and ResNet-18 for 32x32 inputs, built from torchvision.

A split at separation position ``split_point`` gives an :class:`EdgeModel`
(the first layers, a compression convolution and a one-layer early exit) and a
:class:`CloudModel` (the remaining layers, whose first convolution accepts the
compressed channels).  Positions follow Sepehri et al.: VGG-16 position p is
after the p-th convolution (with its BN and ReLU), ResNet-18 position p is after
the p-th residual block.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

from .config import ARCHS
from .frames import INPUT_SIZE

DEFAULT_BITS = 4
# 2/3 of a raw 32x32x3 8-bit image: keeps every split cheaper to send than the image.
DEFAULT_BUDGET_BITS = 16384

_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_RESNET18_PLANES = (64, 128, 256, 512)


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def build_model(arch: str, *, num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """Full (unsplit) network for 32x32 inputs; the full-cloud baseline trains this."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if arch == "vgg16":
        return _build_vgg16(num_classes, width)
    if arch == "resnet18":
        return _build_resnet18(num_classes, width)
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


def _build_vgg16(num_classes: int, width: float) -> nn.Module:
    cfg = [v if v == "M" else _scaled(v, width) for v in _VGG16_CFG]
    model = tv_vgg.VGG(tv_vgg.make_layers(cfg, batch_norm=True), num_classes=num_classes)
    # After five poolings a 32x32 input is 1x1: the CIFAR-style head (512-512-classes)
    # replaces ImageNet's 7x7x512 -> 4096 -> 4096 one.
    hidden = _scaled(512, width)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(
        nn.Linear(cfg[-2], hidden), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )
    return model


def _build_resnet18(num_classes: int, width: float) -> nn.Module:
    model = tv_resnet.ResNet(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    planes = [_scaled(p, width) for p in _RESNET18_PLANES]
    # CIFAR stem: a 3x3 stride-1 convolution and no max-pool keep 32x32 resolution.
    model.inplanes = planes[0]
    model.conv1 = nn.Conv2d(3, planes[0], kernel_size=3, stride=1, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(planes[0])
    model.maxpool = nn.Identity()
    model.layer1 = model._make_layer(tv_resnet.BasicBlock, planes[0], 2)
    model.layer2 = model._make_layer(tv_resnet.BasicBlock, planes[1], 2, stride=2)
    model.layer3 = model._make_layer(tv_resnet.BasicBlock, planes[2], 2, stride=2)
    model.layer4 = model._make_layer(tv_resnet.BasicBlock, planes[3], 2, stride=2)
    model.fc = nn.Linear(planes[3], num_classes)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def _units(arch: str, model: nn.Module) -> tuple[list[nn.Module], list[int]]:
    """Model as a flat list of modules plus, per position, how many units the edge keeps."""
    if arch == "vgg16":
        units = list(model.features) + [model.avgpool, nn.Flatten(1), model.classifier]
        ends = [i + 1 for i, m in enumerate(units) if isinstance(m, nn.ReLU)]
        return units, ends[:-1]  # after the 13th conv nothing but the classifier is left
    stem = [model.conv1, model.bn1, model.relu, model.maxpool]
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    units = stem + blocks + [model.avgpool, nn.Flatten(1), model.fc]
    ends = [len(stem) + i + 1 for i in range(len(blocks))]
    return units, ends[:-1]  # after the 8th block only the classifier is left


def positions(arch: str) -> list[int]:
    """Valid separation positions of ``arch`` (1-based, paper numbering)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    _, ends = _units(arch, build_model(arch, width=1 / 64))
    return list(range(1, len(ends) + 1))


def compressed_channels(channels: int, height: int, width: int, *, bits: int, budget_bits: int) -> int:
    """Most channels whose b-bit map of one sample fits the bit budget (at least 1)."""
    return max(1, min(channels, budget_bits // (bits * height * width)))


@dataclass(frozen=True)
class SplitSpec:
    """Everything both sides must agree on; a fingerprint of the model_id travels with every feature batch."""

    arch: str
    split_point: int
    num_classes: int = 10
    width: float = 1.0
    bits: int = DEFAULT_BITS
    budget_bits: int = DEFAULT_BUDGET_BITS

    @property
    def model_id(self) -> str:
        return (f"{self.arch}-w{self.width:g}-c{self.num_classes}-p{self.split_point}"
                f"-b{self.bits}-B{self.budget_bits}")


class EdgeModel(nn.Module):
    """Edge layers + compression conv + early exit; returns (compressed features, early-exit logits)."""

    def __init__(self, backbone: nn.Sequential, in_channels: int, feature_hw: tuple[int, int],
                 compressed: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        # ReLU at the end makes the map non-negative, so the quantizer's zero point is 0.
        self.compress = nn.Sequential(
            nn.Conv2d(in_channels, compressed, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(compressed),
            nn.ReLU(inplace=True),
        )
        # A single FC layer keeps the edge's memory low (as in the paper).
        self.early_exit = nn.Sequential(nn.Flatten(1), nn.Linear(compressed * feature_hw[0] * feature_hw[1], num_classes))
        self.feature_shape = (compressed, *feature_hw)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.compress(self.backbone(x))
        return features, self.early_exit(features)


class CloudModel(nn.Module):
    """Remaining layers; ``body[0..]`` starts with a layer that accepts the compressed channels."""

    def __init__(self, body: nn.Sequential, feature_shape: tuple[int, int, int]):
        super().__init__()
        self.body = body
        self.feature_shape = feature_shape

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


def _accepting(module: nn.Module, channels: int) -> nn.Module:
    """Copy of the cloud's first layer rebuilt to take ``channels`` input channels."""
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(channels, module.out_channels, module.kernel_size, module.stride,
                         module.padding, bias=module.bias is not None)
    if isinstance(module, tv_resnet.BasicBlock):
        planes, stride = module.conv1.out_channels, module.conv1.stride[0]
        downsample = None
        if stride != 1 or channels != planes:
            downsample = nn.Sequential(tv_resnet.conv1x1(channels, planes, stride), nn.BatchNorm2d(planes))
        return tv_resnet.BasicBlock(channels, planes, stride, downsample)
    raise TypeError(f"cannot rebuild {type(module).__name__} for new input channels")


def split_model(model: nn.Module, spec: SplitSpec) -> tuple[EdgeModel, CloudModel]:
    """Cut ``model`` (from :func:`build_model` with the same spec) at ``spec.split_point``.

    The parts are deep copies, so the edge and the cloud never share a tensor.
    """
    if spec.bits not in (1, 2, 4, 8):
        raise ValueError(f"bits must be 1, 2, 4 or 8, got {spec.bits}")
    units, ends = _units(spec.arch, model)
    if not 1 <= spec.split_point <= len(ends):
        raise ValueError(f"split_point for {spec.arch} must be in 1..{len(ends)}, got {spec.split_point}")
    cut = ends[spec.split_point - 1]
    backbone = copy.deepcopy(nn.Sequential(*units[:cut]))
    rest = copy.deepcopy(units[cut:])

    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        _, channels, h, w = backbone(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)).shape
    backbone.train(was_training)
    compressed = compressed_channels(channels, h, w, bits=spec.bits, budget_bits=spec.budget_bits)

    first = next(i for i, m in enumerate(rest) if isinstance(m, (nn.Conv2d, tv_resnet.BasicBlock)))
    rest[first] = _accepting(rest[first], compressed)
    edge = EdgeModel(backbone, channels, (h, w), compressed, spec.num_classes)
    cloud = CloudModel(nn.Sequential(*rest), edge.feature_shape)
    return edge, cloud


def build_split(spec: SplitSpec, *, seed: int | None = None) -> tuple[EdgeModel, CloudModel]:
    """Fresh edge and cloud parts for ``spec`` (seeded when ``seed`` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return split_model(build_model(spec.arch, num_classes=spec.num_classes, width=spec.width), spec)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def payload_bits_per_sample(spec: SplitSpec, feature_shape: tuple[int, int, int], batch_size: int) -> float:
    """Wire bits per sample: packed codes plus the batch's one 32-bit scale, amortized."""
    c, h, w = feature_shape
    return math.ceil(c * h * w * spec.bits / 8) * 8 + 32 / batch_size
