"""Progressive answering on the edge (issue 12), without ROS.

The edge's exits built from the config, the per-frame decision through EdgeTrainer on fixed logits, which
frames' features go to the cloud under each offload policy, the arbiter serving a kept frame at once, and no
gradient crossing the split with several exits.
"""

from dataclasses import fields

import numpy as np
import pytest
import torch
import yaml

from hiertrain_ros.core import codec, config, progressive
from hiertrain_ros.core.archs import SplitSpec
from hiertrain_ros.core.config import EdgeConfig
from hiertrain_ros.core.fallback import REASON_SOLE, FallbackArbiter
from hiertrain_ros.core.models import build_cloud, build_edge
from hiertrain_ros.core.progressive import progressive_edge
from hiertrain_ros.core.training import CloudTrainer, EdgeTrainer, OptimConfig, ServingCopy
from hiertrain_ros.ros_common import config_file

SPEC = SplitSpec("vgg16", 3, width=0.125)
SURE, UNSURE = [9.0, 0.0, 0.0], [0.2, 0.1, 0.0]  # max softmax 0.9998 and 0.37


def _images(n=3, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _numbered(n=3):
    """Images whose first pixel is their index, so that :func:`_fixed` tells the frames apart."""
    images = _images(n)
    images[:, 0, 0, 0] = torch.arange(n, dtype=images.dtype)
    return images


def _fixed(trainer: EdgeTrainer, *exit_logits) -> None:
    """Make the trainer's edge answer :func:`_numbered` images with these logits, exit by exit.

    Each exit gets the rows of the frames that reach it; the features are the real model's.
    """
    real, last, reached = trainer.model.stages(), len(exit_logits) - 1, {}

    def layers(i):
        def run(x):
            reached[i] = x[:, 0, 0, 0].round().long()
            if i < last:
                return x
            for body, _ in real:
                x = body(x)
            return x
        return run

    def exit_(i):
        return lambda x: torch.tensor(exit_logits[i])[reached[i]]

    stages = [(layers(i), exit_(i)) for i in range(len(exit_logits))]
    trainer.model.stages = lambda: stages


def test_the_default_edge_is_todays_model_and_answers_as_todays_infer():
    cfg = EdgeConfig(width=0.125)
    assert (cfg.exits, cfg.exit_head) == (1, "")
    # The nodes offload only unsure frames by default (chosen from benchmarks/progressive_link_bench.py); the
    # trainer's own default, below, still sends every frame as today's infer does.
    assert cfg.offload_policy == "unsure"
    default = progressive_edge(SPEC, seed=0, exits=cfg.exits, placement=cfg.exit_placement, head=cfg.exit_head)
    today = build_edge(SPEC, seed=0)
    assert list(default.state_dict()) == list(today.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), today.state_dict().values()))
    edge = EdgeTrainer(default, SPEC, OptimConfig())
    images, stamps = _images(5), tuple((i, 0) for i in range(5))
    classes, confidence, payload = edge.infer(images, frame_stamps=stamps)
    got = edge.answer(images, frame_stamps=stamps)
    assert np.array_equal(got.classes, classes) and np.allclose(got.confidence, confidence)
    assert (got.exit_index == 0).all() and got.offloaded.all()
    assert got.payload.frame_stamps == stamps and got.payload.data == payload.data
    assert got.payload.shape == payload.shape and got.payload.scale == payload.scale


