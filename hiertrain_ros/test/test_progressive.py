"""Progressive inference's core (core.progressive): exit placement, the decision, user heads, the offload price."""

import pytest
import torch

from hiertrain_ros.core.archs import SplitSpec
from hiertrain_ros.core.models import build_edge, linear_exit
from hiertrain_ros.core.progressive import Decision, decide, edge_exits, load_head, offload_cost, place_exits


def test_linear_spreads_exits_evenly_and_pareto_crowds_the_cheap_start():
    cost = [1, 2, 3, 4, 5, 6]
    assert place_exits(cost, 3, "linear") == [2, 4, 6]
    assert place_exits(cost, 1, "pareto") == [6]
    # Pareto quantiles at 4 % and 15 % of the compute: the first two positions.
    assert place_exits(cost, 3, "pareto") == [1, 2, 6]
    # Most of the compute late: Pareto's first exit (8 % of it) is still the first position; linear's the third.
    assert place_exits([10, 11, 12, 50, 90, 100], 2, "pareto") == [1, 6]
    assert place_exits([10, 11, 12, 50, 90, 100], 2, "linear") == [3, 6]
    assert place_exits([1, 2, 3], 3, "pareto") == [1, 2, 3]
    for bad in (dict(k=0), dict(k=4), dict(how="random")):
        with pytest.raises(ValueError):
            place_exits(cost, **{"k": 2, "how": "linear", **bad})


@pytest.mark.parametrize("arch, split", [("vgg16", 7), ("resnet18", 5)])
def test_edge_exits_on_both_architectures_build_and_answer(arch, split):
    spec = SplitSpec(arch, split_point=split, width=0.25)
    for k in (1, 2, 3):
        linear, pareto = edge_exits(spec, k, "linear"), edge_exits(spec, k, "pareto")
        assert len(linear) == len(pareto) == k - 1
        assert all(1 <= p < split for p in linear + pareto)
        assert all(p <= q for p, q in zip(pareto, linear)), (pareto, linear)  # Pareto is never later
        for exits in (linear, pareto):
            edge = build_edge(spec, seed=0, exits=exits)
            _, logits = edge.forward_exits(torch.randn(2, 3, 32, 32))
            assert len(logits) == k and all(t.shape == (2, 10) for t in logits)


def test_the_first_sure_exit_answers_and_an_unsure_frame_is_offloaded():
    sure, unsure = [8.0, 0.0, 0.0], [0.1, 0.0, 0.0]
    first = torch.tensor([sure, unsure, unsure])
    last = torch.tensor([[0.0, 9.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.2, 0.0]])
    got = decide([first, last], c_thr=0.9)
    assert [d.exit for d in got] == [0, 1, None]
    assert [d.class_id for d in got] == [0, 1, 1]  # an offloaded frame keeps the last exit's guess
    assert got[0].confidence == pytest.approx(torch.softmax(torch.tensor(sure), 0).max().item())
    # One minus the normalised entropy is stricter than the top probability when the rest is spread out.
    spread = torch.tensor([[3.0, 0.0, 0.0]])  # top 0.909, entropy measure 0.666
    assert decide([spread], c_thr=0.9)[0].exit == 0
    assert decide([spread], c_thr=0.9, measure="entropy")[0] == Decision(None, 0, pytest.approx(0.666, abs=1e-3))
    assert decide([first], c_thr=0.0)[2] == Decision(0, 0, pytest.approx(0.3559, abs=1e-4))  # c_thr 0: all answer
    with pytest.raises(ValueError, match="c_thr"):
        decide([first], c_thr=1.5)
    with pytest.raises(ValueError, match="confidence"):
        decide([first], c_thr=0.5, measure="margin")


def test_a_user_head_loads_from_a_dotted_path_and_a_bad_one_says_why():
    assert load_head("hiertrain_ros.core.models:linear_exit") is linear_exit
    spec = SplitSpec("vgg16", split_point=7, width=0.25)
    head = load_head("hiertrain_ros.core.models:linear_exit")
    edge = build_edge(spec, exits=edge_exits(spec, 2), exit_head=head)
    assert len(edge.exits) == 2
    for bad, why in (("linear_exit", "module:factory"), ("no_such_module_xyz:f", "cannot import"),
                     ("hiertrain_ros.core.models:nothing", "no callable")):
        with pytest.raises(ValueError, match=why):
            load_head(bad)


def test_offload_cost_adds_compute_and_transfer():
    # 36 ms of a $3.60/h cloud and 2 kB at $0.09/GB.
    assert offload_cost(0.036, 2000, price_per_cloud_hour=3.6, price_per_gb=0.09) == pytest.approx(3.6e-5 + 1.8e-7)
    with pytest.raises(ValueError):
        offload_cost(-1, 0, price_per_cloud_hour=1, price_per_gb=1)


def test_split_by_memory_share_and_by_latency_budget():
    from hiertrain_ros.core.progressive import split_by_latency, split_by_memory, training_memory

    for arch in ("vgg16", "resnet18"):
        *upto, whole = training_memory(arch, width=0.25)
        assert upto == sorted(upto) and upto[-1] < whole
        p = split_by_memory(arch, 0.7, width=0.25)
        assert upto[p - 1] <= 0.7 * whole and (p == len(upto) or upto[p] > 0.7 * whole)
        assert split_by_memory(arch, 0.9, width=0.25) >= p
    with pytest.raises(ValueError, match="memory"):
        split_by_memory("vgg16", 0.01, width=0.25)
    profile = {"layers": [{"forward_s": 0.001}, {"forward_s": 0.002}, {"forward_s": 0.004}, {"forward_s": 0.1}]}
    assert split_by_latency(profile, 0.0035) == 2 and split_by_latency(profile, 1.0) == 3
    assert split_by_latency(profile, 0.0035, slowdown=2) == 1
    with pytest.raises(ValueError, match="ms"):
        split_by_latency(profile, 0.0005)
