"""Live repartition in core (core.repartition): layers change side with their weights and optimizer state."""

import io
from dataclasses import replace

import pytest
import torch

from hiertrain_ros.core import codec
from hiertrain_ros.core.config import CloudConfig
from hiertrain_ros.core.data import batches, load_fashion_mnist
from hiertrain_ros.core.models import SplitSpec, build_edge
from hiertrain_ros.core.repartition import EdgeMove, MovableSide, decoder, move_bytes_bound
from hiertrain_ros.core.splits import ScheduledSplit, Split, SplitContext, parse_split_schedule
from hiertrain_ros.core.training import CloudTrainer, EdgeTrainer, OptimConfig

SPEC = SplitSpec("vgg16", 3, width=0.125)


def _pair(optim=OptimConfig(name="sgd", lr=0.05, momentum=0.9)):
    edge = EdgeTrainer(MovableSide("edge", SPEC).model, SPEC, optim)
    edge.make_movable(MovableSide("edge", SPEC))
    cloud = CloudTrainer(MovableSide("cloud", SPEC).model, SPEC, optim)
    cloud.make_movable(MovableSide("cloud", SPEC))
    return edge, cloud


def _move(edge, cloud, to, moves):
    """Move both: the edge's units go with the request, the cloud's come back with the answer (the protocol's flow)."""
    request = edge.movable.export(to, edge.optimizer)
    answer = cloud.move(to, moves, request)
    edge.move(to, moves, answer)


def _step(edge, cloud, images, labels):
    _, payload = edge.train_step(images, labels)
    return cloud.train_step(payload), payload


def _params(trainer):
    return {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}


def test_units_move_with_their_weights_and_optimizer_state_and_come_back_unchanged():
    edge, cloud = _pair()
    images, labels = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(2):
        _step(edge, cloud, images, labels)
    moving = cloud.movable.leaving(Split(5, 4))  # the cloud's units up to position 5 go to the edge
    assert moving and all(i in cloud.movable.owned(3) for i in moving)
    weights = {i: {k: v.clone() for k, v in cloud.movable.units[i].state_dict().items()} for i in moving}
    momenta = {i: [cloud.optimizer.state[p]["momentum_buffer"].clone() for p in cloud.movable.units[i].parameters()]
               for i in moving}
    _move(edge, cloud, Split(5, 4), 1)
    assert (edge.spec.split_point, cloud.spec.split_point) == (5, 5)
    for i in moving:
        unit = edge.movable.units[i]
        assert all(torch.equal(weights[i][k], v) for k, v in unit.state_dict().items())
        assert all(torch.equal(m, edge.optimizer.state[p]["momentum_buffer"])
                   for m, p in zip(momenta[i], unit.parameters()))
        assert {id(p) for p in unit.parameters()} <= _params(edge)  # the edge trains them now ...
        assert not {id(p) for p in cloud.movable.units[i].parameters()} & _params(cloud)  # ... the cloud not
    assert tuple(edge.model.feature_shape) == tuple(cloud.model.feature_shape) == SplitSpec(
        "vgg16", 5, width=0.125).feature_shape
    _step(edge, cloud, images, labels)
    back = {i: {k: v.clone() for k, v in edge.movable.units[i].state_dict().items()} for i in moving}
    _move(edge, cloud, Split(3, 4), 2)
    for i in moving:
        assert all(torch.equal(back[i][k], v) for k, v in cloud.movable.units[i].state_dict().items())
    _step(edge, cloud, images, labels)


def test_batches_are_tagged_so_the_cloud_never_decodes_one_against_another_split():
    edge, cloud = _pair()
    images, labels = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    _, old = edge.train_step(images, labels)
    _move(edge, cloud, Split(5, 4), 1)
    with pytest.raises(ValueError, match="split_point 3 != 5"):
        cloud.train_step(old)
    _move(edge, cloud, Split(3, 4), 2)  # the same split again, after two moves: still refused
    with pytest.raises(ValueError, match="not this"):
        cloud.train_step(old)
    _move(edge, cloud, Split(3, 2), 3)  # only the bit width changes
    _, payload = edge.train_step(images, labels)
    assert payload.bits == 2 and cloud.train_step(payload).samples == 4


def test_a_bad_move_changes_nothing():
    edge, cloud = _pair()
    before = [p.detach().clone() for p in cloud.model.parameters()]
    own = edge.movable.export(Split(5, 4), edge.optimizer)  # not the cloud's units
    for bad, match in ((b"junk", "could not be read"), (own, "needs units")):
        with pytest.raises(ValueError, match=match):
            edge.move(Split(5, 4), 1, bad)
    with pytest.raises(ValueError, match="needs units"):  # moving to 2, the cloud gains the edge's units, not these
        cloud.move(Split(2, 4), 1, cloud.movable.export(Split(5, 4), cloud.optimizer))
    assert edge.spec.split_point == cloud.spec.split_point == 3
    assert all(torch.equal(a, b) for a, b in zip(before, cloud.model.parameters()))
    fixed = EdgeTrainer(build_edge(SPEC), SPEC, OptimConfig())
    with pytest.raises(ValueError, match="built for one split"):
        fixed.move(Split(5, 4), 1, b"")


