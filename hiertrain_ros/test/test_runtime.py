import json
import math

import numpy as np
import pytest

from hiertrain_ros import cli
from hiertrain_ros.core.data import FASHION_MNIST_DIR, Frames
from hiertrain_ros.core.models import SplitSpec, build_model, count_params, positions, split_model
from hiertrain_ros.core.planner import InProcessTrainer, edge_param_bytes, select_position
from hiertrain_ros.core.runtime import (LINK_PRESETS, PAPER_CLOUD_FLOPS, PAPER_EDGE_FLOPS, RAW_INPUT_BITS,
                                        RuntimeParams, beta_for, cloud_backward_time, comm_time,
                                        edge_backward_time, estimate_epoch, fullcloud_time, hierarchical_time,
                                        measure_forward_times, parse_link, pipelined_time)

P = RuntimeParams(alpha=2.0, beta=18.0, s_edge=1e9, s_cloud=1e10, s_net=1e6)


# ---- Eq. 1-5 on hand-computed numbers ------------------------------------------------------------

def test_eq2_edge_backward():
    # 2 * 1.0 s + 10 updates * 18 FLOP * 1e6 params / 1e9 FLOP/s = 2 + 0.18
    assert edge_backward_time(1.0, 1_000_000, P, updates=10) == pytest.approx(2.18)
    assert edge_backward_time(1.0, 1_000_000, P) == pytest.approx(2.018)


def test_eq3_cloud_backward_uses_cloud_forward():
    # 2 * 0.5 s + 10 * 18 * 2e6 / 1e10 = 1 + 0.036
    assert cloud_backward_time(0.5, 2_000_000, P, updates=10) == pytest.approx(1.036)
    assert cloud_backward_time(0.5, 0, P) == pytest.approx(1.0)


def test_eq4_comm():
    assert comm_time(2e6, 1e6) == pytest.approx(2.0)
    # Table I sanity check: CIFAR-10 (50,000 raw 24576-bit images) over 3G.
    assert comm_time(50000 * 24576, LINK_PRESETS["3g"]) == pytest.approx(1117.09, abs=0.01)
    with pytest.raises(ValueError):
        comm_time(1.0, 0.0)


def test_eq1_cloud_path_dominates():
    # 1 + max(2 + 0.5 + 1.036, 2.18) = 1 + 3.536
    assert hierarchical_time(1.0, 2.18, 2.0, 0.5, 1.036) == pytest.approx(4.536)


def test_eq1_edge_backward_dominates():
    # 1 + max(2 + 0.5 + 1, 10) = 11: the edge's backward pass hides the whole cloud path
    assert hierarchical_time(1.0, 10.0, 2.0, 0.5, 1.0) == pytest.approx(11.0)
    # the cloud path no longer matters while it stays below the edge backward
    assert hierarchical_time(1.0, 10.0, 5.0, 0.5, 1.0) == pytest.approx(11.0)


def test_eq5_fullcloud():
    assert fullcloud_time(3.0, 0.5, 1.0) == pytest.approx(4.5)


def test_params_defaults_and_validation():
    p = RuntimeParams()
    assert (p.alpha, p.beta, p.s_edge, p.s_cloud, p.s_net) == (2.0, 18.0, 863.2e9, 13.45e12, 1.1e6)
    assert beta_for("adam") == 18 and beta_for("SGD") == 2
    with pytest.raises(ValueError):
        beta_for("rmsprop")
    with pytest.raises(ValueError):
        RuntimeParams(s_net=0)
    with pytest.raises(ValueError):
        RuntimeParams(alpha=-1)


def test_parse_link():
    assert parse_link("3g") == 1.1e6
    assert parse_link("4G") == 5.85e6
    assert parse_link("2e6") == 2e6
    assert parse_link(1500000) == 1.5e6
    for bad in ("5g", "-1", "0", "nan", "fast"):
        with pytest.raises(ValueError):
            parse_link(bad)


# ---- one epoch -----------------------------------------------------------------------------------

SPEC = SplitSpec("vgg16", 3, width=0.25)


@pytest.fixture(scope="module")
def vgg():
    return build_model("vgg16", width=0.25)


