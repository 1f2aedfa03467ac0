"""HierTrain's time model and scheduler (core.hierschedule): hand-computed values, and the LP against brute force."""

import itertools
import random

import pytest

from hiertrain_ros.core.hierschedule import (ROLES, Layer, Links, ModelSizes, Overheads, Problem, all_on, baselines,
                                             joint_split, message_counts, problem_from_profiles, profile_layers,
                                             scaled, schedule)

# Two layers; the cloud is 10x the device, the edge 2x.
HAND = {"device": [Layer(1.0, 2.0, 0.1)] * 2, "edge": [Layer(0.5, 1.0, 0.05)] * 2,
        "cloud": [Layer(0.1, 0.2, 0.01)] * 2}
SIZES = ModelSizes(output_bits=(10.0, 5.0), param_bits=(1.0, 2.0), sample_bits=20.0)
LINKS = Links(device_edge=10.0, edge_cloud=5.0)  # device-cloud through the edge: 5


def test_time_model_matches_values_worked_by_hand():
    p = Problem(HAND, SIZES, LINKS, batch=4)
    # worker_o cloud, worker_s device, worker_l edge; m_s 1, m_l 2; (b_o, b_s, b_l) = (2, 1, 1).
    # T1f = max(2*(20/5 + 0.1), 1*(1 + 10/5), 1*(20/10 + 0.5)) = 8.2; T1b = max(2*0.2, 1*(2 + 2), 1*1) = 4
    # T2f = max(3*0.1, 1*(0.5 + 5/5)) = 1.5; T2b = max(3*0.2, 1*(1 + 1)) = 2; T3 = 0
    # T_update = max(0.02, 0.1, 0.1) + max(2*1/5, 2*3/5) = 1.3
    assert p.iteration_time(("cloud", "device", "edge"), 1, 2, 2, 1, 1) == pytest.approx(17.0)
    # m_s 0, m_l 1, (3, 0, 1): T1f = max(3*4, 0, 1*2) = 12; T1b = 0; T2f = max(3*0.1, 1*(0.5 + 2)) = 2.5;
    # T2b = max(3*0.2, 1*(1 + 2)) = 3; T3 = 4*(0.1 + 0.2) = 1.2; T_update = max(0.02, 0, 0.05) + 2*1/5 = 0.45
    assert p.iteration_time(("cloud", "device", "edge"), 0, 1, 3, 0, 1) == pytest.approx(19.15)
    # All-Edge: 4 samples over the device-edge link, then everything there.
    assert all_on(p, "edge").time_s == pytest.approx(4 * 20 / 10 + 4 * (1.0 + 2.0) + 0.1)
    with pytest.raises(ValueError, match="not a split"):
        p.iteration_time(("cloud", "device", "edge"), 0, 1, 2, 1, 1)  # b_s > 0 with m_s = 0


# The extension of Eq. 12: 0.5 / 0.25 / 0.125 s per message on device / edge / cloud, worker_o's per-step cost
# 1 s on the cloud (3 on the device), 0.75 s for the device's batch.
OVERHEADS = Overheads(per_message_s={"device": 0.5, "edge": 0.25, "cloud": 0.125},
                      per_step_s={"cloud": 1.0, "device": 3.0}, batch_s=0.75)


