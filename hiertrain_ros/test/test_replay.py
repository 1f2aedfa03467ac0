"""Replay against forgetting.

Edge memories (reservoir, class-balanced), the replay ratio, the cloud's latent replay with its staleness policies, and
the bounded rate of idle replay steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hiertrain_ros.core import codec
from hiertrain_ros.core.config import CloudConfig, EdgeConfig
from hiertrain_ros.core.models import SplitSpec
from hiertrain_ros.core.replay import (FifoSampler, LatentReplay, ReplayMemory, ReplayPacer, ReplaySampler,
                                       make_sampler, payload_bytes, tensor_bytes)
from hiertrain_ros.core.training import OptimConfig, make_trainers

FRAME = torch.zeros(3, 32, 32)  # 12288 bytes as float32


# -- edge memory --------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["reservoir", "balanced"])
def test_memory_is_bounded_by_its_megabytes_measured_from_the_tensor(policy):
    memory = ReplayMemory(policy, 0.1e6)
    for i in range(1000):
        memory.offer((FRAME, i % 10))
    assert tensor_bytes((FRAME, 0)) == 3 * 32 * 32 * 4
    assert memory.capacity == 100_000 // 12288 == 8
    assert len(memory) == 8 and memory.bytes <= 0.1e6
    half = (torch.zeros(3, 32, 32, dtype=torch.float16), 0)
    with pytest.raises(ValueError, match="items of 12288 bytes"):
        memory.offer(half)
    with pytest.raises(ValueError, match="holds no item"):
        ReplayMemory(policy, 1000).offer((FRAME, 0))
    with pytest.raises(ValueError):
        ReplayMemory("fifo", 1e6)


def test_class_balanced_memory_gives_each_class_seen_an_equal_share():
    memory = ReplayMemory("balanced", 60 * 12288, seed=1)
    for i in range(3000):  # class-incremental and unbalanced: 0-1 first, then mostly 2, then 3-5
        label = (i % 2) if i < 1000 else 2 if i < 2500 else 3 + i % 3
        memory.offer((FRAME, label))
    counts = np.bincount([y for _, y in memory.items()], minlength=6)
    assert len(memory) == 60 and counts.tolist() == [10] * 6
    for i in range(300):  # a class that keeps coming never takes more than its share
        memory.offer((FRAME, 5))
    assert np.bincount([y for _, y in memory.items()], minlength=6).tolist() == [10] * 6


def test_reservoir_keeps_a_uniform_sample_of_the_stream():
    # 2000 memories of 20 slots over a stream of 200: each position kept with p = 0.1.  Counts per
    # decile of the stream ~ Binomial(2000 * 20 positions, 0.1) / 10: expect 4000 each, sd ~ 60.
    kept = np.zeros(200)
    for seed in range(2000):
        memory = ReplayMemory("reservoir", 20, size_of=lambda item: 1, label_of=None, seed=seed)
        for i in range(200):
            memory.offer(i)
        kept[memory.items()] += 1
    assert kept.sum() == 2000 * 20
    deciles = kept.reshape(10, 20).sum(1)
    assert np.all(np.abs(deciles - 4000) < 300), deciles  # 5 sd: deterministic for these seeds anyway
    chi2 = ((kept - 200) ** 2 / 200).sum()  # 199 degrees of freedom: mean 199, sd 20
    assert chi2 < 300, chi2


# -- replay sampler -----------------------------------------------------------------------------------
def test_replay_ratio_is_respected_and_new_frames_are_trained_once():
    memory = ReplayMemory("reservoir", 100, size_of=lambda item: 1, label_of=None, seed=0)
    sampler = ReplaySampler(512, memory, ratio=0.25)
    trained, replayed_per_batch = [], []
    for i in range(400):
        sampler.add(i)
        batch = sampler.draw(16)
        if batch is None:
            continue
        assert len(batch) == 16 and len(set(batch)) == 16
        new = [b for b in batch if b not in trained]
        replayed_per_batch.append(16 - len(new))
        trained.extend(new)
    assert trained == list(range(len(trained))), "every new frame once, in arrival order"
    assert len(trained) + len(sampler) == 400
    assert replayed_per_batch[0] == 0 and set(replayed_per_batch[1:]) == {4}, "round(16 * 0.25) replayed"
    assert sampler.replayed == sum(replayed_per_batch)


def test_replay_sampler_mixes_old_items_at_the_ratio():
    sampler = ReplaySampler(512, ReplayMemory("reservoir", 1000, size_of=lambda item: 1, label_of=None), ratio=0.5)
    assert sampler.draw(8) is None
    for i in range(8):
        sampler.add(i)
    first = sampler.draw(8)
    assert first == list(range(8)), "an empty memory: the batch is all new"
    for i in range(8, 12):
        sampler.add(i)
    batch = sampler.draw(8)
    assert batch[:4] == [8, 9, 10, 11], "4 new, oldest first"
    assert set(batch[4:]) <= set(range(8)) and len(set(batch[4:])) == 4, "4 replayed, distinct, earlier"
    assert sampler.draw(8) is None, "a batch waits for its new items"
    assert sampler.draw_replay(8) is not None and sampler.draw_replay(13) is None
    with pytest.raises(ValueError):
        ReplaySampler(4, ReplayMemory("reservoir", 10, size_of=lambda item: 1), ratio=1.0)


@pytest.mark.parametrize("policy", ["none", "reservoir"])
def test_only_drawn_items_are_prepared_once_and_the_memory_holds_prepared_ones(policy):
    """The edge holds raw frames and converts only what it trains on (issue 14): a dropped item is never prepared."""
    prepared = []

    def prepare(batch):
        prepared.extend(batch)
        return [("tensor", item) for item in batch]

    sampler = make_sampler(4, prepare=prepare) if policy == "none" else ReplaySampler(
        4, ReplayMemory("reservoir", 10, size_of=lambda item: 1, label_of=None), 0.5, prepare=prepare)
    for i in range(10):
        sampler.add(i)
    assert sampler.dropped == 6 and prepared == [], "adding (and dropping) prepares nothing"
    batch = sampler.draw(4)
    assert prepared == [6, 7, 8, 9] and batch == [("tensor", i) for i in (6, 7, 8, 9)]
    if policy != "none":
        assert sorted(sampler.memory.items()) == batch, "the memory holds what was trained: prepared items"
        sampler.add(10)
        sampler.add(11)
        mixed = sampler.draw(4)
        assert prepared == [6, 7, 8, 9, 10, 11], "replayed items are not prepared again"
        assert mixed[:2] == [("tensor", 10), ("tensor", 11)] and set(mixed[2:]) <= set(batch)
    assert sampler.draw(4) is None and len(prepared) == (4 if policy == "none" else 6)


def test_sampler_from_config_is_fifo_unless_replay_is_on():
    assert type(make_sampler(8)) is FifoSampler and FifoSampler(8).draw_replay(1) is None
    sampler = make_sampler(8, "balanced", 1.0, 0.5, seed=3)
    assert isinstance(sampler, ReplaySampler) and sampler.memory.policy == "balanced"
    assert EdgeConfig().replay == "none" and CloudConfig().latent_replay_mb == 0, "replay is off by default"
    for bad in ({"replay": "lru"}, {"replay": "reservoir", "replay_memory_mb": 0.0}, {"replay_ratio": 1.0},
                {"replay_idle_hz": -1.0}):
        with pytest.raises(ValueError):
            EdgeConfig(**bad)
    for bad in ({"latent_staleness": "forget"}, {"latent_replay_mb": -1.0}, {"latent_max_age": 0}):
        with pytest.raises(ValueError):
            CloudConfig(**bad)


# -- cloud latent replay --------------------------------------------------------------------------------
def _payload(seq, n=4, robot="r1", version=codec.ENCODER_VERSION, label=0):
    features = torch.rand(n, 4, 2, 2)
    return codec.encode(features, bits=4, split_point=3, labels=np.full(n, label), seq=seq, robot_id=robot,
                        encoder_version=version)


def test_latent_replay_keeps_quantized_batches_within_its_megabytes():
    p = _payload(1)
    size = payload_bytes(p)
    assert size == 4 * 16 * 4 // 8 + 4 * 2, "packed 4-bit codes plus int16 labels, not floats"
    latent = LatentReplay(10 * size)
    for seq in range(1, 31):
        latent.add(_payload(seq))
    assert len(latent) == 10 and latent.bytes <= 10 * size
    assert sorted(p.seq for p, _ in latent.sample(1000)) == list(range(21, 31)), "the oldest go first"
    assert all(isinstance(p.data, bytes) for p, _ in latent.sample(1000))


def test_latent_drop_evicts_batches_older_than_max_age_per_robot():
    latent = LatentReplay(1e6, staleness="drop", max_age=5)
    for seq in range(1, 11):
        latent.add(_payload(seq))
    latent.add(_payload(1000, robot="r2"))  # another robot's seqs do not age r1's batches
    kept = sorted((p.robot_id, p.seq) for p, _ in latent.sample(1000))
    assert kept == [("r1", s) for s in range(5, 11)] + [("r2", 1000)]
    assert latent.evicted_stale == 4 and all(w == 1.0 for _, w in latent.sample(1000))


def test_latent_downweight_halves_the_weight_every_half_life():
    latent = LatentReplay(1e6, staleness="downweight", half_life=10)
    for seq in (100, 110, 120, 130):
        latent.add(_payload(seq))
    weights = {p.seq: w for p, w in latent.sample(1000)}
    assert weights == pytest.approx({130: 1.0, 120: 0.5, 110: 0.25, 100: 0.125})
    assert len(latent) == 4 and latent.evicted_stale == 0
    none = LatentReplay(1e6)
    none.add(_payload(1))
    none.add(_payload(500))
    assert [w for _, w in none.sample(1000)] == [1.0, 1.0]


def test_latent_replay_drops_a_robots_batches_from_an_older_encoder_version():
    latent = LatentReplay(1e6)
    latent.add(_payload(1, version=1))
    latent.add(_payload(2, version=2))
    assert [p.seq for p, _ in latent.sample(1000)] == [2]


def test_latent_sample_takes_enough_samples_and_only_batches_a_trainer_accepts():
    latent = LatentReplay(1e6, seed=0)
    for seq in range(1, 11):
        latent.add(_payload(seq, n=4))
    assert sum(p.num_samples for p, _ in latent.sample(10)) == 12
    assert latent.sample(10, accepts=lambda p: p.seq == 3)[0][0].seq == 3
    assert latent.sample(0) == []


def test_cloud_trainer_trains_with_replayed_batches_and_weights():
    spec = SplitSpec("vgg16", 3, width=0.125)
    edge, cloud = make_trainers(spec, OptimConfig(), seed=0)
    g = torch.Generator().manual_seed(0)
    _, new = edge.train_step(torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3]))
    _, old = edge.train_step(torch.randn(6, 3, 32, 32, generator=g), torch.tensor([4, 5, 6, 7, 8, 9]))
    before = [p.detach().clone() for p in cloud.model.parameters()]
    result = cloud.replay_step([(old, 1e-300)])  # a weight that underflows: no NaN, no update
    assert np.isfinite(result.loss) and cloud.step == 1
    assert all(torch.equal(a, b) for a, b in zip(before, cloud.model.parameters()))
    result = cloud.train_step(new, [(old, 0.5)])
    assert result.samples == 4 and cloud.step == 2, "the result counts the new batch"
    assert not all(torch.equal(a, b) for a, b in zip(before, cloud.model.parameters()))
    with pytest.raises(ValueError):
        cloud.replay_step([])


# -- idle compute -----------------------------------------------------------------------------------------
def test_idle_replay_steps_are_bounded_in_rate():
    now = [0.0]
    pacer = ReplayPacer(4.0, clock=lambda: now[0])
    steps = 0
    for _ in range(10_000):  # 10 s polled every ms, each step taking it all
        if pacer.due():
            pacer.took()
            steps += 1
        now[0] += 0.001
    assert 39 <= steps <= 41
    off = ReplayPacer(0.0, clock=lambda: now[0])
    assert not off.due()
    with pytest.raises(ValueError):
        ReplayPacer(-1.0)


# -- the nodes, on real DDS ---------------------------------------------------------------------------------
@pytest.mark.system
@pytest.mark.slow
def test_nodes_replay_from_yaml_mixed_and_idle(ros_env, tmp_path):
    from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread
    from waiting import wait_for

    overrides = {"camera_sim": {"rate_hz": 100.0},
                 "edge_node": {"batch_size": 16, "replay": "reservoir", "replay_memory_mb": 1.0, "replay_idle_hz": 5.0},
                 "cloud_node": {"latent_replay_mb": 2.0, "latent_staleness": "downweight", "replay_idle_hz": 5.0}}
    graph = Graph(GRAPHS["edge_cloud"], overrides=overrides, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    graph.start()
    try:
        status = lambda node, key: int(mon.status.get(node, {}).get(key, 0))  # noqa: E731
        wait_for(lambda: status("edge_node", "replayed") > 0 and status("cloud_node", "latent_batches") > 0, 180,
                 "mixed batches at the edge and latent batches kept on the cloud")
        graph.kill("camera_sim")  # no new frames: the trainers replay on their own, at a bounded rate
        wait_for(lambda: status("cloud_node", "replay_steps") > 0, 60, "idle replay steps on the cloud")
        assert mon.counts["cloud_metrics"] > 0
        assert all(code == 0 for code in graph.stop().values())
    finally:
        graph.stop()
        monitor.close()