def test_training_goes_on_across_moves_3_to_5_and_back():
    # Fashion-MNIST, 3072 frames, one pass; the split moves at steps 16 and 32.  The cloud's loss keeps falling
    # (measured: 2.32 over the first 8 steps, 1.56 over the last 8; 1.59 without the moves).
    edge, cloud = _pair(OptimConfig(name="adam", lr=2e-3))
    policy = ScheduledSplit("3@0,5@16,3@32", 4)
    losses, moves = [], 0
    for images, labels in batches(load_fashion_mnist("train").subset(3072), 32, shuffle=True):
        want = policy.choose(SplitContext(step=edge.step))
        if want != edge.split:
            moves += 1
            _move(edge, cloud, want, moves)
        losses.append(_step(edge, cloud, images, labels)[0].loss)
    assert moves == 2
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.75 * first, (first, last)


def test_split_schedule_parsing():
    assert parse_split_schedule("3@0, 5/2@40,3@80", 4) == [(0, Split(3, 4)), (40, Split(5, 2)), (80, Split(3, 4))]
    policy = ScheduledSplit("3@0,5@40", 4)
    assert [policy.choose(SplitContext(step=s)) for s in (0, 39, 40, 1000)] == [Split(3, 4)] * 2 + [Split(5, 4)] * 2
    for bad in ("", "3@5", "3@0,5@0", "3@0,5", "x@0"):
        with pytest.raises(ValueError, match="split schedule"):
            parse_split_schedule(bad, 4)


def test_edge_move_drains_asks_again_and_gives_up_only_before_asking():
    move = EdgeMove(resend_s=2.0, drain_timeout_s=10.0)
    here, there = Split(3, 4), Split(5, 4)
    assert not move.want(here, here, 0.0) and move.want(there, here, 0.0) and move.busy
    assert move.request(False, 5.0, lambda to: b"") is None  # batches still unacknowledged
    first = move.request(True, 6.0, lambda to: b"units")
    assert (first.move_id, first.to, first.state) == (1, there, b"units")
    assert move.request(True, 7.0, lambda to: b"") is None and move.request(False, 8.5, lambda to: b"") is first
    assert move.request(False, 100.0, lambda to: b"") is first  # asked: never given up
    assert move.answered(7, 101.0) is None and move.answered(1, 101.0) is first
    assert not move.busy and move.moves == 1 and move.pauses == [101.0]
    # The cloud is away: the drain times out, the move is given up, and none starts for as long again.
    assert move.want(here, there, 200.0)
    assert move.request(False, 211.0, lambda to: b"") is None and not move.busy and move.abandoned == 1
    assert not move.want(here, there, 215.0) and move.want(here, there, 222.0)


