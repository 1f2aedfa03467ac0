"""The architectures as data, and :class:`SplitSpec`, the one model description.

torch-free on purpose: the node configs validate a model description at every start-up and
every live parameter set, and the light nodes (fallback, camera) must not pay for torch.

Positions follow Sepehri et al.: VGG-16 position p is after the p-th convolution (with its
BN and ReLU), ResNet-18 position p is after the p-th residual block.  Each position records
what the edge hands over there at width 1: the channels and the side of the square map for a
32x32 input, and how many units of the flattened network (see ``models._units``) the edge keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .codec import VALID_BITS
from .frames import INPUT_SIZE

ARCHS = ("vgg16", "resnet18")

# torchvision's VGG configuration "D": 3x3 convolution channels at width 1, "M" a 2x2 max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# ResNet-18 stages: (planes at width 1, basic blocks, stride of the stage's first block).
RESNET18_STAGES = ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))
# The CIFAR ResNet stem (conv, BN, ReLU, and an identity where ImageNet's max-pool was) is 4 units.
RESNET_STEM_UNITS = 4


@dataclass(frozen=True)
class Position:
    end: int        # units of the flattened network the edge keeps
    channels: int   # channels of the map handed over, at width 1
    size: int       # side of the square map for a 32x32 input


def _vgg_positions(cfg) -> tuple[Position, ...]:
    out, size, units = [], INPUT_SIZE, 0
    for v in cfg:
        if v == "M":
            size //= 2
            units += 1
        else:
            units += 3  # conv, BN, ReLU
            out.append(Position(units, v, size))
    return tuple(out[:-1])  # after the 13th conv nothing but the classifier is left


def _resnet_positions(stages) -> tuple[Position, ...]:
    out, size = [], INPUT_SIZE
    for planes, blocks, stride in stages:
        size //= stride
        out.extend(Position(RESNET_STEM_UNITS + len(out) + 1, planes, size) for _ in range(blocks))
    return tuple(out[:-1])  # after the 8th block only the classifier is left


POSITIONS = {"vgg16": _vgg_positions(VGG16_CFG), "resnet18": _resnet_positions(RESNET18_STAGES)}


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


def positions(arch: str) -> list[int]:
    """Return valid separation positions of ``arch`` (1-based, paper numbering)."""
    _check_arch(arch)
    return list(range(1, len(POSITIONS[arch]) + 1))


def position(arch: str, split_point: int) -> Position:
    """Return the table entry of ``split_point``, or ``ValueError`` naming the valid range."""
    valid = positions(arch)
    if split_point not in valid:
        raise ValueError(f"split_point for {arch} must be in 1..{valid[-1]}, got {split_point}")
    return POSITIONS[arch][split_point - 1]


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def compressed_channels(channels: int, height: int, width: int, *, bits: int, budget_bits: int) -> int:
    """Most channels whose b-bit map of one sample fits the bit budget (at least 1)."""
    return max(1, min(channels, budget_bits // (bits * height * width)))


def _opt(flag: str, help: str, param: str = "", choices=None) -> dict:
    """Field metadata.

    The CLI flag and help (``cli.common.add_model_options``), the ROS parameter name when it is not the field's
    (``ros_common.declare_config``).
    """
    return {"flag": flag, "help": help, "param": param, "choices": choices}


@dataclass(frozen=True)
class SplitSpec:
    """The model description: everything edge and cloud must agree on.

    Node configs, the offline trainer and the benchmarks extend it (dataclass inheritance), so
    each field, default and check exists once; a fingerprint of ``model_id`` travels with every
    feature batch.
    """

    arch: str = field(default="vgg16", metadata=_opt("--model", "architecture", "model", ARCHS))
    split_point: int = field(default=3, metadata=_opt("--position", "separation position (paper numbering)"))
    num_classes: int = field(default=10, metadata=_opt("--num-classes", "classes of the task"))
    width: float = field(default=1.0, metadata=_opt("--width", "channel multiplier (1.0 = the paper's network)"))
    bits: int = field(default=4, metadata=_opt("--bits", "quantizer bits on the link", choices=VALID_BITS))
    budget_bits: int = field(default=16384, metadata=_opt(  # 2/3 of a raw 32x32x3 8-bit image
        "--budget-bits", "per-sample bit budget that sets the compression channels"))

    def __post_init__(self):
        position(self.arch, self.split_point)
        check_width(self.width)
        if self.bits not in VALID_BITS:
            raise ValueError(f"bits must be one of {VALID_BITS}, got {self.bits}")
        if self.num_classes < 2 or self.budget_bits < 1:
            raise ValueError(f"num_classes >= 2 and budget_bits >= 1 required, got {self.num_classes}, "
                             f"{self.budget_bits}")

    @property
    def model_id(self) -> str:
        return (f"{self.arch}-w{self.width:g}-c{self.num_classes}-p{self.split_point}"
                f"-b{self.bits}-B{self.budget_bits}")

    def model_spec(self) -> SplitSpec:
        """Return the bare description of this (possibly extended) config."""
        if type(self) is SplitSpec:
            return self
        return SplitSpec(**{f.name: getattr(self, f.name) for f in fields(SplitSpec)})

    @property
    def backbone_channels(self) -> int:
        """Channels of the edge backbone's output, before compression."""
        return scaled(position(self.arch, self.split_point).channels, self.width)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """C x H x W of the compressed map the edge sends."""
        size = position(self.arch, self.split_point).size
        return (compressed_channels(self.backbone_channels, size, size, bits=self.bits,
                                    budget_bits=self.budget_bits), size, size)


def check_width(width: float) -> None:
    if not 0 < width <= 4:
        raise ValueError(f"width must be in (0, 4], got {width}")


DEFAULT_BITS = SplitSpec.bits
DEFAULT_BUDGET_BITS = SplitSpec.budget_bits