def test_estimate_epoch_matches_equations(vgg):
    fwd = (0.01, 0.02, 0.05)  # s per batch of 32
    est = estimate_epoch(SPEC, 50000, 32, P, fwd, edge_speed_ratio=3.0, model=vgg)
    edge, cloud = split_model(vgg, SPEC)
    n, updates = 50000 / 32, math.ceil(50000 / 32)
    assert est["updates"] == updates == 1563
    assert est["edge_params"] == count_params(edge) and est["full_params"] == count_params(vgg)
    assert est["t_edge_fwd"] == pytest.approx(0.01 * 3.0 * n)
    assert est["t_cloud_fwd"] == pytest.approx(0.02 * n)
    assert est["t_edge_bwd"] == pytest.approx(2 * 0.03 * n + updates * 18 * count_params(edge) / 1e9)
    assert est["t_cloud_bwd"] == pytest.approx(2 * 0.02 * n + updates * 18 * count_params(cloud) / 1e10)
    # position 3 sends 16 x 16 x 16 4-bit codes (16384 bits) + one 32-bit scale per batch
    assert est["payload_bits_per_sample"] == pytest.approx(16384 + 1)
    assert est["t_comm"] == pytest.approx(50000 * 16385 / 1e6)
    assert est["t_full_comm"] == pytest.approx(50000 * RAW_INPUT_BITS / 1e6)
    assert est["T_hier"] == pytest.approx(hierarchical_time(est["t_edge_fwd"], est["t_edge_bwd"], est["t_comm"],
                                                            est["t_cloud_fwd"], est["t_cloud_bwd"]))
    assert est["T_full"] == pytest.approx(est["t_full_comm"] + 0.05 * n
                                          + 2 * 0.05 * n + updates * 18 * count_params(vgg) / 1e10)
    assert est["ratio"] == pytest.approx(est["T_hier"] / est["T_full"])


def test_default_edge_speed_ratio_is_cloud_over_edge(vgg):
    est = estimate_epoch(SPEC, 320, 32, RuntimeParams(), (0.01, 0.02, 0.05), model=vgg)
    assert est["edge_speed_ratio"] == pytest.approx(PAPER_CLOUD_FLOPS / PAPER_EDGE_FLOPS)
    assert est["t_edge_fwd"] == pytest.approx(0.01 * 10 * 13.45e12 / 863.2e9)


def test_table1_fullcloud_link_difference(vgg):
    """Same compute, 3G vs 4G: the full-cloud gap is pure communication, as in Table I (1210.05 - 303.02)."""
    fwd = (0.001, 0.001, 0.002)
    t3 = estimate_epoch(SPEC, 50000, 32, RuntimeParams(s_net=LINK_PRESETS["3g"]), fwd, model=vgg)
    t4 = estimate_epoch(SPEC, 50000, 32, RuntimeParams(s_net=LINK_PRESETS["4g"]), fwd, model=vgg)
    assert t3["t_full_comm"] == pytest.approx(1117.09, abs=0.01)
    assert t3["T_full"] - t4["T_full"] == pytest.approx(1210.05 - 303.02, abs=0.1)


def test_table1_vgg16_fit_on_3g_predicts_4g(vgg):
    """Fit the compute time to the paper's 3G calculations; the 4G calculations follow from Eq. 1-5.

    VGG-16 at position 3 sends 16384 bits per sample (paper Fig. 7; ours adds 32 bits of scale
    per batch); Table I's calculated runtimes are 808.65 s / 203.96 s (hierarchical) and
    1210.05 s / 303.02 s (full-cloud) for 3G / 4G.
    """
    n = 50000 / 32
    comm3 = 50000 * 16384 / LINK_PRESETS["3g"]
    hier_compute = 808.65 - comm3                     # T_edge,fwd + T_cloud,fwd + T_cloud,bwd
    full_compute = 1210.05 - 50000 * RAW_INPUT_BITS / LINK_PRESETS["3g"]
    # no edge slowdown; the edge forward is negligible; alpha = 2 so compute = 3 x forward
    fwd = (1e-9, hier_compute / 3 / n, full_compute / 3 / n)
    params4 = RuntimeParams(beta=0.0, s_net=LINK_PRESETS["4g"])
    est4 = estimate_epoch(SPEC, 50000, 32, params4, fwd, edge_speed_ratio=1.0, model=vgg)
    assert est4["T_hier"] == pytest.approx(203.96, abs=0.1)
    assert est4["T_full"] == pytest.approx(303.02, abs=0.1)


def test_measure_forward_times_positive():
    spec = SplitSpec("resnet18", 2, width=0.125)
    t_edge, t_cloud, t_full = measure_forward_times(spec, 4, reps=1)
    assert t_edge > 0 and t_cloud > 0 and t_full > 0
    assert measure_forward_times(spec, 4, reps=1, include_full=False)[2] is None
    with pytest.raises(ValueError):
        measure_forward_times(spec, 0, reps=1)


# ---- Algorithm 1 with fake callables -------------------------------------------------------------