def test_the_first_sure_exit_answers_and_only_unsure_frames_are_offloaded():
    edge = EdgeTrainer(progressive_edge(SPEC, seed=0, exits=2), SPEC, OptimConfig(), offload="unsure", c_thr=0.9)
    # Frame 0: the first exit is sure; frame 1: only the second; frame 2: neither.
    _fixed(edge, [SURE, UNSURE, UNSURE], [[0.0, 9.0, 0.0], [0.0, 0.0, 9.0], [0.0, 0.3, 0.0]])
    stamps = ((1, 0), (2, 0), (3, 0))
    got = edge.answer(_numbered(), frame_stamps=stamps, robot_id="r1")
    assert got.exit_index.tolist() == [0, 1, 1]  # the unsure frame: the last exit's guess, served meanwhile
    assert got.classes.tolist() == [0, 2, 1]
    assert got.sure.tolist() == [True, True, False] and got.offloaded.tolist() == [False, False, True]
    expected = [torch.softmax(torch.tensor(z), 0).max().item() for z in (SURE, [0.0, 0.0, 9.0], [0.0, 0.3, 0.0])]
    assert got.confidence.tolist() == pytest.approx(expected)
    # Only the unsure frame's features travel, under its own stamp; the cloud decodes them.
    assert got.payload.shape[0] == 1 and got.payload.frame_stamps == ((3, 0),) and got.payload.robot_id == "r1"
    assert (got.payload.labels == -1).all()
    assert build_cloud(SPEC)(codec.decode(got.payload)).shape == (1, 10)

    edge.set_answering("always", 0.9, "max_softmax")  # today's: every frame goes, the answers are the same
    always = edge.answer(_numbered(), frame_stamps=stamps)
    assert always.offloaded.all() and always.payload.frame_stamps == stamps
    assert always.exit_index.tolist() == [0, 1, 1] and always.classes.tolist() == [0, 2, 1]
    edge.set_answering("never", 0.9, "max_softmax")
    never = edge.answer(_numbered(), frame_stamps=stamps)
    assert never.payload is None and not never.offloaded.any() and never.exit_index.tolist() == [0, 1, 1]
    edge.set_answering("unsure", 0.0, "max_softmax")  # c_thr 0: the first exit answers everything
    everything = edge.answer(_numbered(), frame_stamps=stamps)
    assert everything.payload is None and everything.exit_index.tolist() == [0, 0, 0]


def test_the_entropy_measure_decides_but_the_reported_confidence_stays_max_softmax():
    edge = EdgeTrainer(progressive_edge(SPEC, seed=0, exits=1), SPEC, OptimConfig(), offload="unsure", c_thr=0.9,
                       measure="entropy")
    spread = [3.0, 0.0, 0.0]  # max softmax 0.909 (sure by that), entropy measure 0.666 (unsure)
    _fixed(edge, [spread, SURE])
    got = edge.answer(_numbered(2))
    assert got.offloaded.tolist() == [True, False] and got.exit_index.tolist() == [0, 0]
    assert got.confidence[0] == pytest.approx(0.9094, abs=1e-4)
    edge.set_answering("unsure", 0.9, "max_softmax")
    assert not edge.answer(_numbered(2)).offloaded.any()


def test_bad_answering_settings_are_refused_naming_the_value():
    edge_model = build_edge(SPEC, seed=0)
    for kw, name in ((dict(offload="sometimes"), "sometimes"), (dict(c_thr=1.5), "1.5"),
                     (dict(measure="margin"), "margin")):
        with pytest.raises(ValueError, match=name):
            EdgeTrainer(edge_model, SPEC, OptimConfig(), **kw)
    with pytest.raises(ValueError, match="frame stamp"):
        EdgeTrainer(edge_model, SPEC, OptimConfig()).answer(_images(2), frame_stamps=((1, 0),))


