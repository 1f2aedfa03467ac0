"""L2S's LinUCB-E (core.l2s) on a synthetic cost model: convergence, escaping edge-only, relearning, privacy."""

import numpy as np
import pytest

from hiertrain_ros.core.l2s import (DelayMonitor, FixedPolicy, LinkRateMeter, LinUCBE, OnlineSplit, OraclePolicy,
                                    eligible, run_rounds)
from hiertrain_ros.core.privacy import allowed_splits
from hiertrain_ros.core.splits import Split, SplitContext

# Five splits and edge-only ("local").  Deeper splits: more edge work (front), less cloud work, fewer bits.
ARMS = [1, 2, 3, 4, 5]
FRONT = {1: 0.01, 2: 0.02, 3: 0.03, 4: 0.05, 5: 0.08, "local": 0.12}
CLOUD = {1: 1.0, 2: 0.8, 3: 0.6, 4: 0.4, 5: 0.2}   # cloud work, normalised
BITS = {1: 1.0, 2: 0.9, 3: 0.35, 4: 0.3, 5: 0.25}  # bits per sample, normalised


def world(rate_at):
    """Per-sample cost of an arm at round t: the pipeline's slowest stage; rate_at(t) the link's speed."""
    def cost(t, arm):
        if arm == "local":
            return FRONT["local"], 0.0
        offloaded = 0.02 * CLOUD[arm] + 0.05 * BITS[arm] / rate_at(t)
        return max(FRONT[arm], offloaded), offloaded
    return cost


def contexts(rate):
    """Return what the nodes measure: cloud work and the wire time at the live link rate, per split."""
    return {arm: [CLOUD[arm], BITS[arm] / rate] for arm in ARMS}


def policy(rate=1.0, **kw):
    return LinUCBE(contexts(rate), FRONT, local="local", alpha=0.05, beta=0.1, horizon=1000, **kw)


def best(cost, t):
    return OraclePolicy(ARMS + ["local"], lambda t, a: cost(t, a)[0]).choose(t)


def test_converges_to_the_best_arm_within_50_rounds():
    cost = world(lambda t: 1.0)
    history = run_rounds(policy(), 200, cost, np.random.default_rng(1), noise=0.05)
    assert best(cost, 1) == 3
    late = [arm for arm, _ in history[50:]]
    assert late.count(3) >= 0.9 * len(late), late
    assert np.mean([c for _, c in history[50:]]) <= 1.1 * cost(1, 3)[0]


def test_forced_sampling_escapes_edge_only_after_the_link_comes_back():
    # A dead-slow link for 100 rounds (edge-only is right), then a fast one (split 3 is right again).  The
    # contexts do not show the change (no rate measurement): only a round that offloads can reveal it.
    cost = world(lambda t: 0.02 if t <= 100 else 1.0)
    assert best(cost, 50) == "local" and best(cost, 150) == 3
    # The paper's LinUCB (no forced sampling, no forgetting) learns that offloading is slow, and never again
    # offloads: edge-only teaches it nothing.
    trapped = [arm for arm, _ in run_rounds(policy(forced_sampling=False), 400, cost)]
    assert trapped[80:100].count("local") == 20 and set(trapped[150:]) == {"local"}
    # LinUCB-E as built here: forced sampling and forgetting, with or without the delay monitor.  (Measured on
    # this model: forced sampling without forgetting had not settled 300 rounds after the change, since its few
    # new samples are averaged with 100 old ones.)
    for kw in (dict(gamma=0.95), dict(gamma=0.95, monitor=DelayMonitor(window=10, threshold=0.3, settle=30))):
        p = policy(**kw)
        history = run_rounds(p, 400, cost, np.random.default_rng(3), noise=0.03)
        arms = [arm for arm, _ in history]
        assert arms[80:100].count("local") >= 15, (kw, arms[80:100])
        assert np.mean([c for _, c in history[150:]]) <= 1.2 * cost(200, 3)[0], (kw, arms[100:])


