import json

import pytest
import torch
from torch import nn

from hiertrain_ros import cli
from hiertrain_ros.core import models
from hiertrain_ros.core.costs import RAW_IMAGE_BITS, TRAIN_STEP_FACTOR, cost_table, forward_macs

# Sepehri et al. §IV-B, VGG-16 at separation position 3 (CIFAR-10, 4-bit, 32x32 inputs).
PAPER_VGG16_P3 = {"edge_params": 1.73e5, "edge_macs": 1.90e8, "full_params": 1.53e7, "bits": 16384,
                  "raw_bits": 24576}


def _close(ours, paper, tol=0.02):
    return abs(ours - paper) <= tol * paper


def test_vgg16_position3_matches_paper():
    (row,) = cost_table("vgg16", positions=[3])
    assert row.feature_shape == (16, 16, 16)
    assert row.edge_params == 172_522
    assert _close(row.edge_params, PAPER_VGG16_P3["edge_params"])
    assert _close(row.edge_macs, PAPER_VGG16_P3["edge_macs"])
    assert _close(row.full_params, PAPER_VGG16_P3["full_params"])
    assert row.payload_bits == PAPER_VGG16_P3["bits"]
    assert row.raw_bits == RAW_IMAGE_BITS == PAPER_VGG16_P3["raw_bits"]
    # The paper's 9.58e8 full-cloud MACs: we count conv + linear only and land 1.8 % below.
    assert _close(row.full_macs, 9.58e8, tol=0.03)


@pytest.mark.parametrize("arch", models.ARCHS)
@pytest.mark.parametrize("bits,budget", [(4, 16384), (2, 8192)])
def test_bits_per_sample_within_budget(arch, bits, budget):
    batch = 32
    rows = cost_table(arch, bits=bits, budget_bits=budget, batch_size=batch)
    assert [r.position for r in rows] == models.positions(arch)
    for r in rows:
        c, h, w = r.feature_shape
        assert r.payload_bits == c * h * w * bits
        assert r.bits_per_sample == pytest.approx(r.payload_bits + 32 / batch)
        assert r.bits_per_sample <= budget + 32 / batch
        assert r.bits_per_sample < r.raw_bits
        assert 1 <= r.compressed_channels <= r.backbone_channels


@pytest.mark.parametrize("arch", models.ARCHS)
def test_edge_cloud_accounting(arch):
    num_classes = 10
    rows = cost_table(arch, num_classes=num_classes)
    with torch.device("meta"):  # shapes only: nothing to initialize
        full = models.build_model(arch, num_classes=num_classes)
    units, ends = models._units(arch, full)
    image = (1, 3, models.INPUT_SIZE, models.INPUT_SIZE)
    assert rows[0].full_forward_macs == forward_macs(full, image)
    for r in rows:
        cb, (cc, h, w) = r.backbone_channels, r.feature_shape
        # Edge = backbone + 3x3 compression conv (no bias) + its BN + one FC early exit.
        head_params = 9 * cb * cc + 2 * cc + cc * h * w * num_classes + num_classes
        assert r.edge_params == r.edge_backbone_params + head_params
        head_macs = 9 * cb * cc * h * w + cc * h * w * num_classes
        assert r.edge_forward_macs == r.edge_backbone_forward_macs + head_macs
        # The backbone plus the unmodified rest of the network is the full model, exactly.
        rest = nn.Sequential(*units[ends[r.position - 1]:])
        assert r.edge_backbone_params + models.count_params(rest) == r.full_params
        assert r.edge_backbone_forward_macs + forward_macs(rest, (1, cb, h, w)) == r.full_forward_macs
        # The cloud never costs more than the full-cloud baseline; a step is 3 x forward.
        assert 0 < r.cloud_macs < r.full_macs and 0 < r.cloud_params < r.full_params
        assert (r.edge_macs, r.cloud_macs, r.full_macs) == tuple(
            TRAIN_STEP_FACTOR * m for m in (r.edge_forward_macs, r.cloud_forward_macs, r.full_forward_macs))
    backbone = [r.edge_backbone_params for r in rows]
    assert backbone == sorted(backbone)


@pytest.mark.parametrize("arch", models.ARCHS)
def test_meta_counts_match_a_real_split(arch):
    (row,) = cost_table(arch, positions=[3], width=0.25)
    edge, cloud = models.build_split(models.SplitSpec(arch, 3, width=0.25), seed=0)
    assert (row.edge_params, row.cloud_params) == (models.count_params(edge), models.count_params(cloud))
    assert row.feature_shape == edge.feature_shape == cloud.feature_shape
    assert row.edge_forward_macs == forward_macs(edge, (1, 3, 32, 32))


def test_forward_macs_leaves_module_untouched():
    layer = nn.Linear(8, 4)
    layer.train()
    assert forward_macs(layer, (1, 8)) == 32
    assert layer.training and layer.weight.device == torch.device("cpu")


def test_invalid_arguments():
    with pytest.raises(ValueError):
        cost_table("vgg16", positions=[13])
    with pytest.raises(ValueError):
        cost_table("alexnet")
    with pytest.raises(ValueError):
        cost_table("vgg16", batch_size=0)


def test_cli_profile_json(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert cli.main(["profile", "--model", "resnet18", "--position", "all", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["model"] == "resnet18"
    assert [r["position"] for r in data["rows"]] == models.positions("resnet18")
    assert all(r["bits_per_sample"] <= 16384 + 1 for r in data["rows"])
    assert "edge_params" in capsys.readouterr().out


def test_cli_profile_bad_position(capsys):
    assert cli.main(["profile", "--model", "resnet18", "--position", "9"]) == 2
    assert cli.main(["profile", "--model", "vgg16", "--position", "three"]) == 2


def test_cli_profile_plot(tmp_path):
    pytest.importorskip("matplotlib")
    assert cli.main(["profile", "--model", "vgg16", "--position", "3", "--plot", str(tmp_path)]) == 0
    for name in ("params", "macs", "bits"):
        assert (tmp_path / f"vgg16_{name}.png").stat().st_size > 1000
