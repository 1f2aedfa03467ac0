import subprocess
import sys

import pytest
import torch

from hiertrain_ros.core import codec
from hiertrain_ros.core.models import SplitSpec, build_model
from hiertrain_ros.core.training import FullCloudTrainer, OptimConfig, ServingCopy, make_trainers, paper_optim

SPEC = SplitSpec("vgg16", 3, width=0.125)


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_cloud_backward_never_touches_edge(arch):
    spec = SplitSpec(arch, 3, width=0.125)
    edge, cloud = make_trainers(spec, paper_optim(arch))
    images, labels = _batch()
    _, payload = edge.train_step(images, labels)
    edge_grads = {n: p.grad.clone() for n, p in edge.model.named_parameters()}
    edge_params = {n: p.detach().clone() for n, p in edge.model.named_parameters()}
    before = {n: p.detach().clone() for n, p in cloud.model.named_parameters()}
    cloud.train_step(payload)
    for n, p in edge.model.named_parameters():
        assert torch.equal(p.grad, edge_grads[n]), n
        assert torch.equal(p.detach(), edge_params[n]), n
    assert any(not torch.equal(p.detach(), before[n]) for n, p in cloud.model.named_parameters())


def test_serving_copy_answers_like_the_model_and_follows_training_when_due():
    edge, cloud = make_trainers(SPEC, OptimConfig(lr=1e-2))
    now = [0.0]
    serving = ServingCopy(cloud.model, refresh_s=1.0, clock=lambda: now[0])
    images, labels = _batch()
    _, train_payload = edge.train_step(images, labels)
    _, _, payload = edge.infer(images)
    assert [a.tolist() for a in cloud.predict(payload, serving)] == [a.tolist() for a in cloud.predict(payload)]

    for _ in range(3):
        cloud.train_step(train_payload)
    assert cloud.model.training, "serving never switches the trained model to eval mode"
    assert not serving.follow(cloud.model), "not due yet"
    stale = next(serving.model.parameters()).clone()
    assert torch.equal(stale, next(serving.model.parameters()))
    now[0] = 1.5
    assert serving.follow(cloud.model)
    assert torch.equal(next(serving.model.parameters()), next(cloud.model.parameters()).detach())
    assert not torch.equal(stale, next(serving.model.parameters()))
    assert [a.tolist() for a in cloud.predict(payload, serving)] == [a.tolist() for a in cloud.predict(payload)]


def test_edge_step_updates_only_edge_and_payload_is_labelled():
    edge, cloud = make_trainers(SPEC, OptimConfig())
    first_seq = edge.seq + 1
    images, labels = _batch()
    cloud_before = [p.detach().clone() for p in cloud.model.parameters()]
    result, payload = edge.train_step(images, labels)
    assert result.samples == 8 and result.loss > 0
    assert payload.shape == (8, *edge.model.feature_shape)
    assert payload.labels.tolist() == labels.tolist()
    assert payload.model_hash == codec.model_hash(SPEC.model_id) and payload.seq == first_seq
    assert all(p.grad is None for p in cloud.model.parameters())
    assert all(torch.equal(a, b.detach()) for a, b in zip(cloud_before, cloud.model.parameters()))


def test_inference_helpers():
    edge, cloud = make_trainers(SPEC, OptimConfig())
    classes, confidence, payload = edge.infer(_batch(5)[0])
    assert classes.shape == (5,) and ((confidence > 0) & (confidence <= 1)).all()
    assert (payload.labels == -1).all()
    final, final_conf = cloud.predict(payload)
    assert final.shape == (5,) and ((final_conf > 0) & (final_conf <= 1)).all()
    with pytest.raises(ValueError, match="labels"):
        cloud.train_step(payload)  # unlabelled payloads are for inference only


def test_cloud_rejects_payload_from_another_split():
    edge, _ = make_trainers(SplitSpec("vgg16", 4, width=0.125), OptimConfig())
    _, cloud = make_trainers(SPEC, OptimConfig())
    _, payload = edge.train_step(*_batch())
    with pytest.raises(ValueError, match="split_point"):
        cloud.train_step(payload)


def test_checkpoint_round_trip_and_mismatch():
    edge, cloud = make_trainers(SPEC, paper_optim("vgg16"))
    edge.train_step(*_batch())
    state = edge.state_dict()
    fresh, _ = make_trainers(SPEC, paper_optim("vgg16"), seed=1)
    fresh.seq = 0  # as if its clock were behind: the checkpoint's seq still wins
    fresh.load_state_dict(state)
    assert fresh.step == 1 and fresh.seq == edge.seq
    for a, b in zip(edge.model.state_dict().values(), fresh.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="checkpoint"):
        cloud.load_state_dict(state)
    other, _ = make_trainers(SplitSpec("vgg16", 4, width=0.125), OptimConfig())
    with pytest.raises(ValueError, match="checkpoint"):
        other.load_state_dict(state)


def test_batch_seqs_never_repeat_across_restarts():
    edge, _ = make_trainers(SPEC, OptimConfig())
    _, first = edge.train_step(*_batch())
    restarted, _ = make_trainers(SPEC, OptimConfig())  # a restart without a checkpoint
    _, second = restarted.train_step(*_batch())
    assert second.seq > first.seq


def test_resnet_uses_sgd_with_cosine():
    trainer = FullCloudTrainer(build_model("resnet18", width=0.125), paper_optim("resnet18", 10), "r")
    assert isinstance(trainer.optimizer, torch.optim.SGD) and trainer.scheduler is not None
    trainer.train_step(*_batch())
    assert trainer.optimizer.param_groups[0]["lr"] < 0.1


def test_warmup_scales_the_first_steps_and_leaves_the_schedule_alone():
    def first_step_delta(warmup):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(4, 2))
        trainer = FullCloudTrainer(model, OptimConfig(name="sgd", lr=0.5, momentum=0.0, warmup_steps=warmup), "t")
        before = model[1].weight.detach().clone()
        trainer.train_step(torch.ones(3, 4), torch.tensor([0, 1, 0]))
        assert trainer.optimizer.param_groups[0]["lr"] == 0.5
        return (model[1].weight.detach() - before).abs().sum()

    assert first_step_delta(4) == pytest.approx(first_step_delta(0) / 4)


@pytest.mark.slow
def test_resnet_compression_layer_survives_the_first_steps_of_the_paper_lr():
    """Without warm-up, SGD at 0.1 killed every compression ReLU of this split within ten steps."""
    from hiertrain_ros.core.data import batches, load_dataset

    spec = SplitSpec("resnet18", 3, width=0.25, budget_bits=8192)
    torch.manual_seed(0)
    edge, cloud = make_trainers(spec, paper_optim("resnet18", 939), seed=0)
    train = load_dataset("fashion-mnist", "train").subset(10000)  # the order of `hiertrain train --subset 10000`
    for step, (images, labels) in enumerate(batches(train, 32, shuffle=True, seed=0)):
        _, payload = edge.train_step(images, labels)
        cloud.train_step(payload)
        if step == 40:
            break
    assert payload.scale > 0, "every feature of the last batch is 0: the compression layer died"


def test_core_imports_with_rclpy_blocked():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'sensor_msgs', 'hiertrain_interfaces'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import hiertrain_ros.core.models, hiertrain_ros.core.codec, hiertrain_ros.core.training, "
            "hiertrain_ros.core.data\n"
            "import pkgutil, importlib, hiertrain_ros.core as c\n"
            "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('hiertrain_ros.core.' + m.name)\n"
            "assert not [m for m in sys.modules if m.startswith('rclpy')]\n")
    subprocess.run([sys.executable, "-c", code], check=True)