def test_extended_model_matches_values_worked_by_hand():
    mapping, split = ("cloud", "device", "edge"), (2, 1, 1)
    # Messages (both layers have parameters): the device sends INPUT to the cloud and the edge and the labels (3),
    # and as worker_s (m_s 1) sends an activation and a parameter gradient and receives their gradient and the
    # parameters (4): 7.  The edge (worker_l, m_l 2): INPUT, activation, gradient, 2 + 2 parameter blocks: 7.
    # The cloud: INPUT, labels, 2 activations, 2 gradients, 1 + 2 parameter gradients, 1 + 2 parameter blocks: 12.
    assert message_counts(mapping, 1, 2, *split, [True, True]) == {"device": 7, "edge": 7, "cloud": 12}
    # Fixed: 7 * 0.5 + 7 * 0.25 + 12 * 0.125 + 1 (worker_o the cloud) + 0.75 = 8.5, on top of the paper's 17.
    p = Problem(HAND, SIZES, LINKS, batch=4, overheads=OVERHEADS)
    assert p.iteration_time(mapping, 1, 2, *split) == pytest.approx(17.0 + 8.5)
    # The device's uplink to the cloud at 2.5 bits/s instead of 5: T1f = max(2 * (20/2.5 + 0.1), 1 * (1 + 10/2.5),
    # 2.5) = 16.2 (was 8.2); the gradients and parameters down are at 5 as before, and Eq. 11 keeps
    # max(1 * (1/2.5 + 1/5), 3 * (1/5 + 1/5)) = 1.2: 8 s more.
    slow_up = Overheads(rate_bps={("device", "cloud"): 2.5})
    assert Problem(HAND, SIZES, LINKS, 4, slow_up).iteration_time(mapping, 1, 2, *split) == pytest.approx(25.0)
    both = Overheads(**{**OVERHEADS.__dict__, "rate_bps": slow_up.rate_bps})
    assert Problem(HAND, SIZES, LINKS, 4, both).iteration_time(mapping, 1, 2, *split) == pytest.approx(33.5)
    # The device's one uplink to the cloud carries the cloud's 2 samples (2 * 20/5) and then the device's
    # activation (1 * 10/5): with shared_uplink, T1f = max(8.2, 3, 2.5, 8 + 2) = 10, 1.8 s more than the paper's.
    shared = Problem(HAND, SIZES, LINKS, 4, Overheads(shared_uplink=True))
    assert shared.iteration_time(mapping, 1, 2, *split) == pytest.approx(18.8)
    assert not Overheads(shared_uplink=True).zero
    # Where the device is not worker_s, nothing shares a link in Eq. 5.
    assert shared.iteration_time(("cloud", "edge", "device"), 1, 2, *split) == pytest.approx(
        Problem(HAND, SIZES, LINKS, 4).iteration_time(("cloud", "edge", "device"), 1, 2, *split))
    # Worker_o's CPU for its messages' bytes, 0.1 s a byte on the cloud with the device (worker_s) and 0.2 with the
    # edge (worker_l): an activation in and its gradient out per sample of worker_s (2 * 10/8 bytes) and of
    # worker_l (2 * 5/8), and the parameter gradients in and the weights out of layer 1 for worker_s (2 * 1/8) and
    # of layers 1-2 for worker_l (2 * 3/8): 0.1 * (2.5 + 0.25) + 0.2 * (1.25 + 0.75) = 0.675.  Not the 2 + 1 input
    # samples that reach the cloud's workers, nor another role's bytes.
    on_cloud = Problem(HAND, SIZES, LINKS, 4, Overheads(per_byte_s={("cloud", "device"): 0.1, ("cloud", "edge"): 0.2,
                                                                    ("edge", "cloud"): 7.0}))
    assert on_cloud.iteration_time(mapping, 1, 2, *split) == pytest.approx(17.0 + 0.675)
    # Worker_o the device: it also sends worker_s's and worker_l's input samples, 20/8 bytes each: 0.1 * 9.75.
    on_device = ("device", "cloud", "edge")
    device_bytes = Overheads(per_byte_s={("device", "cloud"): 0.1, ("device", "edge"): 0.1})
    assert Problem(HAND, SIZES, LINKS, 4, device_bytes).iteration_time(on_device, 1, 2, *split) == pytest.approx(
        Problem(HAND, SIZES, LINKS, 4).iteration_time(on_device, 1, 2, *split) + 0.975)
    # All-Device: no message; 4 samples * 2 layers * (1 + 2) + 2 * 0.1, the device's own step cost and batch: 3.75.
    assert all_on(p, "device").time_s == pytest.approx(24.2 + 3.75)
    assert message_counts(("device", "edge", "cloud"), 0, 0, 4, 0, 0, [True, True]) == dict.fromkeys(ROLES, 0)
    # All-Cloud: the idle device sends INPUT and labels and waits for the end of the step: 3 each.
    assert message_counts(("cloud", "device", "edge"), 0, 0, 4, 0, 0, [True, True]) == {
        "device": 3, "edge": 0, "cloud": 3}


