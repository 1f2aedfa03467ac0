"""The measurement behind ``core.privacy``: reference classifier, edge, codec round trip, inversion decoder.

See ``core.privacy`` for the method and why; :func:`profile_privacy` scores a list of positions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import codec
from .archs import SplitSpec
from .data import Frames, batches, frames_to_tensor
from .frames import INPUT_SIZE
from .privacy import METHOD, PrivacyConfig

log = logging.getLogger(__name__)


# -- the divergence ------------------------------------------------------------------------------------

def kl_divergence(reference_logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(softmax(reference) || softmax(other)) in nats (log-softmax throughout: no log 0)."""
    if reference_logits.shape != other_logits.shape or reference_logits.dim() != 2:
        raise ValueError(f"need two N x classes logits of one shape, got {tuple(reference_logits.shape)} and "
                         f"{tuple(other_logits.shape)}")
    log_p = F.log_softmax(reference_logits.float(), dim=1)
    log_q = F.log_softmax(other_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).clamp_min(0.0)


# -- the networks ----------------------------------------------------------------------------------------

def reference_classifier(num_classes: int) -> nn.Module:
    """Three conv-ReLU-pool stages and a linear layer: the judge of reconstructions."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (INPUT_SIZE // 8) ** 2, num_classes))


def inversion_decoder(feature_shape: tuple[int, int, int]) -> nn.Module:
    """Features C x H x W -> a 3 x 32 x 32 image in [-1, 1] (the frames' normalization).

    One convolution, then a 2x transposed convolution per halving the edge did (channels halve with each,
    down to 16), then two convolutions at full size.
    """
    channels, size, _ = feature_shape
    ups = int(round(math.log2(INPUT_SIZE / size)))
    if size < 1 or size * 2 ** ups != INPUT_SIZE:
        raise ValueError(f"feature maps must be {INPUT_SIZE} / 2**k wide, got {feature_shape}")
    width = 16 * 2 ** min(ups, 2)
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(ups):
        narrower = max(16, width // 2)
        layers += [nn.ConvTranspose2d(width, narrower, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
        width = narrower
    layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
               nn.Conv2d(width, 3, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


def _fit(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn, config: PrivacyConfig,
         epochs: int) -> None:
    """Adam on (inputs, targets) held in memory, seeded order."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            optimizer.zero_grad()
            loss_fn(model(inputs[idx]), targets[idx]).backward()
            optimizer.step()
    model.eval()


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def train_reference(train: Frames, config: PrivacyConfig) -> nn.Module:
    """Return the reference classifier, trained on ``train``'s raw frames."""
    torch.manual_seed(config.seed)
    model = reference_classifier(train.num_classes)
    _fit(model, frames_to_tensor(train.images), torch.from_numpy(train.labels), F.cross_entropy, config,
         config.reference_epochs)
    return model


# -- what leaves the robot ------------------------------------------------------------------------------

def train_edge(spec: SplitSpec, train: Frames, config: PrivacyConfig) -> nn.Module:
    """Return the edge part of ``spec``, trained ``config.edge_epochs`` epochs from its early-exit loss."""
    from .models import build_edge
    from .training import EdgeTrainer, paper_optim  # the robot's own edge step

    edge = build_edge(spec, seed=config.seed)
    if config.edge_epochs:
        torch.manual_seed(config.seed)
        steps = config.edge_epochs * -(-len(train) // config.batch_size)
        trainer = EdgeTrainer(edge, spec, paper_optim(spec.arch, steps), coding="none")
        for epoch in range(config.edge_epochs):
            for images, labels in batches(train, config.batch_size, shuffle=True, seed=config.seed + epoch):
                trainer.train_step(images, labels)
    return edge.eval()


@torch.no_grad()
def wire_features(edge: nn.Module, spec: SplitSpec, images: torch.Tensor, batch_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (decoded features, early-exit logits) of ``images``: the codec round trip one batch at a time."""
    features, logits = [], []
    for start in range(0, len(images), batch_size):
        f, z = edge(images[start:start + batch_size])
        features.append(codec.decode(codec.encode(f, bits=spec.bits, split_point=spec.split_point)))
        logits.append(z)
    return torch.cat(features), torch.cat(logits)


# -- the score ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitPrivacy:
    """One position's privacy and what it came from."""

    position: int
    feature_shape: tuple[int, int, int]
    bits: int
    privacy: float              # mean KL(ref(x) || ref(x_hat)), nats: the score the floor compares
    privacy_sem: float          # its standard error over the held-out frames
    reconstruction_mse: float   # mean squared error of x_hat on the [-1, 1] scale
    early_exit_accuracy: float  # of the attacked edge on the held-out frames: it did learn the task
    seconds: float

    def as_dict(self) -> dict:
        d = asdict(self)
        d["feature_shape"] = list(self.feature_shape)
        return d


def split_privacy(spec: SplitSpec, reference: nn.Module, train: Frames, test: Frames,
                  config: PrivacyConfig) -> SplitPrivacy:
    """Train the edge at ``spec``, attack its decoded features with an inversion decoder, score the held-out."""
    start = time.perf_counter()
    edge = train_edge(spec, train, config)
    train_x, test_x = frames_to_tensor(train.images), frames_to_tensor(test.images)
    train_f, _ = wire_features(edge, spec, train_x, config.batch_size)
    test_f, exit_logits = wire_features(edge, spec, test_x, config.batch_size)
    torch.manual_seed(config.seed)
    decoder = inversion_decoder(spec.feature_shape)
    _fit(decoder, train_f, train_x, F.mse_loss, config, config.decoder_epochs)
    x_hat = _logits(decoder, test_f)
    kl = kl_divergence(_logits(reference, test_x), _logits(reference, x_hat))
    accuracy = float((exit_logits.argmax(1) == torch.from_numpy(test.labels)).float().mean())
    return SplitPrivacy(spec.split_point, spec.feature_shape, spec.bits, float(kl.mean()),
                        float(kl.std() / math.sqrt(len(kl))) if len(kl) > 1 else 0.0,
                        float(F.mse_loss(x_hat, test_x)), accuracy, time.perf_counter() - start)


def blind_kl(reference: nn.Module, train: Frames, test: Frames) -> float:
    """Return the score of an attacker who learnt nothing: the reconstruction is the mean training frame."""
    test_x = frames_to_tensor(test.images)
    mean = frames_to_tensor(train.images).mean(dim=0, keepdim=True).expand_as(test_x)
    return float(kl_divergence(_logits(reference, test_x), _logits(reference, mean)).mean())


def profile_privacy(spec: SplitSpec, positions: Iterable[int], train: Frames, test: Frames,
                    config: PrivacyConfig = PrivacyConfig(), *, progress=None) -> dict:
    """Privacy of each position of ``spec``'s model; ``progress(SplitPrivacy)`` after each.

    Returns ``{"method", "reference", "decoder", "config", "blind_kl", "rows"}``, rows as
    :meth:`SplitPrivacy.as_dict`.
    """
    train, test = train.subset(config.train_images), test.subset(config.held_out)
    reference = train_reference(train, config)
    ref_accuracy = float((_logits(reference, frames_to_tensor(test.images)).argmax(1)
                          == torch.from_numpy(test.labels)).float().mean())
    rows = []
    for position in positions:
        result = split_privacy(replace(spec, split_point=position), reference, train, test, config)
        log.info("position %d: privacy %.4g nats (%.1f s)", position, result.privacy, result.seconds)
        if progress is not None:
            progress(result)
        rows.append(result.as_dict())
    return {"method": METHOD,
            "reference": {"network": "3 x (conv3x3-ReLU-maxpool: 16, 32, 64 channels) + linear",
                          "trained_on": "raw frames", "epochs": config.reference_epochs,
                          "held_out_accuracy": ref_accuracy},
            "decoder": {"attack": "inverse network, He et al. 2019 (ACSAC), trained on (decoded features, frame) "
                                  "pairs of the attacked edge, MSE loss",
                        "network": "conv3x3, a 2x transposed conv4x4 per halving, conv3x3, conv3x3 to 3, tanh",
                        "epochs": config.decoder_epochs},
            "edge": {"trained": f"{config.edge_epochs} epoch(s) on its early-exit loss (core.training.EdgeTrainer)",
                     "bits": spec.bits, "budget_bits": spec.budget_bits, "width": spec.width},
            "config": asdict(config), "train_images": len(train), "held_out": len(test),
            "blind_kl": blind_kl(reference, train, test), "rows": rows}