def test_a_discounted_policy_relearns_a_changed_link_within_its_window():
    # The link slows 4x at round 150 and the contexts do not say so (no rate measurement): only the costs do.
    cost = world(lambda t: 1.0 if t <= 150 else 0.25)
    assert best(cost, 1) == 3 and best(cost, 200) == 4
    for kw in (dict(gamma=0.95), dict(monitor=DelayMonitor(window=10, threshold=0.3, settle=30))):
        history = run_rounds(policy(**kw), 300, cost, np.random.default_rng(2), noise=0.02)
        after = [arm for arm, _ in history[200:]]
        assert after.count(4) >= 0.9 * len(after), (kw, after)


def test_the_delay_monitor_settles_then_sees_a_change():
    monitor = DelayMonitor(window=5, threshold=0.2, settle=10)
    for arm in (1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3):  # explores, then settles on 3
        assert not monitor.record(arm, 1.0)
    assert not monitor.adapting
    for _ in range(5):
        assert not monitor.record(3, 1.0)
    assert any([monitor.record(3, 2.0) for _ in range(5)]) and monitor.adapting and monitor.changes == 1
    assert monitor.changed() and monitor.changes == 2  # the nodes measured a new link rate
    rejoin = DelayMonitor(window=5, settle=1, reentry=0.5)
    rejoin.record(3, 1.0)
    assert not rejoin.adapting
    seen = []
    for _ in range(20):
        rejoin.record(3, 1.0)
        seen.append(rejoin.adapting)
    assert any(seen) and not all(seen)  # adapts again now and then, and settles again


def test_privacy_floor_removes_splits_and_every_policy_respects_it():
    privacy = {1: 0.1, 2: 0.3, 3: 0.5, 4: 0.8, 5: 0.9}
    kept = eligible(ARMS, privacy, 0.5)
    assert kept == [3, 4, 5]
    p = LinUCBE({a: contexts(1.0)[a] for a in kept}, {a: FRONT[a] for a in kept})
    history = run_rounds(p, 100, world(lambda t: 1.0))
    assert {arm for arm, _ in history} <= set(kept)
    assert FixedPolicy(4).choose(1) == 4
    with pytest.raises(ValueError, match="no split"):
        eligible(ARMS, privacy, 0.95)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="combine"):
        policy(combine="avg")
    with pytest.raises(ValueError, match="context"):
        LinUCBE({1: [1.0]}, {1: 0.1, 2: 0.2})


# -- OnlineSplit: LinUCB-E as the edge node runs it, on measurements ----------------------------------------------

SPLITS = [Split(3, 4), Split(5, 4), Split(8, 4)]
EDGE_S = {Split(3, 4): 0.003, Split(5, 4): 0.004, Split(8, 4): 0.0055}  # edge seconds per sample
SHARE = {Split(3, 4): 0.8, Split(5, 4): 0.7, Split(8, 4): 0.5}  # the cloud's share of the compute
WIRE = {Split(3, 4): 16384.0, Split(5, 4): 16384.0, Split(8, 4): 8192.0}  # bits per sample


def offloaded(arm, rate):
    return WIRE[arm] / rate + 0.001 * SHARE[arm]