def test_edge_config_checks_the_progressive_settings():
    assert (config.EXIT_PLACEMENTS, config.CONFIDENCE_MEASURES, config.OFFLOAD_POLICIES, config.MAX_EXITS) == (
        progressive.PLACEMENTS, progressive.CONFIDENCE, progressive.OFFLOAD_POLICIES, progressive.MAX_EXITS)
    EdgeConfig(exits=3, exit_placement="pareto", offload_policy="unsure", confidence_measure="entropy",
               exit_head="hiertrain_ros.core.models:linear_exit", confidence_threshold=0.8)
    for bad, shown in ((dict(exits=0), "0"), (dict(exits=4), "4"), (dict(exits=3, split_point=2), "split_point 2"),
                       (dict(exit_placement="cubic"), "cubic"), (dict(confidence_measure="margin"), "margin"),
                       (dict(offload_policy="sometimes"), "sometimes"), (dict(exit_head="nocolon"), "nocolon"),
                       (dict(confidence_threshold=1.2), "1.2")):
        with pytest.raises(ValueError, match=shown):
            EdgeConfig(**bad)
    assert {"confidence_threshold", "confidence_measure", "offload_policy"} <= set(EdgeConfig.LIVE)
    # The shipped params file names every new setting, at the dataclass's default.
    edge = yaml.safe_load(config_file("edge_cloud.yaml").read_text())["edge_node"]["ros__parameters"]
    defaults = {f.name: f.default for f in fields(EdgeConfig)}
    for name in ("exits", "exit_placement", "exit_head", "confidence_threshold", "confidence_measure",
                 "offload_policy"):
        assert edge[name] == defaults[name], name


def test_exits_from_the_config_build_with_a_user_head_and_a_bad_head_fails_clearly():
    spec = SplitSpec("vgg16", 7, width=0.125)
    for how in ("linear", "pareto"):
        edge = progressive_edge(spec, seed=0, exits=3, placement=how, head="hiertrain_ros.core.models:linear_exit")
        assert len(edge.exits) == 3 and edge.exit_ends
    with pytest.raises(ValueError, match="cannot import"):
        progressive_edge(spec, exits=2, head="no_such_module_xyz:head")
    with pytest.raises(ValueError, match="cubic"):
        progressive_edge(spec, exits=1, placement="cubic")


def test_the_arbiter_serves_a_kept_frame_at_once_and_an_offloaded_one_waits():
    now = [100.0]
    arb = FallbackArbiter(heartbeat_timeout_s=0.3, cloud_grace_s=5.0, clock=lambda: now[0])
    arb.heartbeat()
    assert arb.on_edge(1, "kept", 3, 0.99, offloaded=False) == ["kept"]  # no wait: no cloud answer will come
    assert arb.on_edge(2, "sent", 3, 0.5) == []  # as before: waits for the cloud's
    assert arb.on_cloud(2, "cloud") == ["cloud"]
    assert arb.on_cloud(1, "late") == [] and arb.late_cloud == 1  # a kept frame is never answered twice
    assert arb.on_edge(1, "again", 3, 0.99, offloaded=False) == []
    assert arb.not_offloaded == 1 and arb.reasons[REASON_SOLE] == 2


@pytest.mark.parametrize("arch,exit_weights", [("vgg16", ()), ("resnet18", ()), ("vgg16", (0.25, 0.5, 2.0)),
                                          ("resnet18", (0.25, 0.5, 2.0))])
def test_no_gradient_crosses_the_split_with_three_exits(arch, exit_weights):
    spec = SplitSpec(arch, 3, width=0.125)
    edge = EdgeTrainer(progressive_edge(spec, seed=0, exits=3, placement="pareto"), spec, OptimConfig(),
                       exit_weights=exit_weights)
    # With weights, the cloud has early exits and weights of its own too.
    cloud = (CloudTrainer(progressive.progressive_cloud(spec, seed=0, exits=2), spec, OptimConfig(),
                          exit_weights=(0.5, 1.5)) if exit_weights else CloudTrainer(build_cloud(spec, seed=0), spec,
                                                                                 OptimConfig()))
    images = _images(8)
    labels = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1))
    _, payload = edge.train_step(images, labels)
    assert len(edge.model.exits) == 3 and all(p.grad is not None for p in edge.model.exits.parameters())
    grads = {n: p.grad.clone() for n, p in edge.model.named_parameters()}
    weights = {n: p.detach().clone() for n, p in edge.model.named_parameters()}
    assert codec.decode(payload).grad_fn is None
    before = [p.detach().clone() for p in cloud.model.parameters()]
    cloud.train_step(payload)
    for n, p in edge.model.named_parameters():
        assert torch.equal(p.grad, grads[n]) and torch.equal(p.detach(), weights[n]), n
    assert any(not torch.equal(p.detach(), b) for p, b in zip(cloud.model.parameters(), before))
    # The cloud's backward from a fresh inference payload leaves a new edge's gradients None.
    fresh = EdgeTrainer(progressive_edge(spec, seed=0, exits=3), spec, OptimConfig(), offload="always")
    answers = fresh.answer(images)
    features = codec.decode(answers.payload).requires_grad_(True)
    cloud.model(features).sum().backward()
    assert all(p.grad is None for p in fresh.model.parameters())


