import pytest
import torch

from hiertrain_ros.core.models import (ARCHS, SplitSpec, build_cloud, build_edge, build_model, build_split,
                                       count_params, linear_exit, positions, split_model)

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


# -- the arch table, the side builders and the exits seam ------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_table_shapes_match_the_built_parts(arch):
    for p in positions(arch):
        spec = SplitSpec(arch, p, width=WIDTH)
        edge, cloud = build_edge(spec, seed=0), build_cloud(spec, seed=0)
        features, _ = edge(torch.randn(2, 3, 32, 32))
        assert tuple(features.shape[1:]) == spec.feature_shape == edge.feature_shape == cloud.feature_shape
        assert edge.compress[0].in_channels == spec.backbone_channels
        # The same modules, in the same order and with the same names, as a cut full model.
        cut_edge, cut_cloud = split_model(build_model(arch, width=WIDTH), spec)
        for built, cut in ((edge, cut_edge), (cloud, cut_cloud)):
            assert {k: v.shape for k, v in built.state_dict().items()} == \
                   {k: v.shape for k, v in cut.state_dict().items()}


def test_each_side_alone_gives_the_split_weights():
    spec = SplitSpec("resnet18", 2, width=WIDTH)
    edge, cloud = build_split(spec, seed=3)
    for alone, part in ((build_edge(spec, seed=3), edge), (build_cloud(spec, seed=3), cloud)):
        assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), part.state_dict().values()))
    other = build_edge(spec, seed=4)
    assert not torch.equal(other.compress[0].weight, edge.compress[0].weight)


def test_spec_validates_without_torch_and_checks_positions():
    with pytest.raises(ValueError, match="split_point for resnet18 must be in 1..7"):
        SplitSpec("resnet18", 8)
    with pytest.raises(ValueError, match="width"):
        SplitSpec(width=5)
    assert SplitSpec("vgg16", 3).feature_shape == (16, 16, 16)


def test_two_exits_on_the_edge_forward_and_train():
    from hiertrain_ros.core.training import EdgeTrainer, OptimConfig

    spec = SplitSpec("vgg16", 4, width=WIDTH)
    heads = []

    def head(channels, height, width, classes):
        heads.append((channels, height, width, classes))
        return linear_exit(channels, height, width, classes)

    edge = build_edge(spec, seed=0, exits=(2,), exit_head=head)
    assert heads == [(8, 32, 32, 10), (*spec.feature_shape, 10)]  # position 2: 64 x 0.125 channels, 32x32
    x = torch.randn(4, 3, 32, 32)
    features, (first, last) = edge.forward_exits(x)
    assert first.shape == last.shape == (4, 10) and tuple(features.shape[1:]) == spec.feature_shape
    assert torch.equal(edge(x)[1], last) and edge.early_exit is edge.exits[-1]

    trainer = EdgeTrainer(edge, spec, OptimConfig(lr=1e-2))
    before = [p.detach().clone() for p in edge.exits.parameters()]
    labels = torch.randint(0, 10, (4,))
    result, payload = trainer.train_step(x, labels)
    assert result.samples == 4 and payload.shape[1:] == spec.feature_shape
    assert all(not torch.equal(b, p) for b, p in zip(before, edge.exits.parameters()))  # both exits learn
    with pytest.raises(ValueError, match="before the split"):
        build_edge(spec, exits=(4,))


def test_checkpoint_from_before_the_exits_list_loads():
    edge = build_edge(SplitSpec("vgg16", 3, width=WIDTH), seed=0)
    state = {k.replace("exits.0.", "early_exit."): v + 1 for k, v in edge.state_dict().items()}
    edge.load_state_dict(state)
    assert torch.equal(edge.early_exit[1].weight, state["early_exit.1.weight"])
