"""Optimizer settings, torch-free: the node configs build them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"          # "adam" (the paper's VGG-16 setting) or "sgd" (its ResNet-18 setting)
    lr: float = 2e-4            # paper: 2e-4 for Adam, 0.1 for SGD
    momentum: float = 0.9       # SGD only
    weight_decay: float = 0.0   # L2 penalty; 5e-4 is usual with SGD
    cosine_steps: int = 0       # cosine-annealing period in steps; 0 keeps lr constant
    warmup_steps: int = 0       # the first steps ramp the lr up linearly from lr / warmup_steps

    def __post_init__(self):
        if self.name not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.name!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.cosine_steps < 0:
            raise ValueError(f"warmup_steps and cosine_steps must be >= 0, got {self.warmup_steps}, "
                             f"{self.cosine_steps}")


def paper_optim(arch: str, total_steps: int = 0) -> OptimConfig:
    """Return the paper's optimizer for ``arch``.

    Adam 2e-4 for VGG-16, SGD 0.1 + cosine for ResNet-18.

    ResNet-18 also warms up over 100 steps (not in the paper): at the full 0.1 from the first
    step, the compression layer's ReLU could die within ten steps (every feature 0, nothing
    learnt after; seen with an 8192-bit budget, seed 0).
    """
    if arch == "resnet18":
        return OptimConfig(name="sgd", lr=0.1, weight_decay=5e-4, cosine_steps=total_steps, warmup_steps=100)
    return OptimConfig()
