"""Privacy of a split (L2S §III-C): how much of the image survives in what the edge sends.

L2S scores a split by the Kullback-Leibler divergence between a pre-trained classifier's output on the
input and its output on the split's intermediate data; the paper does not say how data of another shape
reaches a classifier of images.  Here it reaches it the way an attacker would get it back:

1. **Reference.**  A small CNN of its own (``core.inversion.reference_classifier``), trained briefly on the raw
   frames.  It is not the network being split, so it judges reconstructions without having seen the
   split's features in training.
2. **What leaves the robot.**  Per position, the edge part (:func:`models.build_edge`) trains from its
   early-exit loss as the robot does (``core.training.EdgeTrainer``); its compressed features then go
   through the link's codec, ``codec.encode`` / ``codec.decode`` at the split's bits with one scale per
   batch.  Those decoded features are all the cloud ever sees.
3. **Mapped back to the input space.**  An inversion decoder (``core.inversion.inversion_decoder``: a convolution,
   2x transposed convolutions up to 32x32, a 3-channel tanh output) learns features -> image on frames
   whose features and images it both has.  This is the inverse-network model-inversion attack of
   He, Zhang and Lee, "Model inversion attacks against collaborative inference" (ACSAC 2019).  Training it
   on pairs from the very edge it attacks makes it a strong attacker, so the score errs towards less
   privacy, the safe side for a floor.
4. **Score.**  privacy(p) = mean over held-out frames x of KL(ref(x) || ref(x_hat)), in nats, where x_hat is
   the decoder's reconstruction from x's decoded features.  0 means the reconstruction tells the reference
   everything the image does; larger means more private.  ``blind_kl`` is the same divergence when the
   attacker can only answer the mean training image: the score of a split that leaks nothing the attacker
   could use.

Everything is seeded (``torch.manual_seed`` before each part, per position), so a position's score does
not depend on which other positions are measured with it.  The scores come from brief training on a few
thousand frames: compare positions of one run, and set a floor from the same budget.

This module is torch-free (the verbs that apply a floor, and every parser, import it); the measurement is
``core.inversion``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .archs import SplitSpec
from .l2s import eligible

METHOD = ("KL(ref(x) || ref(x_hat)) in nats, mean over held-out frames; x_hat = inversion decoder "
          "(He et al. 2019, inverse network) applied to the split's codec-decoded features")


def _opt(help: str) -> dict:
    return {"help": help}


@dataclass(frozen=True)
class PrivacyConfig:
    """The budget of one privacy measurement; the CLI's ``--privacy-*`` options are its fields."""

    train_images: int = field(default=2000, metadata=_opt(
        "training frames for the reference, each edge and each decoder (enough to rank positions)"))
    held_out: int = field(default=500, metadata=_opt("test frames the KL is averaged over, never trained on"))
    reference_epochs: int = field(default=3, metadata=_opt("epochs of the reference classifier"))
    edge_epochs: int = field(default=1, metadata=_opt(
        "epochs of the edge on its early-exit loss before it is attacked; 0: its initial weights"))
    decoder_epochs: int = field(default=2, metadata=_opt("epochs of each inversion decoder"))
    batch_size: int = field(default=32, metadata=_opt("training batch, and the batch one codec scale covers"))
    lr: float = field(default=1e-3, metadata=_opt("Adam learning rate of the reference and the decoders"))
    seed: int = field(default=0, metadata=_opt("seed of every part"))

    def __post_init__(self):
        if min(self.train_images, self.held_out, self.reference_epochs, self.decoder_epochs, self.batch_size) < 1:
            raise ValueError("train_images, held_out, reference_epochs, decoder_epochs and batch_size must be "
                             f">= 1, got {self.train_images}, {self.held_out}, {self.reference_epochs}, "
                             f"{self.decoder_epochs}, {self.batch_size}")
        if self.edge_epochs < 0 or not self.lr > 0:
            raise ValueError(f"edge_epochs >= 0 and lr > 0 required, got {self.edge_epochs}, {self.lr}")


# -- the floor ------------------------------------------------------------------------------------------

def privacy_by_position(profile: Mapping, spec: SplitSpec | None = None) -> dict[int, float]:
    """``{position: privacy}`` from a ``hiertrain profile --privacy --json`` file's content.

    With ``spec``, the profile must be of the same model, width, bits and bit budget: the features, and so
    their privacy, depend on all four.
    """
    rows = profile.get("rows") if isinstance(profile, Mapping) else None
    if not rows or any("privacy" not in r for r in rows):
        raise ValueError("the profile has no privacy per position: write it with hiertrain profile --privacy --json")
    if spec is not None:
        for row in rows:
            given = (row.get("arch"), row.get("width"), row.get("bits"), row.get("budget_bits"))
            wanted = (spec.arch, spec.width, spec.bits, spec.budget_bits)
            if given != wanted:
                raise ValueError(f"the privacy profile is of (model, width, bits, budget_bits) {given}, "
                                 f"not {wanted}")
    return {int(r["position"]): float(r["privacy"]) for r in rows}


def allowed_positions(positions: Sequence[int], privacy: Mapping[int, float], floor: float) -> list[int]:
    """Return the ``positions`` with privacy >= ``floor``; ValueError when one is unscored or none is left."""
    missing = [p for p in positions if p not in privacy]
    if missing:
        raise ValueError(f"no privacy value for positions {missing}: profile them with hiertrain profile --privacy")
    return eligible(list(positions), privacy, floor)


def allowed_splits(splits: Sequence, privacy: Mapping[int, float], floor: float, *, choose: bool) -> list:
    """Return the splits (``core.splits.Split``) a policy may use under ``floor``.

    A policy that chooses among them (``choose``, LinUCB-E) keeps those at or above the floor and needs two; a fixed
    or scheduled one must have all of them at or above it.  ``ValueError`` otherwise, naming what is left.
    """
    points = [s.split_point for s in splits]
    try:
        kept = allowed_positions(points, privacy, floor)
    except ValueError:
        kept = []
    if (choose and len(kept) < 2) or (not choose and len(kept) < len(splits)):
        raise ValueError(f"privacy_floor {floor:g} leaves split points {kept} of {points}: a "
                         + ("learning policy needs two or more" if choose else "fixed or scheduled split needs all"))
    return [s for s in splits if s.split_point in kept]