@pytest.mark.parametrize("seed", range(3))
def test_extended_model_without_extra_costs_is_the_papers(seed):
    rng = random.Random(200 + seed)
    p = _random_problem(rng)
    nominal = {(a, b): p.links.bps(a, b) for a in ROLES for b in ROLES if a != b}
    zeros = Overheads(per_message_s=dict.fromkeys(ROLES, 0.0), per_step_s=dict.fromkeys(ROLES, 0.0))
    assert zeros.zero and not Overheads(rate_bps=nominal).zero
    for overheads in (zeros, Overheads(rate_bps=nominal)):
        q = Problem(p._profiles, p.sizes, p.links, p.batch, overheads)
        for mapping in itertools.permutations(ROLES):
            for m_s, m_l in ((0, 0), (1, 2), (0, 3), (2, 3)):
                for split in _splits(p, m_s, m_l):
                    assert q.iteration_time(mapping, m_s, m_l, *split) == pytest.approx(
                        p.iteration_time(mapping, m_s, m_l, *split), rel=1e-12)
    assert schedule(Problem(p._profiles, p.sizes, p.links, p.batch, zeros)) == schedule(p)


def test_scheduler_chooses_with_the_extended_model():
    # A costly message on the device: the paper's model splits the batch, the extension keeps it on one worker.
    paper = schedule(Problem(HAND, SIZES, LINKS, batch=4))
    costly = Problem(HAND, SIZES, LINKS, batch=4, overheads=Overheads(per_message_s={"device": 100.0}))
    best = schedule(costly)
    assert (paper.b_o, paper.b_s, paper.b_l).count(0) < 2  # a hybrid
    assert best.mapping[0] == "device" and best.b_o == 4  # All-Device: no message at all
    assert best.time_s == pytest.approx(all_on(costly, "device").time_s)


def test_joint_split_spans_all_device_to_all_cloud():
    p = Problem(HAND, SIZES, Links(device_edge=10.0, edge_cloud=5.0, device_cloud=1e9), batch=4)
    k, best = joint_split(p)
    assert best <= min(all_on(p, "device").time_s, all_on(p, "cloud").time_s) + 1e-9
    # A fast device-cloud link: send the samples, train in the cloud (All-Cloud's time, the same one link).
    assert k == 0 and best == pytest.approx(all_on(p, "cloud").time_s)
    assert set(baselines(p)) == {"All-Device", "All-Edge", "All-Cloud", "JointDNN (device-cloud, one split)"}


def _random_problem(rng, n=3, batch=6):
    def layer(speed):
        return Layer(rng.uniform(0.1, 1.0) / speed, rng.uniform(0.2, 2.0) / speed, rng.uniform(0.0, 0.5) / speed)

    profiles = {role: [layer(speed) for _ in range(n)] for role, speed in zip(ROLES, (1.0, 3.0, 10.0))}
    sizes = ModelSizes(tuple(rng.uniform(1, 30) for _ in range(n)), tuple(rng.uniform(0, 50) for _ in range(n)),
                       rng.uniform(5, 40))
    return Problem(profiles, sizes, Links(rng.uniform(5, 50), rng.uniform(2, 20), rng.uniform(1, 10)), batch)


def _splits(p, m_s, m_l):
    for b_s in range(p.batch + 1 if m_s else 1):
        for b_l in range(p.batch + 1 - b_s if m_l else 1):
            yield p.batch - b_s - b_l, b_s, b_l


