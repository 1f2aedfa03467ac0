"""The seams later work fills in.

Robot ids on a shared cloud, the split policy and the cloud's router, and the sampler the trainers draw from.  Pure
logic; no ROS graph.
"""

import pytest
import torch
from builtin_interfaces.msg import Time
from hiertrain_interfaces.msg import Heartbeat

from hiertrain_ros import conversions
from hiertrain_ros.core import codec
from hiertrain_ros.core.fallback import FallbackArbiter
from hiertrain_ros.core.link import BatchLedger
from hiertrain_ros.core.models import SplitSpec, build_split
from hiertrain_ros.core.replay import FifoSampler
from hiertrain_ros.core.splits import FixedSplit, Route, Split, SplitPolicy, TrainerRouter
from hiertrain_ros.core.training import EdgeTrainer, OptimConfig, make_trainers

SPEC = SplitSpec("vgg16", 3, width=0.125)


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


# -- robot ids -------------------------------------------------------------------------------------
def test_ledger_keeps_robots_apart_and_never_trains_a_batch_twice():
    ledger = BatchLedger()
    ledger.trained("r1", 7)
    assert ledger.is_trained("r1", 7)
    assert not ledger.is_trained("r2", 7), "the same seq from another robot is another batch"
    ledger.trained("r2", 7)
    ledger.duplicate("r1", 7)  # a resend: acknowledged again, counted
    ledger.trained("r2", 9)
    assert [a[:2] for a in ledger.acks()] == [("r1", 7), ("r2", 7), ("r1", 7), ("r2", 9)]
    assert ledger.duplicates == 1
    assert ledger.last_seqs() == {"r1": 7, "r2": 9}


def test_ledger_bounds_its_memory():
    ledger = BatchLedger(max_trained=3, max_acks=2)
    for seq in range(5):
        ledger.trained("r1", seq)
    assert [ledger.is_trained("r1", s) for s in range(5)] == [False, False, True, True, True]
    assert [a[:2] for a in ledger.acks()] == [("r1", 3), ("r1", 4)]


def test_heartbeats_say_how_long_the_cloud_held_each_batch():
    ledger = BatchLedger()
    assert ledger.admit("r1", 5, received=100.0) and ledger.admit("r2", 5, received=100.2)
    ledger.trained("r1", 5)
    ledger.trained("r2", 5)
    assert not ledger.admit("r1", 5, received=101.0)  # a resend of a trained batch: acknowledged, this copy's time
    ledger.duplicate("r2", 5)  # a resend found trained only when its turn came: its reception is not known
    msg = conversions.heartbeat_msg(Time(sec=1), 2, 5, ledger.acks(), now=101.5)
    assert list(msg.acked_held_s[:3]) == pytest.approx([1.5, 1.3, 0.5])
    assert conversions.held_for(msg, "r1") == pytest.approx({5: 0.5})  # the latest copy's
    assert conversions.held_for(msg, "r2") == pytest.approx({5: 1.3}), "an unknown time is left out"
    # A heartbeat without them (an older cloud, or arrays that do not pair up) says nothing.
    assert conversions.held_for(conversions.heartbeat_msg(Time(sec=1), 2, 5, [("r1", 5)]), "r1") == {}
    assert conversions.held_for(Heartbeat(acked=[4, 5], acked_held_s=[0.1]), "r1") == {}


def test_ledger_state_round_trip_and_checkpoints_from_before_robot_ids():
    ledger = BatchLedger()
    ledger.trained("r1", 5)
    ledger.trained("r2", 6)
    restored = BatchLedger()
    restored.restore(ledger.state())
    assert restored.is_trained("r1", 5) and restored.is_trained("r2", 6) and not restored.is_trained("r1", 6)
    assert restored.last_seqs() == {"r1": 5, "r2": 6}

    old = BatchLedger()
    old.restore({"last_seq": 3, "trained_seqs": [1, 2, 3]})  # what a cloud checkpoint held before
    assert old.is_trained("", 2) and old.last_seqs() == {"": 3}


def test_heartbeat_acks_reach_only_their_robot():
    msg = conversions.heartbeat_msg(Time(sec=1), 10, 9, [("r1", 5), ("r2", 5), ("r2", 9)])
    assert list(msg.acked) == [5, 5, 9] and list(msg.acked_robots) == ["r1", "r2", "r2"]
    assert conversions.acks_for(msg, "r1") == [5]
    assert conversions.acks_for(msg, "r2") == [5, 9]
    assert conversions.acks_for(msg, "r3") == []
    legacy = Heartbeat(acked=[4, 5])  # a cloud from before robot ids: one robot
    assert conversions.acks_for(legacy, "r1") == [4, 5]
    broken = Heartbeat(acked=[4, 5], acked_robots=["r1"])
    with pytest.raises(ValueError, match="2 acks but 1 robot ids"):
        conversions.acks_for(broken, "r1")