def test_online_split_follows_the_link_from_what_the_edge_measures():
    # 4G then 3G, 100 rounds of 10 steps each.  At 4G split 3 is best (the edge is the slow stage deeper), at 3G
    # split 8 (its half-size features).  The policy sees what the node measures: its own step time, the
    # offloaded stage's time per sample and the link rate, each with 5 % noise.
    rng = np.random.default_rng(0)
    policy = OnlineSplit(SPLITS, EDGE_S, SHARE, WIRE, 5.85e6, round_steps=10)
    segments = [(5.85e6, Split(3, 4)), (1.1e6, Split(8, 4))]
    for rate, best_arm in segments:
        cost = {a: max(EDGE_S[a], offloaded(a, rate)) for a in SPLITS}
        assert min(cost, key=cost.get) == best_arm
        rounds = []
        for _ in range(100):
            step = policy._round_end
            arm = policy.choose(SplitContext(step=step))
            for s in range(step, step + 10):
                assert policy.choose(SplitContext(step=s)) == arm  # one split per round
                noise = 1 + 0.05 * rng.standard_normal(2)
                policy.measured(arm, EDGE_S[arm] * noise[0], offloaded(arm, rate) * noise[1], rate * noise[1])
            rounds.append(arm)
        late = rounds[50:]
        assert late.count(best_arm) >= 0.9 * len(late), (rate, late)
        assert np.mean([cost[a] for a in late]) <= 1.1 * cost[best_arm]


def test_online_split_scales_its_front_end_with_the_edge_load():
    policy = OnlineSplit(SPLITS, EDGE_S, SHARE, WIRE, 5.85e6, round_steps=4)
    arm = policy.choose(SplitContext(step=0))
    for _ in range(40):  # the edge runs 3x slower than its start-up profile (another process took the CPU)
        policy.measured(arm, 3 * EDGE_S[arm], offloaded(arm, 5.85e6))
    assert policy.load == pytest.approx(3.0, rel=0.01)
    assert policy.bandit.front[Split(8, 4)] == pytest.approx(3e3 * EDGE_S[Split(8, 4)], rel=0.01)


def test_the_privacy_floor_is_never_violated():
    privacy = {1: 0.03, 3: 0.07, 5: 0.22, 8: 0.54, 11: 0.61}
    splits = [Split(p, 4) for p in privacy]
    for floor in (0.0, 0.05, 0.2, 0.5):
        kept = allowed_splits(splits, privacy, floor, choose=True)
        assert kept == [s for s in splits if privacy[s.split_point] >= floor]
        policy = OnlineSplit(kept, {s: 0.001 * s.split_point for s in kept}, {s: 0.5 for s in kept},
                             {s: 1000.0 for s in kept}, 1e6, round_steps=1)
        for step in range(30):
            arm = policy.choose(SplitContext(step=step))
            assert privacy[arm.split_point] >= floor
            policy.measured(arm, 0.001, 0.002)
    with pytest.raises(ValueError, match="needs two or more"):
        allowed_splits(splits, privacy, 0.6, choose=True)
    with pytest.raises(ValueError, match="needs all"):
        allowed_splits([Split(3, 4), Split(8, 4)], privacy, 0.1, choose=False)
    assert allowed_splits([Split(8, 4), Split(11, 4)], privacy, 0.5, choose=False) == [Split(8, 4), Split(11, 4)]


def test_edge_privacy_settings_are_checked():
    from hiertrain_ros.core.config import EdgeConfig

    with pytest.raises(ValueError, match="needs privacy_profile"):
        EdgeConfig(privacy_floor=0.2)
    with pytest.raises(ValueError, match="two or more"):
        EdgeConfig(split_policy="linucb", split_candidates="3")


def _switches(policy, rng, segments, rounds=100):
    """Run ``policy`` through ``segments`` of (rate, best arm); return the arm of every round per segment."""
    out = []
    for rate, _ in segments:
        arms = []
        for _ in range(rounds):
            step = policy._round_end
            arm = policy.choose(SplitContext(step=step))
            for _ in range(policy.round_steps):
                noise = 1 + 0.05 * rng.standard_normal(2)
                policy.measured(arm, EDGE_S[arm] * noise[0], offloaded(arm, rate) * noise[1], rate * noise[1])
            arms.append(arm)
        out.append(arms)
    return out