def _exit_losses(model, inputs, labels, *, edge: bool) -> list[float]:
    """Each exit's cross-entropy on one training-mode forward pass (what a step's loss is made of)."""
    model.train()
    with torch.no_grad():
        exits = model.forward_exits(inputs)[1] if edge else model.forward_exits(inputs)
        return [float(torch.nn.functional.cross_entropy(z, labels)) for z in exits]


def test_exit_weights_weigh_each_exits_loss_and_a_zero_weight_leaves_its_head_untouched():
    images, labels = _images(8), torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(3))
    plain = EdgeTrainer(progressive_edge(SPEC, seed=0, exits=3), SPEC, OptimConfig())
    assert plain.exit_weights == (1.0, 1.0, 1.0)  # the default: the plain sum, as before the parameter
    losses = _exit_losses(plain.model, images, labels, edge=True)
    assert plain.train_step(images, labels)[0].loss == pytest.approx(sum(losses), rel=1e-5)

    weighted = EdgeTrainer(progressive_edge(SPEC, seed=0, exits=3), SPEC, OptimConfig(), exit_weights=[0, 0.5, 2])
    head = [p.detach().clone() for p in weighted.model.exits[0].parameters()]
    others = [p.detach().clone() for p in weighted.model.exits[1:].parameters()]
    result, _ = weighted.train_step(images, labels)
    assert result.loss == pytest.approx(0.5 * losses[1] + 2 * losses[2], rel=1e-5)
    assert all(p.grad is None and torch.equal(p.detach(), b) for p, b in zip(weighted.model.exits[0].parameters(),
                                                                              head))
    assert all(not torch.equal(p.detach(), b) for p, b in zip(weighted.model.exits[1:].parameters(), others))

    # The cloud: its first early exit at weight 0 stays, the others train; a lone output's weight scales its loss.
    edge = EdgeTrainer(build_edge(SPEC, seed=0), SPEC, OptimConfig())
    _, payload = edge.train_step(images, labels)
    cloud = CloudTrainer(progressive.progressive_cloud(SPEC, seed=0, exits=3), SPEC, OptimConfig(),
                         exit_weights=(0.0, 1.0, 3.0))
    torch.manual_seed(0)  # the same dropout masks in both forward passes
    losses = _exit_losses(cloud.model, codec.decode(payload), labels, edge=False)
    head = [p.detach().clone() for p in cloud.model.exits[0].parameters()]
    torch.manual_seed(0)
    assert cloud.train_step(payload).loss == pytest.approx(losses[1] + 3 * losses[2], rel=1e-5)
    assert all(p.grad is None and torch.equal(p.detach(), b) for p, b in zip(cloud.model.exits[0].parameters(), head))
    assert all(p.grad is not None for p in cloud.model.exits[1].parameters())
    one = CloudTrainer(build_cloud(SPEC, seed=0), SPEC, OptimConfig())
    half = CloudTrainer(build_cloud(SPEC, seed=0), SPEC, OptimConfig(), exit_weights=[0.5])
    torch.manual_seed(0)
    halved = half.train_step(payload).loss
    torch.manual_seed(0)
    assert halved == pytest.approx(0.5 * one.train_step(payload).loss, rel=1e-5)