def test_robot_id_travels_with_a_batch_and_is_bounded():
    edge, _ = make_trainers(SPEC, OptimConfig())
    _, payload = edge.train_step(*_batch(), robot_id="r2")
    back, _ = conversions.payload_from_msg(conversions.feature_msg(payload, Time(sec=1),
                                                                   conversions.PURPOSE_TRAIN))
    assert (back.robot_id, back.seq) == ("r2", payload.seq)
    msg = conversions.feature_msg(payload, Time(sec=1), conversions.PURPOSE_TRAIN)
    msg.robot_id = "x" * (codec.MAX_ROBOT_ID + 1)
    with pytest.raises(ValueError, match="robot_id"):
        conversions.payload_from_msg(msg)


def test_fallback_takes_only_its_own_robots_cloud_answers():
    arb = FallbackArbiter(heartbeat_timeout_s=1.0, cloud_grace_s=1.0, clock=lambda: 0.0, robot_id="r1")
    arb.heartbeat()
    assert arb.on_edge(1, "e1") == []  # waits for the cloud
    assert arb.on_cloud(1, "c1 for r2", "r2") == [] and arb.foreign == 1
    assert arb.on_cloud(1, "c1", "r1") == ["c1"]


# -- split policy and router -----------------------------------------------------------------------
class CountingPolicy(SplitPolicy):
    def __init__(self, split):
        self.split, self.contexts = split, []

    def choose(self, context):
        self.contexts.append(context)
        return self.split


def test_edge_consults_its_policy_for_every_training_batch():
    edge, _ = build_split(SPEC, seed=0)
    policy = CountingPolicy(Split(3, 4))
    trainer = EdgeTrainer(edge, SPEC, OptimConfig(), policy=policy)
    for _ in range(3):
        _, payload = trainer.train_step(*_batch())
    assert [c.step for c in policy.contexts] == [0, 1, 2]
    assert (payload.split_point, payload.bits) == (3, 4)
    assert FixedSplit(3, 4).choose(policy.contexts[0]) == Split(3, 4)


def test_edge_refuses_a_split_it_cannot_run_without_touching_its_weights():
    edge, _ = build_split(SPEC, seed=0)
    trainer = EdgeTrainer(edge, SPEC, OptimConfig(), policy=CountingPolicy(Split(5, 4)))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(ValueError, match="move first"):
        trainer.train_step(*_batch())
    assert trainer.step == 0 and all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_router_sends_each_batch_to_the_trainer_of_its_split_and_rejects_unknown_routes():
    edge3, cloud3 = make_trainers(SPEC, OptimConfig())
    edge5, cloud5 = make_trainers(SplitSpec("vgg16", 5, width=0.125), OptimConfig())
    router = TrainerRouter()
    router.add(cloud3.route, cloud3)
    _, payload3 = edge3.train_step(*_batch())
    _, payload5 = edge5.train_step(*_batch())
    assert router.trainer_for(payload3) is cloud3
    with pytest.raises(ValueError, match="no cloud trainer for a batch made at split_point 5.*serves: split_point 3"):
        router.trainer_for(payload5)
    router.add(cloud5.route, cloud5)
    assert router.trainer_for(payload5) is cloud5 and router.trainer_for(payload3) is cloud3
    with pytest.raises(ValueError, match="already there"):
        router.add(cloud5.route, cloud5)


def test_route_of_a_payload_that_states_no_model():
    route = Route(3, 4, codec.model_hash("m"))
    payload = codec.encode(torch.rand(1, 2, 2, 2), bits=4, split_point=3, labels=[0])  # model_hash 0
    assert route.accepts(payload)
    assert not route.accepts(codec.encode(torch.rand(1, 2, 2, 2), bits=2, split_point=3, labels=[0]))
    assert not route.accepts(codec.encode(torch.rand(1, 2, 2, 2), bits=4, split_point=3, labels=[0],
                                          model_hash=codec.model_hash("other")))


# -- sampler -----------------------------------------------------------------------------------------
def test_fifo_sampler_is_todays_drop_oldest_buffer():
    sampler = FifoSampler(4)
    assert sampler.draw(2) is None and not sampler.wait(0.0)
    for i in range(6):
        sampler.add(i)
    assert len(sampler) == 4 and sampler.dropped == 2 and sampler.maxlen == 4
    assert sampler.draw(3) == [2, 3, 4]
    assert sampler.draw(3) is None and len(sampler) == 1, "a batch is drawn only when complete"
    sampler.add(6)
    sampler.add(7)
    assert sampler.draw(3) == [5, 6, 7] and len(sampler) == 0
    with pytest.raises(ValueError):
        sampler.draw(0)
