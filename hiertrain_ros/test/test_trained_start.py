"""Trained start: ``hiertrain train --save`` writes what the nodes' ``init_from`` loads."""

import re
from dataclasses import replace

import pytest
import torch

from hiertrain_ros.cli import main
from hiertrain_ros.core import checkpoint
from hiertrain_ros.core.data import FASHION_MNIST_DIR
from hiertrain_ros.core.models import SplitSpec, build_model
from hiertrain_ros.core.training import OptimConfig, make_trainers
from waiting import wait_for

NEEDS_DATA = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="dataset-fashion-mnist not installed")
SPEC = SplitSpec(arch="vgg16", split_point=3, width=0.0625, num_classes=10)


def _start(spec, path, seed=1):
    """Fresh node-side trainers (another seed than the saved ones) that start from ``path``."""
    edge, cloud = make_trainers(spec, OptimConfig(), seed=seed)
    for trainer in (edge, cloud):
        trainer.load_weights(*checkpoint.load_init(path, trainer.role, spec))
    return edge, cloud


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@NEEDS_DATA
def test_train_save_then_nodes_load_the_same_weights(tmp_path, capsys):
    out = tmp_path / "trained"
    assert main(["train", "--width", "0.0625", "--subset", "64", "--test-subset", "32", "--save", str(out)]) == 0
    assert f"saved {out / 'edge.pt'}" in capsys.readouterr().out
    saved = {role: torch.load(out / f"{role}.pt", weights_only=True) for role in ("edge", "cloud")}
    assert saved["edge"]["model_id"] == SPEC.model_id and saved["edge"]["spec"]["width"] == 0.0625
    edge, cloud = _start(SPEC, out)
    assert _same(edge.model.state_dict(), saved["edge"]["model"])
    assert _same(cloud.model.state_dict(), saved["cloud"]["model"])
    assert edge.step == cloud.step == 0  # weights only: the node's optimizer starts anew


@pytest.mark.parametrize("other", [{"split_point": 2}, {"bits": 8}, {"arch": "resnet18"}, {"width": 0.125}])
def test_init_from_another_model_is_refused_naming_both(tmp_path, other):
    edge, cloud = make_trainers(SPEC, OptimConfig())
    checkpoint.save_trained(tmp_path, SPEC, {"edge": edge.model, "cloud": cloud.model})
    mine = replace(SPEC, **other)
    for role in ("edge", "cloud"):
        with pytest.raises(ValueError) as err:
            checkpoint.load_init(tmp_path, role, mine)
        assert SPEC.model_id in str(err.value) and mine.model_id in str(err.value)


def test_init_from_names_missing_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        checkpoint.load_init(tmp_path, "edge", SPEC)
    torch.save({"weights": [1, 2]}, tmp_path / "edge.pt")
    with pytest.raises(ValueError, match="neither"):
        checkpoint.load_init(tmp_path, "edge", SPEC)


@pytest.mark.parametrize("arch,split_point", [("vgg16", 3), ("resnet18", 2)])
def test_whole_model_state_dict_splits_into_edge_and_cloud(tmp_path, arch, split_point):
    spec = replace(SPEC, arch=arch, split_point=split_point)
    whole = build_model(arch, num_classes=10, width=spec.width).state_dict()
    torch.save(whole, tmp_path / "mine.pt")
    fresh_edge, fresh_cloud = make_trainers(spec, OptimConfig(), seed=1)
    edge, cloud = _start(spec, tmp_path / "mine.pt")
    # Every backbone tensor is the source's, in torchvision's order; compression and exits are fresh.
    backbone = {k: v for k, v in edge.model.state_dict().items() if k.startswith("backbone.")}
    source = list(whole.values())[:len(backbone)]
    assert len(backbone) > 0 and all(torch.equal(a, b) for a, b in zip(backbone.values(), source))
    assert torch.equal(edge.model.compress[0].weight, fresh_edge.model.compress[0].weight)
    # The cloud ends in the whole model's head; only its first layer (compressed channels) is fresh.
    cloud_state = cloud.model.state_dict()
    assert torch.equal(list(cloud_state.values())[-1], list(whole.values())[-1])
    _, fresh = checkpoint.load_init(tmp_path / "mine.pt", "cloud", spec)
    assert len(fresh) == 1 and re.fullmatch(r"body\.\d+\.", fresh[0])
    assert all(torch.equal(v, fresh_cloud.model.state_dict()[k]) for k, v in cloud_state.items()
               if k.startswith(fresh) and v.is_floating_point())


