"""``hiertrain plan --by memory|latency`` (issue 12, EdgeLessPart §II): the split and both parts' exits.

No data and no training: the memory mode needs the model alone, the latency mode a device profile (here a written
one, in ``hiertrain profile --measure --json``'s form).  The choices are checked against core.progressive directly,
and the JSON's params sections against the node configs they are pasted into.
"""

import json

import pytest
import yaml

from hiertrain_ros import cli
from hiertrain_ros.core import progressive
from hiertrain_ros.core.archs import SplitSpec, positions
from hiertrain_ros.core.config import CloudConfig, EdgeConfig
from hiertrain_ros.core.data import FASHION_MNIST_DIR


def _plan(tmp_path, *argv) -> dict:
    out = tmp_path / "plan.json"
    assert cli.main(["plan", *argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _profile(tmp_path, arch="vgg16", width=0.25, forward_s=(), name="edge.json") -> str:
    """Write a profile in hiertrain profile --measure --json's form: a layer per position, then the output's."""
    layers = [{"name": f"layer {i}", "forward_s": t, "backward_s": 2 * t, "update_s": 1e-4, "output_bits": 1.0,
               "param_bits": 1.0} for i, t in enumerate(forward_s, start=1)]
    path = tmp_path / name
    path.write_text(json.dumps({"arch": arch, "width": width, "num_classes": 10, "batch_size": 32, "threads": 1,
                                "sample_bits": 24576.0, "layers": layers}))
    return str(path)


def _check_exits(plan: dict, arch: str, width: float, exits: int, cloud_exits: int, how: str) -> None:
    split = plan["split_point"]
    spec = SplitSpec(arch, split, width=width)
    assert plan["edge_exit_positions"] == [*progressive.edge_exits(spec, exits, how), split]
    assert plan["cloud_exit_positions"] == [*progressive.cloud_exits(spec, cloud_exits, how), "output"]
    # The params sections are what the params file takes: pasted, they build the node configs.
    params = plan["params"]
    shared = params["/**"]["ros__parameters"]
    assert shared == {"model": arch, "width": width, "split_point": split}
    edge = EdgeConfig(**{"arch" if k == "model" else k: v for k, v in shared.items()},
                      **params["edge_node"]["ros__parameters"])
    cloud = CloudConfig(**{"arch" if k == "model" else k: v for k, v in shared.items()},
                        **params["cloud_node"]["ros__parameters"])
    assert (edge.exits, edge.exit_placement, edge.split_point) == (exits, how, split)
    assert (cloud.exits, cloud.exit_placement) == (cloud_exits, how)
    assert yaml.safe_load(yaml.safe_dump(params)) == params


@pytest.mark.parametrize("arch,share,exits,cloud_exits,how", [("vgg16", 0.7, 3, 2, "pareto"),
                                                              ("resnet18", 0.7, 2, 1, "linear"),
                                                              ("vgg16", 0.4, 2, 3, "linear")])
def test_by_memory_takes_the_deepest_split_within_the_share_and_places_the_exits(tmp_path, capsys, arch, share,
                                                                                 exits, cloud_exits, how):
    plan = _plan(tmp_path, "--by", "memory", "--model", arch, "--width", "0.25", "--memory-share", str(share),
                 "--exits", str(exits), "--cloud-exits", str(cloud_exits), "--exit-placement", how)
    chosen = progressive.split_by_memory(arch, share, width=0.25)
    assert plan["plan"]["chosen"] == plan["split_point"] == chosen
    assert (plan["by"], plan["memory_share"]) == ("memory", share)
    assert [row["pos"] for row in plan["rows"]] == positions(arch)
    assert all((row["share"] <= share) == (row["pos"] <= chosen) for row in plan["rows"])
    _check_exits(plan, arch, 0.25, exits, cloud_exits, how)
    out = capsys.readouterr().out
    assert f"chosen position: {chosen} (by memory)" in out and "edge_node:" in out


def test_by_memory_defaults_to_the_papers_70_percent(tmp_path):
    plan = _plan(tmp_path, "--by", "memory", "--model", "resnet18", "--width", "0.125")
    assert plan["memory_share"] == 0.7
    assert plan["split_point"] == progressive.split_by_memory("resnet18", 0.7, width=0.125)
    assert plan["edge_exit_positions"] == [plan["split_point"]] and plan["cloud_exit_positions"] == ["output"]


@pytest.mark.parametrize("budget_s,ratio", [(3.5e-4, None), (7.5e-4, 2.0), (1e-2, None)])
def test_by_latency_takes_the_deepest_split_whose_edge_forward_fits(tmp_path, budget_s, ratio):
    forward = [1e-4] * 13  # vgg16: 12 positions and the output's layer
    path = _profile(tmp_path, forward_s=forward)
    plan = _plan(tmp_path, "--by", "latency", "--model", "vgg16", "--width", "0.25", "--edge-profile", path,
                 "--answer-latency", str(budget_s), "--exits", "2", "--exit-placement", "pareto",
                 *(["--edge-speed-ratio", str(ratio)] if ratio else []))
    chosen = progressive.split_by_latency(json.loads(open(path).read()), budget_s, ratio or 1.0)
    assert plan["split_point"] == chosen == {(3.5e-4, None): 3, (7.5e-4, 2.0): 3, (1e-2, None): 12}[budget_s, ratio]
    assert (plan["answer_latency_s"], plan["edge_speed_ratio"]) == (budget_s, ratio or 1.0)
    assert plan["rows"][chosen - 1]["edge_forward_ms/sample"] == pytest.approx(1e3 * chosen * 1e-4 * (ratio or 1))
    _check_exits(plan, "vgg16", 0.25, 2, 1, "pareto")


def _error(capsys, *argv) -> str:
    assert cli.main(["plan", *argv]) == 2
    return capsys.readouterr().err


def test_a_missing_or_bad_profile_and_wrong_options_fail_clearly(tmp_path, capsys):
    latency = ["--by", "latency", "--model", "vgg16", "--width", "0.25", "--answer-latency", "0.001"]
    assert "no such file" in _error(capsys, *latency, "--edge-profile", str(tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text("{not json")
    assert "is not a profile JSON" in _error(capsys, *latency, "--edge-profile", str(tmp_path / "bad.json"))
    (tmp_path / "empty.json").write_text("{}")
    assert "has no arch, width and layers" in _error(capsys, *latency, "--edge-profile", str(tmp_path / "empty.json"))
    other = _profile(tmp_path, arch="resnet18", forward_s=[1e-4] * 8, name="resnet.json")
    assert "is of resnet18 width 0.25, not --model vgg16" in _error(capsys, *latency, "--edge-profile", other)
    short = _profile(tmp_path, forward_s=[1e-4] * 5, name="short.json")
    assert "has 5 layers, vgg16 needs 13" in _error(capsys, *latency, "--edge-profile", short)
    fine = _profile(tmp_path, forward_s=[1e-4] * 13)
    assert "no split answers within 0.01 ms" in _error(capsys, *latency[:-1], "1e-5", "--edge-profile", fine)
    assert "needs --edge-profile FILE and --answer-latency" in _error(capsys, "--by", "latency", "--edge-profile", fine)
    assert "--answer-latency must be > 0" in _error(capsys, *latency[:-1], "0", "--edge-profile", fine)
    # Options of the other modes are refused, not silently ignored.
    assert "does not use --edge-memory" in _error(capsys, "--by", "memory", "--edge-memory", "2e6")
    for mode in (["--by", "memory"], [*latency, "--edge-profile", fine]):
        # Algorithm 1's privacy floor, explicit candidates, data, link and timing have no say here.
        assert "hiertrain plan: error: --by" in _error(capsys, *mode, "--privacy-floor", "0.5")
        assert "does not use --privacy-floor, --privacy-json" in _error(capsys, *mode, "--privacy-floor", "0.5",
                                                                        "--privacy-json", fine)
        assert "does not use --positions (options of --by algorithm1)" in _error(capsys, *mode, "--positions", "2,3")
        assert "does not use --positions, --link, --epochs, --reps" in _error(
            capsys, *mode, "--reps", "3", "--epochs", "2", "--link", "4g", "--positions", "3")
        assert "does not use --data, --accuracy-json" in _error(capsys, *mode, "--data", "cifar10-dir:x",
                                                                "--accuracy-json", fine)
    assert "go with --by latency" in _error(capsys, "--by", "memory", "--edge-profile", fine)
    assert "go with --by latency" in _error(capsys, "--by", "memory", "--edge-speed-ratio", "2")
    # Their defaults, given, are no change: accepted.
    assert _plan(tmp_path, "--by", "memory", "--positions", "all", "--link", "3g", "--epochs", "1")["by"] == "memory"
    assert "go with --by memory or --by latency" in _error(capsys, "--memory-share", "0.5")
    assert "memory share must be in (0, 1)" in _error(capsys, "--by", "memory", "--memory-share", "1.5")
    # More exits than the part has positions for.
    assert "--exits 2: the edge part up to position 1 has room for 1" in _error(
        capsys, "--by", "memory", "--memory-share", "0.1", "--exits", "2")
    assert "--cloud-exits 3: the cloud part after position 7 has room for 1" in _error(
        capsys, "--by", "memory", "--model", "resnet18", "--cloud-exits", "3")


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="Debian's dataset-fashion-mnist not installed")
def test_algorithm1_places_the_exits_at_its_chosen_split(tmp_path):
    plan = _plan(tmp_path, "--model", "resnet18", "--positions", "1,2,3", "--edge-memory", "175k", "--width",
                 "0.125", "--subset", "64", "--reps", "1", "--warmup", "1", "--batch-size", "4", "--exits", "1",
                 "--cloud-exits", "2", "--exit-placement", "pareto")
    assert plan["plan"]["chosen"] == plan["split_point"] == 1
    _check_exits(plan, "resnet18", 0.125, 1, 2, "pareto")