def test_a_move_is_taken_only_when_it_pays_for_its_pause():
    # The 4G -> 3G run with what a move costs: 8 batches of 32 in flight to drain, and 2 MB of layers the edge
    # sends up when the split moves towards it.  Worth it: the policy still ends on each segment's best split.
    segments = [(5.85e6, Split(3, 4)), (1.1e6, Split(8, 4))]
    drain = {a: 8 * 32 * WIRE[a] for a in SPLITS}

    def up(a, b):
        return 8 * 2e6 * (a.split_point - b.split_point) / 5 if b.split_point < a.split_point else 0.0

    policy = OnlineSplit(SPLITS, EDGE_S, SHARE, WIRE, 5.85e6, round_steps=10, drain_bits=drain, move_bits=up)
    for (_, best), arms in zip(segments, _switches(policy, np.random.default_rng(0), segments)):
        assert arms[-30:].count(best) == 30, arms
    # Not worth it: a drain of a minute at 3G outweighs what split 8 saves over the next 60 s.
    slow = {a: 60 * 1.1e6 for a in SPLITS}
    policy = OnlineSplit(SPLITS, EDGE_S, SHARE, WIRE, 5.85e6, round_steps=10, drain_bits=slow, move_bits=up)
    arms = _switches(policy, np.random.default_rng(0), segments)
    assert set(arms[1]) == {Split(3, 4)} and policy.held > 0
    # Alone: a move that would save 10 % of 60 s is worth a 5 s pause, not a 7 s one (hysteresis 1).
    policy = OnlineSplit(SPLITS, EDGE_S, SHARE, WIRE, 1e6, drain_bits={Split(3, 4): 5e6}, hysteresis=1.0)
    policy.bandit.estimates = lambda bonus=True: {Split(3, 4): 10.0, Split(5, 4): 9.0, Split(8, 4): 12.0}
    assert policy.worth_moving(Split(5, 4)) and not policy.worth_moving(Split(8, 4))
    policy.drain_bits[Split(3, 4)] = 7e6
    assert not policy.worth_moving(Split(5, 4))


def test_the_link_rate_meter_tells_the_link_from_the_cloud():
    meter = LinkRateMeter(window_s=1.0)
    # The link idles: 1 Mbit sent at t=10, acknowledged at 10.6; the cloud held it 0.1 s: 0.5 s on a 2 Mbit/s link.
    # Another batch still unacknowledged does not make the link busy: this one was sent after the last arrived.
    assert meter.acknowledged(10.6, 1e6, 10.0, busy=True, held=0.1) == (pytest.approx(2e6), False)
    assert meter.rate == pytest.approx(2e6) and meter.lone
    # A lone batch's time on the link only comes out too long (a late heartbeat): the fastest recent one counts.
    assert meter.acknowledged(10.9, 1e5, 10.7, busy=False, held=0.1) == (pytest.approx(2e6), False)  # 1 Mbit/s seen
    assert meter.acknowledged(11.2, 1e5, 11.0, busy=False, held=0.15) == (pytest.approx(2e6), False)
    # Sent at 11.0, before that one arrived (11.05): it waited for the link, which is busy.  The bits acknowledged
    # over at least a second count, from the first acknowledgement on.
    assert meter.acknowledged(11.4, 5e5, 11.0, busy=False, held=0.2) == (None, False)
    assert not meter.lone
    assert meter.acknowledged(11.9, 5e5, 11.1, busy=False, held=0.2) == (None, False)
    assert meter.acknowledged(12.4, 5e5, 11.6, busy=False, held=0.2) == (pytest.approx(1e6), False)
    assert meter.rate == pytest.approx(1e6)
    # From a cloud that does not say how long it held them: the sender's own view of busy, and on an idle link all
    # 0.6 s count: the rate is only a floor.
    old = LinkRateMeter()
    assert old.acknowledged(10.6, 1e6, 10.0, busy=False) == (pytest.approx(1e6 / 0.6), True)
    assert old.rate == 0.0 and not old.lone, "a floor is not a measurement"
    assert old.acknowledged(20.0, 5e5, 19.0, busy=True) == (None, False)
