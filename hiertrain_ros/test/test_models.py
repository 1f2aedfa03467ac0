import pytest
import torch

from hiertrain_ros.core.models import (ARCHS, SplitSpec, build_model, build_split, count_params, positions,
                                       split_model)

WIDTH = 0.125


@pytest.mark.parametrize("arch", ARCHS)
def test_positions_follow_paper(arch):
    assert positions(arch) == list(range(1, {"vgg16": 12, "resnet18": 7}[arch] + 1))


@pytest.mark.parametrize("arch,position", [(a, p) for a in ARCHS for p in positions(a)])
def test_shapes_and_parameter_accounting(arch, position):
    torch.manual_seed(0)
    spec = SplitSpec(arch, position, width=WIDTH)
    base = build_model(arch, width=WIDTH)
    edge, cloud = split_model(base, spec)
    features, early_logits = edge(torch.randn(3, 3, 32, 32))
    assert tuple(features.shape) == (3, *edge.feature_shape)
    assert early_logits.shape == (3, 10)
    assert cloud(features).shape == (3, 10)
    c, h, w = edge.feature_shape
    assert c * h * w * spec.bits <= spec.budget_bits or c == 1
    # Every base parameter lives on exactly one side; only the cloud's first layer
    # (rebuilt for the compressed channels) and the edge's additions differ.
    first = next(m for m in cloud.body if isinstance(m, torch.nn.Conv2d) or hasattr(m, "conv1"))
    base_first = _base_counterpart(base, arch, position)
    added = count_params(edge.compress) + count_params(edge.early_exit)
    assert (count_params(edge.backbone) + count_params(cloud) - count_params(first) + count_params(base_first)
            == count_params(base))
    assert count_params(edge) == count_params(edge.backbone) + added


def _base_counterpart(base, arch, position):
    if arch == "vgg16":
        convs = [m for m in base.features if isinstance(m, torch.nn.Conv2d)]
        return convs[position]
    blocks = [b for layer in (base.layer1, base.layer2, base.layer3, base.layer4) for b in layer]
    return blocks[position]


def test_parts_share_no_tensor_with_base():
    base = build_model("vgg16", width=WIDTH)
    edge, _ = split_model(base, SplitSpec("vgg16", 3, width=WIDTH))
    base_ptrs = {p.data_ptr() for p in base.parameters()}
    assert not base_ptrs & {p.data_ptr() for p in edge.parameters()}


def test_vgg16_position3_matches_paper_edge_parameters():
    edge, _ = build_split(SplitSpec("vgg16", 3))
    assert edge.feature_shape == (16, 16, 16)  # 4096 values x 4 bits = 16384 bits
    assert abs(count_params(edge) - 1.73e5) / 1.73e5 < 0.01


@pytest.mark.parametrize("bad", [dict(split_point=0), dict(split_point=13), dict(bits=3)])
def test_bad_split_rejected(bad):
    with pytest.raises(ValueError):
        build_split(SplitSpec(**{"arch": "vgg16", "split_point": 3, "width": WIDTH, **bad}))


def test_bad_arch_and_width_rejected():
    with pytest.raises(ValueError, match="arch"):
        build_model("alexnet")
    with pytest.raises(ValueError, match="width"):
        build_model("vgg16", width=0)
