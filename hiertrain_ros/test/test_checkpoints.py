"""Checkpoints.

Atomic save, damaged files refused with the file named, checkpoints of another model refused, and nodes killed with
SIGKILL resuming from their last checkpoint.
"""

import os
import pickle
import re
import time

import pytest
import torch

from hiertrain_ros.core import checkpoint, codec
from hiertrain_ros.core.models import SplitSpec
from hiertrain_ros.core.training import EdgeTrainer, OptimConfig, make_trainers, paper_optim
from waiting import wait_for

SPEC = SplitSpec("vgg16", 3, width=0.125)


def _trained(spec=SPEC, optim=None, steps=2):
    edge, cloud = make_trainers(spec, optim or OptimConfig())
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        images, labels = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
        _, payload = edge.train_step(images, labels)
        cloud.train_step(payload)
    return edge, cloud


def _equal_params(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


# -- checkpoint.save / checkpoint.load -------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    edge, _ = _trained()
    path = tmp_path / "sub" / "edge.pt"  # parent is created
    checkpoint.save(edge.state_dict(), path)
    assert path.exists() and not (tmp_path / "sub" / "edge.pt.tmp").exists()
    state = checkpoint.load(path)
    fresh, _ = make_trainers(SPEC, OptimConfig(), seed=1)
    assert not _equal_params(fresh, edge)
    fresh.load_state_dict(state)
    assert _equal_params(fresh, edge)
    assert fresh.step == edge.step == 2 and fresh.seq >= edge.seq  # seqs only ever grow
    assert fresh.optimizer.state_dict()["state"].keys() == edge.optimizer.state_dict()["state"].keys()


def test_load_missing_file_is_none(tmp_path):
    assert checkpoint.load(tmp_path / "nothing.pt") is None


def test_save_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "cloud.pt"
    checkpoint.save({"model": {"w": torch.ones(3)}, "step": 1}, path)

    def crash(*_args):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        checkpoint.save({"model": {"w": torch.zeros(3)}, "step": 2}, path)
    monkeypatch.undo()
    state = checkpoint.load(path)  # the old checkpoint is intact, never half-written
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    checkpoint.save({"model": {"w": torch.zeros(3)}, "step": 3}, path)  # a leftover .tmp is no obstacle
    assert checkpoint.load(path)["step"] == 3


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_checkpoint_is_refused_naming_the_file(tmp_path, keep):
    edge, _ = _trained()
    path = tmp_path / "edge.pt"
    checkpoint.save(edge.state_dict(), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(ValueError, match=str(path)):
        checkpoint.load(path)


@pytest.mark.parametrize("content", [b"garbage" * 100, os.urandom(4096), b"PK\x03\x04" + b"\x00" * 200,
                                     pickle.dumps([1, 2, 3]), pickle.dumps({"no_model": 1})])
def test_garbage_checkpoint_is_refused_naming_the_file(tmp_path, content):
    path = tmp_path / "cloud.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=str(path)):
        checkpoint.load(path)


def test_checkpoint_state_is_plain_data(tmp_path):
    """What the trainers save loads with torch's safe (weights-only) unpickler, for both optimizers."""
    for arch in ("vgg16", "resnet18"):
        spec = SplitSpec(arch, 3, width=0.125)
        edge, cloud = _trained(spec, paper_optim(arch, total_steps=10), steps=1)
        for trainer in (edge, cloud):
            path = tmp_path / f"{arch}-{trainer.role}.pt"
            checkpoint.save({**trainer.state_dict(), "last_seq": 3, "trained_seqs": [1, 2, 3]}, path)
            state = torch.load(path, map_location="cpu", weights_only=True)
            assert state["step"] == 1 and state["trained_seqs"] == [1, 2, 3]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "edge.pt"
    torch.save({"model": _Evil(str(marker)), "role": "edge"}, path)
    try:
        with pytest.raises(ValueError, match=str(path)):
            checkpoint.load(path)
    finally:
        assert not marker.exists(), "loading the checkpoint executed code from it"


# -- trainers refuse checkpoints of another model --------------------------------------------------

@pytest.mark.parametrize("other", [SplitSpec("vgg16", 2, width=0.125), SplitSpec("vgg16", 3, width=0.25),
                                   SplitSpec("vgg16", 3, width=0.125, bits=8),
                                   SplitSpec("resnet18", 3, width=0.125)])
def test_edge_refuses_checkpoint_of_another_model_or_position(tmp_path, other):
    edge, _ = make_trainers(SPEC, OptimConfig())
    theirs, _ = _trained(other, steps=1)
    path = tmp_path / "edge.pt"
    checkpoint.save(theirs.state_dict(), path)
    before = {k: v.clone() for k, v in edge.model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        edge.load_state_dict(checkpoint.load(path))
    assert other.model_id in str(info.value) and SPEC.model_id in str(info.value)
    assert edge.step == 0 and all(torch.equal(before[k], v) for k, v in edge.model.state_dict().items())


def test_edge_refuses_cloud_checkpoint_and_vice_versa():
    edge, cloud = _trained(steps=1)
    with pytest.raises(ValueError, match="cloud"):
        edge.load_state_dict(cloud.state_dict())
    with pytest.raises(ValueError, match="edge"):
        cloud.load_state_dict(edge.state_dict())


def test_edge_refuses_checkpoint_of_another_encoder_version():
    edge, _ = _trained(steps=1)
    state = {**edge.state_dict(), "encoder_version": codec.ENCODER_VERSION + 1}
    fresh, _ = make_trainers(SPEC, OptimConfig())
    with pytest.raises(ValueError, match="encoder version"):
        fresh.load_state_dict(state)
    assert isinstance(fresh, EdgeTrainer) and fresh.step == 0


# -- live: SIGKILL, restart, resume ----------------------------------------------------------------


EVERY = 10


@pytest.mark.system
@pytest.mark.slow
def test_killed_nodes_resume_from_their_checkpoints(ros_env, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from hiertrain_interfaces.msg import Heartbeat, TrainingMetrics

    from hiertrain_ros.ros_common import TOPICS, heartbeat_qos
    from hiertrain_ros.runner import Graph, MonitorThread

    ckpt = tmp_path / "ckpt"
    overrides = {"camera_sim": {"rate_hz": 100.0},
                 "edge_node": {"batch_size": 16, "checkpoint_dir": str(ckpt), "checkpoint_every": EVERY},
                 "cloud_node": {"checkpoint_dir": str(ckpt), "checkpoint_every": EVERY}}
    graph = Graph(("camera_sim", "edge_node", "cloud_node"), overrides=overrides, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    heartbeats, edge_steps, cloud_steps, diag = [], [], [], {}

    def on_diag(msg):
        for status in msg.status:
            diag[status.hardware_id] = {kv.key: kv.value for kv in status.values}

    mon.create_subscription(Heartbeat, TOPICS["heartbeat"], lambda m: heartbeats.append((time.monotonic(), m.steps)),
                            heartbeat_qos(1.0))
    mon.create_subscription(TrainingMetrics, TOPICS["edge_metrics"],
                            lambda m: edge_steps.append((time.monotonic(), m.step)), 50)
    mon.create_subscription(TrainingMetrics, TOPICS["cloud_metrics"],
                            lambda m: cloud_steps.append((time.monotonic(), m.step)), 50)
    mon.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)

    def state():
        return (f"(alive {graph.alive()}, last heartbeat {heartbeats[-1:]}, last edge step {edge_steps[-1:]}, "
                f"last cloud step {cloud_steps[-1:]}, diagnostics {diag})")

    graph.start()
    try:
        # -- the cloud ---------------------------------------------------------------------------
        wait_for(lambda: heartbeats and heartbeats[-1][1] > 25, 90, "the cloud past 25 steps", state)
        wait_for(lambda: (ckpt / "cloud.pt").exists(), 5, "the cloud's checkpoint", state)
        steps_before = max(s for _, s in heartbeats)
        graph.kill("cloud_node")  # SIGKILL: no checkpoint on the way out
        killed = time.monotonic()
        graph.start("cloud_node")
        wait_for(lambda: [s for t, s in heartbeats if t > killed], 60, "the restarted cloud's heartbeat", state)
        # The step it resumed at, from its own log (its first heartbeat may already follow a
        # step trained on the edge's first batch, depending on which reader discovered it first).
        log = (tmp_path / "logs" / "cloud_node.log").read_text(errors="replace")
        resumed = int(re.findall(r"resumed from \S+ at step (\d+)", log)[-1])
        print(f"\ncloud killed at >= {steps_before} steps, resumed at {resumed}")
        assert resumed >= steps_before - EVERY and resumed >= steps_before // EVERY * EVERY > 0, (steps_before,
                                                                                                 resumed)
        wait_for(lambda: [s for t, s in cloud_steps if t > killed], 30, "the restarted cloud training", state)
        first = next(s for t, s in cloud_steps if t > killed)
        assert first > resumed, (resumed, first)  # goes on from the checkpoint (the monitor may see it late)

        # -- the edge ----------------------------------------------------------------------------
        wait_for(lambda: edge_steps and edge_steps[-1][1] > 25, 60, "the edge past 25 steps", state)
        edge_before = max(s for _, s in edge_steps)
        graph.kill("edge_node")
        killed = time.monotonic()
        cloud_at_edge_kill = max(s for _, s in heartbeats)
        graph.start("edge_node")
        wait_for(lambda: [s for t, s in edge_steps if t > killed], 60, "the restarted edge training", state)
        first = next(s for t, s in edge_steps if t > killed)
        print(f"edge killed at >= {edge_before} steps, first step after restart {first}")
        assert first > edge_before // EVERY * EVERY and first >= edge_before - EVERY, (edge_before, first)

        # The cloud goes on training on the restarted edge's batches.
        wait_for(lambda: max(s for _, s in heartbeats) >= cloud_at_edge_kill + 2 * EVERY, 30,
                 "the cloud training on the restarted edge's batches", state)
        time.sleep(1.5)
        print(f"cloud after edge restart: {diag.get('cloud_node')}")
        assert all(graph.alive().values()), graph.alive()
    finally:
        graph.stop()
        monitor.close()