def test_bad_exit_weights_fail_clearly_in_the_trainers_and_the_configs():
    from hiertrain_ros.core.config import CloudConfig

    edge_model = progressive_edge(SPEC, seed=0, exits=3)
    for bad, shown in (([1.0, 1.0], r"one weight per exit \(3\), got 2"), ([1, float("nan"), 1], "nan"),
                       ([1, -0.5, 1], "-0.5"), ([0, 0, 0], "not all be 0"), ("1,1,1", "list of numbers"),
                       ([1, "x", 1], "list of numbers")):
        with pytest.raises(ValueError, match=shown):
            EdgeTrainer(edge_model, SPEC, OptimConfig(), exit_weights=bad)
    with pytest.raises(ValueError, match=r"one weight per exit \(1\)"):
        CloudTrainer(build_cloud(SPEC, seed=0), SPEC, OptimConfig(), exit_weights=(1.0, 1.0))
    assert EdgeConfig(exits=2, exit_weights=[1, 0.5]).exit_weights == (1.0, 0.5)
    for cls, bad, shown in ((EdgeConfig, dict(exits=2, exit_weights=(1.0,)), r"\(2\), got 1"),
                            (EdgeConfig, dict(exit_weights=(0.0,)), "not all be 0"),
                            (CloudConfig, dict(exits=2, exit_weights=(1.0, float("inf"))), "inf")):
        with pytest.raises(ValueError, match=shown):
            cls(**bad)
    # The shipped params file leaves the setting unset (every exit weighs 1.0): an empty list there arrives as an
    # untyped value, which rclpy cannot declare from overrides.  A commented-out line shows it; uncommented, its
    # example is a valid setting.
    text = config_file("edge_cloud.yaml").read_text()
    shipped = yaml.safe_load(text)
    examples = [yaml.safe_load(line.split("#")[1])["exit_weights"] for line in text.splitlines()
                if line.strip().startswith("# exit_weights:")]
    assert len(examples) == 2, examples  # one in edge_node's section, one in cloud_node's
    for (node, cls), example in zip((("edge_node", EdgeConfig), ("cloud_node", CloudConfig)), examples):
        assert "exit_weights" not in shipped[node]["ros__parameters"] and cls().exit_weights == ()
        assert cls(exits=len(example), exit_weights=example).exit_weights == tuple(example)


def test_exit_weights_reach_the_config_as_ros_parameters(tmp_path):
    import rclpy
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from hiertrain_ros.ros_common import declare_config

    override = tmp_path / "weights.yaml"
    override.write_text("edge_node:\n  ros__parameters:\n    exits: 3\n    exit_weights: [0.5, 0.0, 1.0]\n"
                        "cloud_node:\n  ros__parameters:\n    exit_weights: [2, 1]\n"
                        "camera_sim:\n  ros__parameters:\n    exit_weights: []\n")
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(config_file("edge_cloud.yaml")), "--params-file",
                     str(override)], context=context)
    nodes = []
    try:
        nodes.append(Node("edge_node", context=context))
        assert declare_config(nodes[-1], EdgeConfig).exit_weights == (0.5, 0.0, 1.0)
        nodes.append(Node("cloud_node", context=context))  # one exit, two weights: refused at start-up
        with pytest.raises(ValueError, match=r"one weight per exit \(1\), got 2"):
            declare_config(nodes[-1], config.CloudConfig)
        nodes.append(Node("fallback_node", context=context))  # not given (the shipped file leaves it unset)
        assert declare_config(nodes[-1], EdgeConfig).exit_weights == ()
        assert nodes[-1].get_parameter("exit_weights").type_ == Parameter.Type.NOT_SET  # not a byte array
        nodes.append(Node("camera_sim", context=context))  # an explicit [] arrives unset: the default too
        assert declare_config(nodes[-1], EdgeConfig).exit_weights == ()
        # The shipped file alone declares from overrides too (as test_launch_files reads it): no untyped value.
        for name in ("edge_node", "cloud_node"):
            nodes.append(Node(name, context=context, use_global_arguments=False,
                              cli_args=["--ros-args", "--params-file", str(config_file("edge_cloud.yaml"))],
                              automatically_declare_parameters_from_overrides=True))
            assert not nodes[-1].has_parameter("exit_weights") and nodes[-1].get_parameter("exits").value == 1
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=context)