def _random_overheads(rng):
    return Overheads(per_message_s={role: rng.uniform(0, 0.5) for role in ROLES},
                     per_step_s={role: rng.uniform(0, 1) for role in ROLES}, batch_s=rng.uniform(0, 1),
                     rate_bps={(a, b): rng.uniform(1, 20) for a in ROLES for b in ROLES
                               if a != b and rng.random() < 0.5}, shared_uplink=True,
                     per_byte_s={(a, b): rng.uniform(0, 0.1) for a in ROLES for b in ROLES if a != b})


@pytest.mark.parametrize("seed, extended", [(seed, False) for seed in range(6)] + [(seed, True) for seed in range(4)])
def test_relaxed_lp_bounds_brute_force_and_rounding_lands_near_it(seed, extended):
    p = _random_problem(random.Random(seed))
    if extended:
        p = Problem(p._profiles, p.sizes, p.links, p.batch, _random_overheads(random.Random(50 + seed)))
    exact = 0
    for mapping in itertools.permutations(ROLES):
        for m_s in range(p.n + 1):
            for m_l in range(m_s, p.n + 1):
                per_sample = (sum(c for term in p.stage_terms(mapping, m_s, m_l)[0] for coef in term for c in coef)
                              + sum(p.byte_coefficients(mapping, m_s, m_l)))
                brute = min(p.iteration_time(mapping, m_s, m_l, *b) for b in _splits(p, m_s, m_l))
                split, relaxed = p.relaxed(mapping, m_s, m_l)
                policy = p.solve(mapping, m_s, m_l)
                assert sum(split) == pytest.approx(p.batch)
                assert relaxed <= brute + 1e-7, (mapping, m_s, m_l)
                assert brute <= policy.time_s + 1e-9
                # Rounding moves each b by less than one sample: at most one sample's worth of every term.
                assert policy.time_s <= brute + 2 * per_sample, (mapping, m_s, m_l, policy, brute)
                exact += policy.time_s == pytest.approx(brute)
    assert exact > 0


@pytest.mark.parametrize("seed", range(4))
def test_schedule_is_the_best_of_algorithm_1_and_no_worse_than_all_on_one_worker(seed):
    p = _random_problem(random.Random(100 + seed))
    best = schedule(p)
    candidates = [p.solve(m, s, l_) for m in itertools.permutations(ROLES) for s in range(p.n + 1)
                  for l_ in range(s, p.n + 1)]
    assert best.time_s == min(c.time_s for c in candidates)
    assert best.time_s <= min(all_on(p, role).time_s for role in ROLES) + 1e-9  # special cases of the policy
    assert best.b_o + best.b_s + best.b_l == p.batch


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="each of"):
        Problem({"device": HAND["device"]}, SIZES, LINKS, 4)
    with pytest.raises(ValueError, match="layers"):
        Problem({**HAND, "cloud": HAND["cloud"][:1]}, SIZES, LINKS, 4)
    with pytest.raises(ValueError, match="edge_cloud"):
        Links(device_edge=1.0, edge_cloud=0.0)
    with pytest.raises(ValueError, match="m_s"):
        Problem(HAND, SIZES, LINKS, 4).stage_terms(ROLES, 2, 1)
    with pytest.raises(ValueError, match="per_byte_s needs"):
        Overheads(per_byte_s={("device", "device"): 0.1})
    with pytest.raises(ValueError, match="rate_bps needs"):
        Overheads(rate_bps={("device", "edge"): 0.0})


