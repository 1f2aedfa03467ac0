"""Classic split learning (the scheme hierarchical training avoids), ROS-free.

The edge runs its layers forward and sends the (codec-compressed) activations;
the cloud finishes the forward pass, computes the loss, backpropagates to the
split and returns the gradient of the loss with respect to the activations;
the edge waits for it and backpropagates it through its own layers.  No early
exit is used: the edge learns only from the cloud's gradient.  Both sides reuse
:class:`~.training._Trainer` (optimizer, schedule, checkpoint state) and the
same split models and codec as hierarchical training, so the two schemes move
the same forward payload and differ only in the backward round trip.
"""

from __future__ import annotations

import numpy as np
import torch

from . import codec
from .models import SplitSpec
from .training import CloudTrainer, EdgeTrainer, OptimConfig, StepResult

# Gradients are signed and much less tolerant of coarse quantization than ReLU activations.
DEFAULT_GRAD_BITS = 8


class SplitEdgeTrainer(EdgeTrainer):
    """Edge half of split learning: forward to the split, then backward from the cloud's gradient."""

    role = "split-edge"

    def forward(self, images: torch.Tensor, labels: torch.Tensor, **meta) -> tuple[torch.Tensor, codec.FeaturePayload]:
        """Activations at the split (graph kept for :meth:`backward`) and their payload."""
        self.model.train()
        features = self.model.compress(self.model.backbone(images))  # the early exit is not used
        return features, self._payload(features, labels.numpy(), **meta)

    def backward(self, features: torch.Tensor, grad_payload: codec.FeaturePayload) -> None:
        """Backpropagate the cloud's gradient (straight through the quantizer) and update."""
        if grad_payload.seq != self.seq or tuple(grad_payload.shape) != tuple(features.shape):
            raise ValueError(f"gradient for seq {grad_payload.seq} shape {tuple(grad_payload.shape)} does not "
                             f"match activations seq {self.seq} shape {tuple(features.shape)}")
        grad = codec.decode(grad_payload)
        self._apply(lambda: features.backward(grad))


class SplitCloudTrainer(CloudTrainer):
    """Cloud half of split learning: train on the activations and return their gradient."""

    role = "split-cloud"

    def __init__(self, cloud, spec: SplitSpec, optim: OptimConfig, grad_bits: int = DEFAULT_GRAD_BITS):
        super().__init__(cloud, spec, optim)
        self.grad_bits = grad_bits

    def train_step(self, payload: codec.FeaturePayload) -> tuple[StepResult, codec.FeaturePayload]:
        self.check(payload, train=True)
        features = codec.decode(payload).requires_grad_(True)
        labels = torch.from_numpy(np.asarray(payload.labels, dtype=np.int64))
        result = self._classify_step(features, labels)  # its backward also fills features.grad
        grad = codec.encode(features.grad, bits=self.grad_bits, split_point=payload.split_point,
                            seq=payload.seq, model_hash=payload.model_hash)
        return result, grad
