"""Accuracy smoke test: real Fashion-MNIST, VGG-16 width 0.25, split at position 3 (~1.5 min)."""

import pytest

from hiertrain_ros.core.data import FASHION_MNIST_DIR, load_fashion_mnist
from hiertrain_ros.core.training import TrainConfig, train_offline

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="dataset-fashion-mnist not installed")]


def test_hierarchical_vgg16_learns_fashion_mnist():
    train = load_fashion_mnist("train").subset(10_000)
    test = load_fashion_mnist("test")
    result = train_offline(TrainConfig(arch="vgg16", split_point=3, width=0.25, epochs=3), train, test)
    assert result["final_accuracy"] > 0.80, result
    assert result["early_exit_accuracy"] > 0.75, result
    assert result["wire_bits_per_sample"] <= 16384 + 2  # + the per-batch scale, amortized