class Fakes:
    def __init__(self):
        self.calls = {"edge_bytes": [], "estimate": [], "measure": [], "accuracy": []}
        self.bytes = {p: 100 * p for p in range(1, 7)}
        self.est = {1: 10, 2: 20, 3: 30, 4: 90, 5: 5, 6: 5}
        self.meas = {1: 10, 2: 60, 3: 40, 4: 1, 5: 1, 6: 1}
        self.acc = {1: 0.9, 2: 0.99, 3: 0.8, 4: 0.99, 5: 0.99, 6: 0.99}

    def kwargs(self):
        def rec(name, table):
            def f(p):
                self.calls[name].append(p)
                return table[p]
            return f
        return {"edge_bytes": rec("edge_bytes", self.bytes), "estimate_runtime": rec("estimate", self.est),
                "measure_epoch": rec("measure", self.meas), "train_accuracy": rec("accuracy", self.acc)}


POS = [1, 2, 3, 4, 5, 6]


def test_planner_each_loop_filters():
    f = Fakes()
    r = select_position(POS, **f.kwargs(), edge_memory=450, max_runtime=50, min_accuracy=0.85)
    assert r.s1 == [1, 2, 3, 4]          # 500 and 600 bytes do not fit
    assert r.s2 == [1, 2, 3]             # estimate 90 s > 50 s
    assert r.s3 == [3, 1]                # measured 60 s > 50 s; sorted deepest first
    assert f.calls["accuracy"] == [3, 1]  # 3 is tried first but 0.8 < 0.85
    assert r.chosen == 1
    assert r.skipped == []
    assert r.edge_bytes[4] == 400 and r.estimated_s[4] == 90 and r.measured_s[2] == 60
    assert f.calls["estimate"] == [1, 2, 3, 4] and f.calls["measure"] == [1, 2, 3]
    assert json.dumps(r.to_dict())


def test_planner_deepest_first_stops_at_first_success():
    f = Fakes()
    r = select_position(POS, **f.kwargs(), edge_memory=450, max_runtime=50, min_accuracy=0.7)
    assert r.chosen == 3 and f.calls["accuracy"] == [3]


def test_planner_constraints_are_strict():
    f = Fakes()
    r = select_position(POS, **f.kwargs(), edge_memory=400, max_runtime=40, min_accuracy=0.9)
    assert r.s1 == [1, 2, 3]   # 400 bytes is not < 400
    assert r.s2 == [1, 2, 3]
    assert r.s3 == [1]         # measured 40 is not < 40
    assert r.chosen is None    # 0.9 is not > 0.9


def test_planner_nothing_qualifies():
    f = Fakes()
    r = select_position(POS, **f.kwargs(), edge_memory=450, max_runtime=50, min_accuracy=0.95)
    assert r.s3 == [3, 1] and r.chosen is None and f.calls["accuracy"] == [3, 1]
    r = select_position(POS, **Fakes().kwargs(), edge_memory=50)
    assert r.s1 == r.s2 == r.s3 == [] and r.chosen is None


def _boom(_):
    raise AssertionError("a skipped loop must not call its callable")


def test_planner_all_loops_skipped():
    r = select_position(POS, edge_bytes=_boom, estimate_runtime=_boom, measure_epoch=_boom, train_accuracy=_boom)
    assert r.skipped == ["loop1", "loop2", "loop3", "loop4"]
    assert r.s1 == r.s2 == POS and r.s3 == [6, 5, 4, 3, 2, 1]
    assert r.chosen == 6


def test_planner_single_loops_skipped():
    f = Fakes()
    r = select_position(POS, **{**f.kwargs(), "edge_bytes": _boom}, max_runtime=50, min_accuracy=0.85)
    assert r.skipped == ["loop1"] and r.s1 == POS
    assert r.s2 == [1, 2, 3, 5, 6] and r.s3 == [6, 5, 3, 1] and r.chosen == 6
    f = Fakes()
    r = select_position(POS, **{**f.kwargs(), "estimate_runtime": _boom, "measure_epoch": _boom},
                        edge_memory=450, min_accuracy=0.85)
    assert r.skipped == ["loop2", "loop3"] and r.s3 == [4, 3, 2, 1] and r.chosen == 4
    f = Fakes()
    r = select_position(POS, **{**f.kwargs(), "train_accuracy": _boom}, edge_memory=450, max_runtime=50)
    assert r.skipped == ["loop4"] and r.chosen == 3


def test_edge_param_bytes(vgg):
    edge, _ = split_model(vgg, SPEC)
    assert edge_param_bytes(SPEC, vgg) == 4 * count_params(edge)