def test_whole_model_of_another_width_is_refused_naming_the_expected_model(tmp_path):
    torch.save(build_model("vgg16", num_classes=10, width=0.125).state_dict(), tmp_path / "mine.pt")
    with pytest.raises(ValueError, match="vgg16 at width 0.0625 with 10 classes"):
        checkpoint.load_init(tmp_path / "mine.pt", "edge", SPEC)


@NEEDS_DATA
def test_full_cloud_save_is_a_whole_model_the_nodes_split(tmp_path):
    assert main(["train", "--mode", "full-cloud", "--width", "0.0625", "--subset", "32", "--test-subset", "16",
                 "--save", str(tmp_path)]) == 0
    edge, _ = _start(SPEC, tmp_path / "model.pt")
    whole = torch.load(tmp_path / "model.pt", weights_only=True)
    assert torch.equal(edge.model.backbone[0].weight, whole["features.0.weight"])


# -- the nodes -----------------------------------------------------------------------------------

NODE_SPEC = SplitSpec(width=0.25)  # config/edge_cloud.yaml's model


def _diagnostics(mon, diag):
    from diagnostic_msgs.msg import DiagnosticArray

    def on_diag(msg):
        for status in msg.status:
            diag[status.hardware_id] = {kv.key: kv.value for kv in status.values}
    mon.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)


@pytest.mark.system
def test_resume_wins_over_init_from(ros_env, tmp_path):
    """In one node process: a checkpoint in checkpoint_dir is resumed, init_from is then ignored."""
    import rclpy

    from hiertrain_ros.edge_node import EdgeNode

    trained, ckpt = tmp_path / "trained", tmp_path / "ckpt"
    edge, cloud = make_trainers(NODE_SPEC, OptimConfig(), seed=3)
    checkpoint.save_trained(trained, NODE_SPEC, {"edge": edge.model, "cloud": cloud.model})

    def start(checkpoint_dir):
        """Return the node's status and weights after autostart (configure, activate)."""
        rclpy.init(args=["--ros-args", "-p", f"width:={NODE_SPEC.width}", "-p", f"init_from:={trained}",
                         "-p", f"checkpoint_dir:={checkpoint_dir}"])
        try:
            node = EdgeNode()
            with node._lock:
                result = node.status(), {k: v.clone() for k, v in node.trainer.model.state_dict().items()}
            node.close()
            node.destroy_node()
            return result
        finally:
            rclpy.shutdown()

    status, state = start('""')
    assert status["init_from"] == str(trained) and _same(state, edge.model.state_dict())
    resumed = make_trainers(NODE_SPEC, OptimConfig(), seed=4)[0]
    resumed.step = 7
    checkpoint.save(resumed.state_dict(), ckpt / "edge.pt")
    status, state = start(str(ckpt))
    assert status["init_from"] == "" and status["steps"] == 7 and _same(state, resumed.model.state_dict())


@pytest.mark.system
def test_nodes_started_with_init_from_say_so_and_answer(ros_env, tmp_path):
    from hiertrain_interfaces.msg import Heartbeat, TrainingMetrics

    from hiertrain_ros.ros_common import TOPICS, heartbeat_qos
    from hiertrain_ros.runner import Graph, MonitorThread

    trained = tmp_path / "trained"
    edge, cloud = make_trainers(NODE_SPEC, OptimConfig(), seed=3)
    checkpoint.save_trained(trained, NODE_SPEC, {"edge": edge.model, "cloud": cloud.model})
    overrides = {"edge_node": {"init_from": str(trained), "batch_size": 16},
                 "cloud_node": {"init_from": str(trained)}}
    graph = Graph(("camera_sim", "edge_node", "cloud_node"), overrides=overrides, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    diag, heartbeats, edge_steps = {}, [], []
    _diagnostics(monitor.node, diag)
    monitor.node.create_subscription(Heartbeat, TOPICS["heartbeat"], lambda m: heartbeats.append(m.steps),
                                     heartbeat_qos(1.0))
    monitor.node.create_subscription(TrainingMetrics, TOPICS["edge_metrics"], lambda m: edge_steps.append(m.step),
                                     50)
    graph.start()
    try:
        wait_for(lambda: all(diag.get(n, {}).get("init_from") == str(trained) for n in ("edge_node", "cloud_node")),
                 60, "both nodes' diagnostics naming init_from", lambda: f"{diag} alive {graph.alive()}")
        wait_for(lambda: edge_steps and heartbeats and heartbeats[-1] > 0, 60, "both training",
                 lambda: f"{diag} heartbeats {heartbeats[-1:]} edge {edge_steps[-1:]}")
        for name in ("edge_node", "cloud_node"):
            log = (tmp_path / "logs" / f"{name}.log").read_text(errors="replace")
            assert re.search(rf"initialised from {re.escape(str(trained))}", log), log[-2000:]
    finally:
        graph.stop()
        monitor.close()