def test_trained_one_exit_weights_start_a_three_exit_edge(tmp_path):
    from hiertrain_ros.core import checkpoint

    trained = EdgeTrainer(build_edge(SPEC, seed=0), SPEC, OptimConfig())  # as hiertrain train --save writes it
    checkpoint.save_trained(tmp_path, SPEC, {"edge": trained.model})
    weights, fresh = checkpoint.load_init(tmp_path, "edge", SPEC)
    edge = EdgeTrainer(progressive_edge(SPEC, seed=1, exits=3), SPEC, OptimConfig())
    edge.load_weights(weights, fresh)
    state = edge.model.state_dict()
    assert torch.equal(state["exits.2.1.weight"], weights["exits.0.1.weight"])  # the trained exit is the last
    assert all(torch.equal(state[k], v) for k, v in weights.items() if not k.startswith("exits."))
    one = EdgeTrainer(progressive_edge(SPEC, seed=1), SPEC, OptimConfig())  # the default loads as before
    one.load_weights(weights, fresh)
    assert all(torch.equal(one.model.state_dict()[k], v) for k, v in weights.items())


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_cloud_exits_sit_after_the_split_and_the_default_cloud_is_todays(arch):
    spec = SplitSpec(arch, 3, width=0.125)
    today = build_cloud(spec, seed=0)
    default = progressive.progressive_cloud(spec, seed=0)
    assert not default.exits and list(default.state_dict()) == list(today.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), today.state_dict().values()))
    for k in (2, 3):
        linear, pareto = progressive.cloud_exits(spec, k, "linear"), progressive.cloud_exits(spec, k, "pareto")
        assert len(linear) == len(pareto) == k - 1 and all(p > 3 for p in linear + pareto)
        assert all(p <= q for p, q in zip(pareto, linear)), (pareto, linear)
        cloud = progressive.progressive_cloud(spec, seed=0, exits=k, placement="pareto")
        x = torch.randn(2, *spec.feature_shape)
        logits = cloud.eval().forward_exits(x)
        assert len(logits) == k and all(z.shape == (2, 10) for z in logits)
        assert torch.allclose(logits[-1], cloud(x))  # the last exit is the network's output
    with pytest.raises(ValueError, match="after the split"):
        build_cloud(spec, exits=(2,))


def test_the_cloud_answers_from_its_first_sure_exit_and_trains_every_exit():
    edge = EdgeTrainer(build_edge(SPEC, seed=0), SPEC, OptimConfig())
    cloud = CloudTrainer(progressive.progressive_cloud(SPEC, seed=0, exits=3), SPEC, OptimConfig(), c_thr=0.9)
    # Frame 0: the cloud's first exit is sure; frame 1: its second; frame 2: none (the network's output answers).
    exit_logits = ([SURE, UNSURE, UNSURE], [UNSURE, [0.0, 9.0, 0.0], UNSURE], [UNSURE, UNSURE, [0.0, 0.0, 0.5]])
    reached = []  # the frames (rows) each stage's layers saw

    def layers(i):
        def run(x):
            x = torch.arange(len(x)) if i == 0 else x  # from here on the "features" are the frames' rows
            reached.append(x.tolist())
            return x
        return run

    stages = [(layers(i), lambda rows, z=z: torch.tensor(z)[rows]) for i, z in enumerate(exit_logits)]
    real_stages, cloud.model.stages = cloud.model.stages, lambda: stages
    payload = edge.answer(_images()).payload
    classes, confidence, index = cloud.predict_exits(payload)
    assert index.tolist() == [0, 1, 2] and classes.tolist() == [0, 1, 2]
    assert confidence[0] == pytest.approx(torch.softmax(torch.tensor(SURE), 0).max().item())
    assert reached == [[0, 1, 2], [1, 2], [2]]  # a frame answered early skips the later layers
    cloud.set_answering(0.0, "max_softmax")
    assert cloud.predict_exits(payload)[2].tolist() == [0, 0, 0]
    cloud.model.stages = real_stages
    sizes = []  # the real layers: at c_thr 0 the first exit answers every frame and the last unit sees none
    cloud.model.body[-1].register_forward_hook(lambda module, args, out: sizes.append(len(out)))
    assert cloud.predict_exits(payload)[2].tolist() == [0, 0, 0] and sizes == [0]
    plain = CloudTrainer(build_cloud(SPEC, seed=0), SPEC, OptimConfig())  # no early exits: exit 0 is the output
    assert plain.predict_exits(payload)[2].tolist() == [0, 0, 0]
    assert plain.predict_exits(payload)[0].tolist() == plain.predict(payload)[0].tolist()

    cloud = CloudTrainer(progressive.progressive_cloud(SPEC, seed=0, exits=3), SPEC, OptimConfig())
    labels = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    _, train_payload = edge.train_step(_images(8), labels)
    edge_grads = {n: p.grad.clone() for n, p in edge.model.named_parameters()}
    cloud.train_step(train_payload)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cloud.model.exits.parameters())
    assert all(torch.equal(p.grad, edge_grads[n]) for n, p in edge.model.named_parameters())
    serving_answers = cloud.predict_exits(payload, serving=ServingCopy(cloud.model, refresh_s=0.0))
    assert [a.tolist() for a in serving_answers] == [a.tolist() for a in cloud.predict_exits(payload)]