def test_measured_profile_feeds_the_scheduler():
    profile = profile_layers("vgg16", width=0.125, batch_size=4, repeats=1)
    layers = profile["layers"]
    assert len(layers) >= 10 and all(v["forward_s"] > 0 and v["backward_s"] > 0 for v in layers)
    assert layers[-1]["output_bits"] == 32 * 10 and sum(v["param_bits"] for v in layers) > 0
    roles = {"device": scaled(profile, 10.0), "edge": scaled(profile, 3.0), "cloud": profile}
    p = problem_from_profiles(roles, Links(device_edge=5e6, edge_cloud=1.5e6), batch=16)
    assert 0 < schedule(p).time_s <= min(all_on(p, role).time_s for role in ROLES)
    with pytest.raises(ValueError, match="another model"):
        problem_from_profiles({**roles, "edge": {**profile, "width": 0.5}}, Links(5e6, 1.5e6), 16)


def test_split_forward_times_from_two_profiles_feed_the_epoch_estimate():
    from hiertrain_ros.core.hierschedule import split_forward_times

    def profile(*forward, width=0.25):
        return {"arch": "vgg16", "width": width, "layers": [{"forward_s": f} for f in forward]}

    edge, cloud = profile(1.0, 2.0, 3.0), profile(0.1, 0.2, 0.3)
    assert split_forward_times(edge, cloud, 1, batch_size=10) == pytest.approx((10.0, 5.0, 6.0))
    assert split_forward_times(edge, cloud, 2, batch_size=10) == pytest.approx((30.0, 3.0, 6.0))
    with pytest.raises(ValueError, match="different models"):
        split_forward_times(edge, profile(1.0, 2.0, 3.0, width=0.5), 1, 10)
    with pytest.raises(ValueError, match="split_point"):
        split_forward_times(edge, cloud, 3, 10)


def test_cli_schedule_and_estimate_read_profile_files(tmp_path, capsys):
    import json

    from hiertrain_ros import cli

    def profile(slowdown):
        layers = [{"name": f"layer {i}", "forward_s": 1e-4 * slowdown, "backward_s": 2e-4 * slowdown,
                   "update_s": 1e-3 * slowdown, "output_bits": 32.0 * 4096 / i, "param_bits": 32.0 * 1e4 * i}
                  for i in range(1, 14)]
        return {"arch": "vgg16", "width": 0.25, "num_classes": 10, "batch_size": 32, "sample_bits": 24576.0,
                "layers": layers}

    files = {}
    for role, slowdown in (("device", 10), ("edge", 3), ("cloud", 1)):
        files[role] = tmp_path / f"{role}.json"
        files[role].write_text(json.dumps(profile(slowdown)))
    out = tmp_path / "schedule.json"
    assert cli.main(["schedule", *(f"--{r}={f}" for r, f in files.items()), "--bw-ec", "2e5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["per_iteration_s"]["HierTrain"] <= min(t for k, t in result["per_iteration_s"].items()
                                                         if k.startswith("All-")) + 1e-9
    assert "worker_o=" in capsys.readouterr().out
    # The workers take the policy from that file (hier_worker_node's policy_file).
    from hiertrain_ros.core.hierexec import WorkerConfig

    chosen = WorkerConfig(arch="vgg16", policy_file=str(out)).with_policy_file()
    policy = result["policy"]
    assert (chosen.roles, chosen.m_s, chosen.m_l, chosen.b_o, chosen.b_s, chosen.b_l) == (
        tuple(policy["mapping"]), policy["m_s"], policy["m_l"], policy["b_o"], policy["b_s"], policy["b_l"])
    for bad in (files["edge"], tmp_path / "missing.json"):  # a profile, not a schedule; no file
        with pytest.raises(ValueError, match="not a hiertrain schedule --json file"):
            WorkerConfig(policy_file=str(bad)).with_policy_file()
    assert cli.main(["estimate", "--width", "0.25", "--position", "3", "--edge-profile", str(files["edge"]),
                     "--cloud-profile", str(files["cloud"])]) == 0
    assert "from the profiles" in capsys.readouterr().out
    assert cli.main(["estimate", "--width", "0.25", "--position", "3", "--edge-profile", str(files["edge"])]) == 2