def test_the_payload_codec_is_unchanged_by_a_move():
    edge, cloud = _pair()
    _move(edge, cloud, Split(5, 2), 1)
    _, payload = edge.train_step(torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    codec.validate(payload)
    assert payload.split_point == 5 and payload.bits == 2 and payload.model_hash == cloud.model_hash


def test_move_bytes_bound_holds_a_real_move_with_adam_state():
    edge, cloud = _pair(OptimConfig(name="adam", lr=1e-3))
    images, labels = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    _step(edge, cloud, images, labels)
    blob = cloud.movable.export(Split(8, 4), cloud.optimizer)  # every unit between 3 and 8, two Adam moments each
    bound = move_bytes_bound("vgg16", 0.125, 10, [8, 3, 5])
    assert len(blob) <= bound <= 1.2 * len(blob) + (64 << 10)
    assert move_bytes_bound("vgg16", 0.125, 10, [3, 5]) < bound


def _weights(module):
    return [t.detach().clone() for t in module.state_dict().values()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_cloud_keeps_the_splits_past_its_own_ready_and_hands_their_adapters_over():
    edge, cloud = _pair()
    images, labels = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    _step(edge, cloud, images, labels)
    _move(edge, cloud, Split(8, 4), 1)
    _step(edge, cloud, images, labels)
    _move(edge, cloud, Split(3, 4), 2)
    assert cloud.movable.shadows(3) == [Split(8, 4)] and edge.movable.shadows(8) == []  # the edge keeps none
    ready = cloud.movable.ready[Split(8, 4)]  # starts as the edge's compression and exit started
    fresh = MovableSide("edge", replace(SPEC, split_point=8)).model
    assert _same(_weights(ready), _weights(fresh.compress) + _weights(fresh.exits))
    before = {"adapter": _weights(ready), "decoder": _weights(cloud.movable.adapters[Split(8, 4)])}
    edge_copy = _weights(edge.movable.adapters[Split(8, 4)])
    _step(edge, cloud, images, labels)  # the cloud trains split 8's adapters while at split 3
    after = {"adapter": _weights(ready), "decoder": _weights(cloud.movable.adapters[Split(8, 4)])}
    assert not any(_same(before[k], after[k]) for k in before)
    assert _same(edge_copy, _weights(edge.movable.adapters[Split(8, 4)]))
    _move(edge, cloud, Split(8, 4), 3)  # the cloud's compression and exit come with the units
    assert _same(after["adapter"], _weights(edge.model.compress) + _weights(edge.model.exits))
    assert edge.model.compress is edge.movable.adapters[Split(8, 4)]["compress"]
    assert {id(p) for p in edge.movable.adapters[Split(8, 4)].parameters()} <= _params(edge)
    assert _same(after["decoder"], _weights(cloud.model.body[0]))
    _step(edge, cloud, images, labels)
    # Without keep_ready, as before: no compression is kept or sent.
    plain = MovableSide("cloud", SPEC, keep_ready=False, candidates=[Split(8, 4)])
    plain.adapters[Split(8, 4)] = decoder(replace(SPEC, split_point=8))
    assert plain.shadows(3) == [] and plain.shadow_loss(labels) is None


def test_a_cloud_told_the_candidates_keeps_them_ready_from_the_start():
    config = CloudConfig(split_policy="linucb", split_candidates="3,8", split_point=3, width=0.125)
    assert config.knows_splits and not CloudConfig(split_policy="linucb").knows_splits
    with pytest.raises(ValueError, match="split_point"):
        CloudConfig(split_policy="linucb", split_candidates="3,99")
    cloud = MovableSide("cloud", SPEC, candidates=[Split(*arm) for arm in config.split_arms()])
    assert cloud.shadows(3) == [Split(8, 4)]  # 3 is where it is
    optimizer = torch.optim.SGD(cloud.parameters(), lr=0.1)
    cloud.model.train()
    cloud.model(torch.rand(4, *cloud.model.feature_shape)).sum().backward()
    cloud.shadow_loss(torch.randint(0, 10, (4,))).backward()
    optimizer.step()
    assert "adapter" in torch.load(io.BytesIO(cloud.export(Split(8, 4), optimizer)), weights_only=True)


def test_the_adapters_kept_ready_learn_the_backbones_map_and_the_labels():
    # Fashion-MNIST; after a visit to split 8, the cloud at split 3 trains split 8's compression, exit and decoder.
    # Measured: their loss (relative error through the 4-bit codes + the exit's cross-entropy) fell from 3.41 at
    # the first step to 0.75-1.06 over the last 8 of 61 (a mean 0.32 x the first 4's).
    edge, cloud = _pair(OptimConfig(name="adam", lr=2e-3))
    data = batches(load_fashion_mnist("train").subset(32 * 64), 32, shuffle=True)
    moves, losses = 0, []
    for step, (images, labels) in enumerate(data):
        if step in (1, 2):
            moves += 1
            _move(edge, cloud, Split(8 if step == 1 else 3, 4), moves)
        _, payload = edge.train_step(images, labels)
        if step > 2:
            cloud.model.train()
            cloud.model(codec.decode(payload))
            losses.append(float(cloud.movable.shadow_loss(labels).detach()))
        cloud.train_step(payload)
    assert sum(losses[-8:]) / 8 < 0.5 * sum(losses[:4]) / 4, losses


def test_only_the_edge_takes_adapters_and_only_ones_that_fit():
    edge, cloud = _pair()
    _move(edge, cloud, Split(8, 4), 1)
    _move(edge, cloud, Split(3, 4), 2)
    blob = torch.load(io.BytesIO(cloud.movable.export(Split(8, 4), cloud.optimizer)), weights_only=True)
    assert "adapter" in blob

    def saved(state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()
    up = torch.load(io.BytesIO(edge.movable.export(Split(2, 4), edge.optimizer)), weights_only=True)
    with pytest.raises(ValueError, match="needs units"):  # the cloud never takes one
        cloud.move(Split(2, 4), 3, saved({**up, "adapter": blob["adapter"]}))
    wrong = dict(blob, adapter=blob[min(k for k in blob if k != "adapter")])
    with pytest.raises(ValueError, match="does not fit"):
        edge.move(Split(8, 4), 3, saved(wrong))
    assert edge.spec.split_point == 3
    edge.move(Split(8, 4), 3, saved(blob))