def test_cloud_config_checks_its_exits():
    from hiertrain_ros.core.config import CloudConfig

    assert CloudConfig().exits == 1 and set(CloudConfig.LIVE) == {"confidence_threshold", "confidence_measure"}
    CloudConfig(exits=3, exit_placement="pareto")
    for bad, shown in ((dict(exits=4), "4"), (dict(exits=2, split_point=12), "split_point 12"),
                       (dict(exit_head="x"), "'x'"), (dict(confidence_threshold=-0.1), "-0.1"),
                       (dict(exit_placement="cubic"), "cubic")):
        with pytest.raises(ValueError, match=shown):
            CloudConfig(**bad)
    cloud = yaml.safe_load(config_file("edge_cloud.yaml").read_text())["cloud_node"]["ros__parameters"]
    defaults = {f.name: f.default for f in fields(CloudConfig)}
    for name in ("exits", "exit_placement", "exit_head", "confidence_threshold", "confidence_measure"):
        assert cloud[name] == defaults[name], name


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_answering_exit_by_exit_gives_the_answers_of_all_exits_and_stops_a_sure_frame_early(arch):
    spec = SplitSpec(arch, 3, width=0.125)
    model = progressive_edge(spec, seed=0, exits=3).eval()
    images = _images(16)
    with torch.no_grad():
        features, exits = model.forward_exits(images)
    for c_thr in (0.0, 0.12, 0.15, 1.0):
        expected = progressive.answers(exits, c_thr)
        for stop in (True, False):
            *got, reached, rows = progressive.answer_early(model.stages(), images, c_thr, stop=stop)
            assert all(np.array_equal(g, e) for g, e in zip(got[::2], expected[::2])), (c_thr, stop)  # class, exit
            assert np.array_equal(got[3], expected[3]) and np.allclose(got[1], expected[1], atol=1e-6)
            # Without the early stop every frame reaches the end; with it, those no earlier exit was sure about.
            assert rows.tolist() == (list(range(16)) if not stop else np.flatnonzero(expected[2] == 2).tolist())
            assert torch.allclose(reached, features[rows], atol=1e-5)

    sizes = []
    model.compress.register_forward_hook(lambda module, args, out: sizes.append(len(out)))
    edge = EdgeTrainer(model, spec, OptimConfig(), offload="unsure", c_thr=0.0)  # the first exit answers all
    assert edge.answer(images).payload is None and sizes[-1] == 0
    edge.set_answering("always", 0.0, "max_softmax")  # every frame's features are sent: no early stop
    assert edge.answer(images).payload.shape[0] == 16 and sizes[-1] == 16