def test_in_process_trainer_default_callables():
    rng = np.random.default_rng(0)
    frames = Frames(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 16), 10)
    trainer = InProcessTrainer(lambda p: SplitSpec("vgg16", p, width=0.0625), frames, frames,
                               epochs=2, batch_size=8, s_net=1e6)
    seconds = trainer.measure_epoch(2)
    info = trainer.results[2]
    # Two batches of 8 x 16384 bits + one scale each, before the default zstd coding shrinks them.
    assert 0 < info["wire_bits"] < 2 * (8 * 16384 + 32)
    assert info["epoch1_link_s"] == pytest.approx(info["wire_bits"] / 1e6)
    assert seconds == pytest.approx(info["epoch1_compute_s"] + info["epoch1_link_s"])
    accuracy = trainer.train_accuracy(2)
    assert 0.0 <= accuracy <= 1.0 and trainer.results[2]["final_accuracy"] == accuracy


# ---- CLI -----------------------------------------------------------------------------------------

def test_cli_estimate_all_positions(tmp_path, capsys):
    out = tmp_path / "est.json"
    rc = cli.main(["estimate", "--model", "vgg16", "--position", "all", "--link", "3g", "--json", str(out),
                   "--width", "0.0625", "--batch-size", "2", "--reps", "1", "--warmup", "1"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert [e["position"] for e in data["estimates"]] == positions("vgg16")
    for e in data["estimates"]:
        assert e["s_net"] == 1.1e6 and e["beta"] == 18.0
        assert e["T_hier"] > 0 and e["T_full"] > 0 and e["ratio"] == pytest.approx(e["T_hier"] / e["T_full"])
        assert e["t_full_comm"] == pytest.approx(1117.09, abs=0.01)
    assert "T_hier_s" in capsys.readouterr().out


def test_cli_estimate_bad_link_is_an_error():
    assert cli.main(["estimate", "--model", "resnet18", "--position", "2", "--link", "5g"]) == 2
    assert cli.main(["estimate", "--model", "resnet18", "--position", "99", "--link", "4g"]) == 2


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="Debian's dataset-fashion-mnist not installed")
def test_cli_plan_memory_only_with_plot(tmp_path, capsys):
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({"1": 0.8, "2": 0.85, "full-cloud": 0.9}))
    out = tmp_path / "plan.json"
    rc = cli.main(["plan", "--model", "resnet18", "--positions", "1,2,3", "--edge-memory", "175k",
                   "--link", "4g", "--width", "0.125", "--subset", "64", "--reps", "1", "--warmup", "1",
                   "--batch-size", "4",
                   "--json", str(out), "--plot", str(tmp_path / "plots"), "--accuracy-json", str(acc)])
    assert rc == 0
    data = json.loads(out.read_text())
    plan = data["plan"]
    assert plan["skipped"] == ["loop2", "loop3", "loop4"]
    assert plan["s1"] == [p for p in (1, 2, 3) if plan["edge_bytes"][str(p)] < 175_000] == [1]
    assert plan["chosen"] == (max(plan["s1"]) if plan["s1"] else None)
    assert all(p.endswith(".png") for p in data["plot"])
    assert len(list((tmp_path / "plots").glob("*.png"))) == 1
    assert "chosen position" in capsys.readouterr().out


def test_pipelined_time_is_fill_plus_slowest_stage():
    # 10 batches through stages of 1, 5 and 2 s per epoch: 0.8 s to fill, then 9 x 0.5 s
    assert pipelined_time((1.0, 5.0, 2.0), 10) == pytest.approx(0.8 + 9 * 0.5)
    assert pipelined_time((1.0, 5.0, 2.0), 1) == pytest.approx(8.0)  # one batch: nothing overlaps
    assert pipelined_time((1.0, 5.0, 2.0), 0.5) == pytest.approx(8.0)
    with pytest.raises(ValueError):
        pipelined_time((1.0,), 0)


def test_pipelined_estimate_is_never_above_eq1_and_bounded_by_the_link(vgg):
    params = RuntimeParams(s_net=LINK_PRESETS["3g"])
    est = estimate_epoch(SPEC, 50000, 32, params, (0.01, 0.02, 0.05), edge_speed_ratio=1.0, model=vgg)
    assert est["t_comm"] <= est["T_hier_pipelined"] <= est["T_hier"]
    assert est["t_full_comm"] <= est["T_full_pipelined"] <= est["T_full"]
    assert est["ratio_pipelined"] == pytest.approx(est["T_hier_pipelined"] / est["T_full_pipelined"])
