"""HierTrain's hybrid-parallel execution (issue 16): equal to plain SGD, in one process and over real DDS."""

import json

import pytest
import torch

from hiertrain_ros.core import hierexec
from hiertrain_ros.core.data import FASHION_MNIST_DIR
from hiertrain_ros.core.hierexec import (deterministic, hybrid_step, make_workers, model_layers, sgd_reference,
                                         synthetic_batch)
from hiertrain_ros.core.hierschedule import Policy, message_counts

LR, MOMENTUM = 0.05, 0.9
# Float32 sums in another order (sub-batch convolutions, gradients added worker by worker): a few ulps of the
# weights after 3 steps; a wrong split, order or scaling is off by > 1e-3.
ATOL = 1e-5


def _run(arch, policy, steps=3, batch=12, det=False, width=0.125, **kwargs):
    torch.manual_seed(0)

    def layers():
        return model_layers(arch, width=width, seed=3)

    workers = make_workers(policy, layers, lr=LR, momentum=MOMENTUM, **kwargs)
    if det:
        for w in workers.values():
            deterministic(w.layers)
    batches = [synthetic_batch(1, k, batch) for k in range(steps)]
    losses = [hybrid_step(workers, codes, labels, k) for k, (codes, labels) in enumerate(batches)]
    reference = sgd_reference(layers(), batches, lr=LR, momentum=MOMENTUM, prepare=deterministic if det else None)
    return workers, reference, losses


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("policy", [
    Policy(("device", "edge", "cloud"), 1, 3, 4, 3, 5, 0.0),
    Policy(("cloud", "device", "edge"), 2, 2, 0, 6, 6, 0.0),   # S and L join at one boundary, worker_o no samples
    Policy(("edge", "device", "cloud"), 2, 5, 3, 4, 5, 0.0),   # L runs the whole model, sends logits
    Policy(("cloud", "edge", "device"), 0, 4, 7, 0, 5, 0.0),   # worker_s idle
    Policy(("device", "edge", "cloud"), 0, 0, 12, 0, 0, 0.0),  # All-Device
])
def test_lenet5_hybrid_step_equals_whole_batch_sgd(policy):
    workers, reference, losses = _run("lenet5", policy)
    o = workers[policy.mapping[0]]
    assert _max_diff(o.state_dict(), reference.state_dict()) < ATOL
    for role in policy.mapping[1:]:  # the shared copies hold worker_o's parameters after each step
        mine = workers[role].state_dict()
        assert all(torch.equal(v, o.state_dict()[k]) for k, v in mine.items())
    assert all(1.5 < loss < 3.5 for loss in losses)


@pytest.mark.parametrize("policy", [
    Policy(("device", "cloud", "edge"), 1, 2, 82, 5, 41, 0.0),  # the hybrid set-up's choice at 1.5 Mbit/s: 12 on o
    Policy(("cloud", "edge", "device"), 2, 2, 80, 48, 0, 0.0),  # its choice at 5: the device idle
    Policy(("cloud", "device", "edge"), 2, 2, 0, 6, 6, 0.0),
    Policy(("cloud", "edge", "device"), 0, 4, 7, 0, 5, 0.0),
    Policy(("edge", "device", "cloud"), 0, 0, 12, 0, 0, 0.0),  # All-Edge
    Policy(("device", "edge", "cloud"), 0, 0, 12, 0, 0, 0.0),  # All-Device
])
def test_message_counts_of_the_time_model_are_the_packets_sent(policy):
    workers = make_workers(policy, lambda: model_layers("lenet5", seed=3), lr=LR)
    seen = dict.fromkeys(workers, 0)

    def count(packet):
        seen[packet.sender] += 1
        seen[packet.receiver] += 1
        return packet

    hybrid_step(workers, *synthetic_batch(1, 0, policy.b_o + policy.b_s + policy.b_l), transport=count)
    has_params = [any(True for _ in layer.parameters()) for layer in model_layers("lenet5")]
    assert seen == message_counts(policy.mapping, policy.m_s, policy.m_l, policy.b_o, policy.b_s, policy.b_l,
                                  has_params)


@pytest.mark.parametrize("policy", [
    Policy(("edge", "device", "cloud"), 2, 2, 6, 6, 0, 0.0),  # the device trains layers 1-2 on half the batch
    Policy(("cloud", "device", "edge"), 1, 3, 4, 4, 4, 0.0),  # two joins
])
def test_worker_o_sends_each_gradient_before_its_own_backward_below_the_join(policy):
    """Eqs. 6 and 8 run the senders' backward alongside worker_o's: the GRADIENT must not wait for the latter."""
    workers = make_workers(policy, lambda: model_layers("lenet5", seed=3), lr=LR)
    events = []
    o = workers[policy.mapping[0]]

    def mark(k):  # a forward hook on worker_o's own layer just below join k: notes when its backward begins
        def hook(_module, _inp, out):
            out.register_hook(lambda _grad: events.append(("o's backward", k)))
        return hook

    for k in {policy.m_s, policy.m_l}:
        o.layers[k - 1].register_forward_hook(mark(k))

    def record(packet):
        if packet.kind == hierexec.GRADIENT:
            events.append(("GRADIENT", packet.layer))
        return packet

    hybrid_step(workers, *synthetic_batch(1, 0, 12), transport=record)
    for k in {policy.m_s, policy.m_l}:
        assert events.index(("GRADIENT", k)) < events.index(("o's backward", k)), events


@pytest.mark.parametrize("arch, policy", [
    ("vgg16", Policy(("cloud", "device", "edge"), 3, 7, 4, 4, 4, 0.0)),
    ("resnet18", Policy(("edge", "cloud", "device"), 2, 5, 4, 4, 4, 0.0)),
])
def test_bn_models_equal_sgd_with_running_statistics(arch, policy):
    """With BN on running statistics (and Dropout off) every layer is per sample: the equality is exact."""
    workers, reference, _ = _run(arch, policy, steps=2, det=True)
    assert _max_diff(workers[policy.mapping[0]].state_dict(), reference.state_dict()) < ATOL


def test_bn_in_training_mode_normalises_per_worker():
    """Training-mode BN sees each worker's rows only: it trains, but is not whole-batch SGD (documented)."""
    policy = Policy(("cloud", "device", "edge"), 3, 7, 4, 4, 4, 0.0)
    workers, reference, losses = _run("vgg16", policy, steps=1)
    diff = _max_diff(workers["cloud"].state_dict(), reference.state_dict())
    assert diff > 1e-4 and all(torch.isfinite(torch.tensor(losses)))
    # the copies carry worker_o's running statistics
    edge = workers["edge"].state_dict()
    assert all(torch.equal(edge[k], workers["cloud"].state_dict()[k]) for k in edge if "running" in k)


def test_eight_bit_activations_stay_close():
    """JALAD's 8-bit activations: near, not equal."""
    policy = Policy(("device", "edge", "cloud"), 1, 3, 4, 3, 5, 0.0)
    workers, reference, _ = _run("lenet5", policy, activation_bits=8)
    diff = _max_diff(workers["device"].state_dict(), reference.state_dict())
    assert 0 < diff < 1e-2


def test_receivers_are_the_workers_sent_to():
    layers = model_layers("lenet5", seed=0)

    def receivers(role, policy):
        return hierexec.HierWorker(role, policy, layers, lr=0.1).receivers()

    hybrid = Policy(("edge", "device", "cloud"), 1, 3, 4, 3, 5, 0.0)
    assert receivers("device", hybrid) == {"edge", "cloud"}
    assert receivers("edge", hybrid) == {"device", "cloud"}
    assert receivers("cloud", hybrid) == {"edge"}
    all_edge = Policy(("edge", "device", "cloud"), 0, 0, 12, 0, 0, 0.0)
    assert receivers("device", all_edge) == {"edge"}
    assert receivers("edge", all_edge) == {"device"}  # the idle device waits for the end of each step
    assert receivers("cloud", all_edge) == set()


def test_wire_round_trip_and_bad_sizes():
    t = torch.randn(3, 4, 5)
    packet = hierexec.Packet("edge", "cloud", 0, hierexec.ACTIVATION, 2, *hierexec.encode(t))
    assert torch.equal(hierexec.decode(packet), t)
    packet.data = packet.data[:-4]
    with pytest.raises(ValueError, match="bytes for shape"):
        hierexec.decode(packet)
    with pytest.raises(ValueError, match="bits"):
        hierexec.encode(t, 4)


def test_bad_policies_are_named():
    layers = model_layers("lenet5", seed=0)
    with pytest.raises(ValueError, match="m_s <= m_l"):
        hierexec.HierWorker("edge", Policy(("device", "edge", "cloud"), 3, 2, 4, 4, 4, 0.0), layers, lr=0.1)
    with pytest.raises(ValueError, match="b_s=4 needs m_s"):
        hierexec.HierWorker("edge", Policy(("device", "edge", "cloud"), 0, 2, 4, 4, 4, 0.0), layers, lr=0.1)
    with pytest.raises(ValueError, match="role"):
        hierexec.HierWorker("phone", Policy(("device", "edge", "cloud"), 1, 2, 4, 4, 4, 0.0), layers, lr=0.1)
    with pytest.raises(ValueError, match="arch"):
        model_layers("alexnet")


def test_a_missing_packet_is_named_not_a_hang():
    policy = Policy(("device", "edge", "cloud"), 1, 3, 4, 3, 5, 0.0)
    workers = make_workers(policy, lambda: model_layers("lenet5", seed=0), lr=0.1)
    codes, labels = synthetic_batch(0, 0, 12)

    def drop_activations(packet):
        if packet.kind == hierexec.ACTIVATION and packet.sender == "cloud":
            packet.receiver = "nobody"
        return packet

    with pytest.raises(RuntimeError, match="device waits for ACTIVATION .*from cloud"):
        hybrid_step(workers, codes, labels, transport=drop_activations)


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="dataset-fashion-mnist not installed")
def test_dataset_batches_feed_the_device_and_the_accuracy_is_measured():
    get = hierexec.WorkerConfig(data="fashion-mnist", mapping="device,edge,cloud", m_s=1, m_l=2, b_o=8, b_s=4,
                                b_l=4).batches()
    codes, labels = get(0)
    assert codes.shape == (16, 3, 32, 32) and codes.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(get(0)[0], codes) and not torch.equal(get(1)[0], codes)  # reproducible, and moves on
    steps_per_epoch = 60000 // 16
    assert not torch.equal(get(steps_per_epoch)[1], labels)  # the next epoch is another permutation
    accuracy = hierexec.dataset_accuracy(model_layers("lenet5", seed=0), "fashion-mnist")
    assert 0.0 <= accuracy <= 0.3  # an untrained LeNet-5 is near chance (0.1)


def test_a_bad_data_source_is_named():
    with pytest.raises(ValueError, match="data must be synthetic, fashion-mnist or cifar10-dir:PATH, got 'mnist'"):
        hierexec.WorkerConfig(data="mnist")


# -- three real worker processes on DDS -------------------------------------------------------------------------

DDS_POLICY = Policy(("edge", "device", "cloud"), 1, 3, 4, 3, 5, 0.0)  # worker_o on the edge: all three work


def _start_workers(tmp_path, policy, roles=("device", "edge", "cloud"), **params):
    import os
    import subprocess
    import sys

    from hiertrain_ros.ros_common import large_data_env

    values = {"mapping": ",".join(policy.mapping), "m_s": policy.m_s, "m_l": policy.m_l, "b_o": policy.b_o,
              "b_s": policy.b_s, "b_l": policy.b_l, "lr": LR, "momentum": MOMENTUM, **params}
    args = [f"{k}:={v}" for k, v in values.items()]
    env = {**os.environ, **large_data_env()}
    procs = {}
    for role in roles:
        cmd = [sys.executable, "-m", "hiertrain_ros.hier_worker_node", "--ros-args", "-r", f"__node:=hier_{role}",
               "-p", f"role:={role}"]
        for arg in args:
            cmd += ["-p", arg]
        with open(tmp_path / f"{role}.log", "wb") as log:
            procs[role] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return procs


def _stop(procs):
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _logs(tmp_path):
    return {log.stem: log.read_text(errors="replace") for log in tmp_path.glob("*.log")}


@pytest.mark.system
def test_three_workers_on_dds_equal_single_process_sgd(ros_env, tmp_path):
    dump = tmp_path / "weights.pt"
    procs = _start_workers(tmp_path, DDS_POLICY, steps=3, seed=0, data_seed=1, dump_path=str(dump),
                           peer_timeout_s=20.0, trace_dir=str(tmp_path / "trace"))
    try:
        codes = {role: proc.wait(timeout=90) for role, proc in procs.items()}
    finally:
        _stop(procs)
    assert codes == {"device": 0, "edge": 0, "cloud": 0}, _logs(tmp_path)
    weights = torch.load(dump)
    batches = [synthetic_batch(1, k, 12) for k in range(3)]
    reference = sgd_reference(model_layers("lenet5", seed=0), batches, lr=LR, momentum=MOMENTUM).state_dict()
    assert _max_diff(weights, reference) < ATOL
    assert _max_diff(weights, torch.nn.ModuleList(model_layers("lenet5", seed=0)).state_dict()) > 1e-3  # it trained
    # The traces: three steps on each worker, and every message one sent is one its receiver waited for.
    traces = {role: [json.loads(line) for line in (tmp_path / "trace" / f"{role}.jsonl").read_text().splitlines()]
              for role in procs}
    assert all(sum(e["event"] == "step" for e in trace) == 3 for trace in traces.values()), traces
    sent = sorted((role, e["peer"], e["step"], e["kind"], e["layer"], e["bytes"])
                  for role, trace in traces.items() for e in trace if e["event"] == "send")
    waited = sorted((e["peer"], role, e["step"], e["kind"], e["layer"], e["bytes"])
                    for role, trace in traces.items() for e in trace if e["event"] == "wait")
    assert sent == waited and len(sent) > 3 * 6, (sent, waited)


@pytest.mark.system
def test_workers_step_only_once_their_start_file_exists(ros_env, tmp_path):
    # What hier_bench relies on: no step runs before the bench has put the worker under its CPU quota.
    import time

    from waiting import wait_for

    go, dump = tmp_path / "go", tmp_path / "weights.pt"
    procs = _start_workers(tmp_path, DDS_POLICY, steps=3, dump_path=str(dump), peer_timeout_s=20.0, start_file=str(go))
    try:
        wait_for(lambda: all(" found its peers" in (tmp_path / f"{role}.log").read_text(errors="replace")
                             for role in procs) or any(p.poll() is not None for p in procs.values()),
                 60, "the three workers to find each other", lambda: str(_logs(tmp_path)))
        time.sleep(1.0)
        assert all(p.poll() is None for p in procs.values()), _logs(tmp_path)
        assert not dump.exists() and not any("step 0:" in text for text in _logs(tmp_path).values())
        go.touch()
        codes = {role: proc.wait(timeout=60) for role, proc in procs.items()}
    finally:
        _stop(procs)
    assert codes == {"device": 0, "edge": 0, "cloud": 0}, _logs(tmp_path)
    assert dump.exists() and "step 0:" in _logs(tmp_path)["edge"]


@pytest.mark.system
def test_a_killed_worker_is_a_clear_error_not_a_hang(ros_env, tmp_path):
    import signal
    import time

    from waiting import wait_for

    timeout_s = 3.0
    procs = _start_workers(tmp_path, DDS_POLICY, steps=1_000_000, peer_timeout_s=timeout_s)
    try:
        wait_for(lambda: "step 5:" in (tmp_path / "edge.log").read_text(errors="replace")
                 or any(p.poll() is not None for p in procs.values()), 60, "worker_o (edge) at step 5",
                 lambda: str(_logs(tmp_path)))
        assert all(p.poll() is None for p in procs.values()), _logs(tmp_path)
        procs["cloud"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        edge = procs["edge"].wait(timeout=timeout_s + 10)
        edge_s = time.monotonic() - killed
        device = procs["device"].wait(timeout=timeout_s + 10)  # its messages come from worker_o, now gone too
    finally:
        _stop(procs)
    logs = _logs(tmp_path)
    assert edge == 1 and device == 1, logs
    assert edge_s < timeout_s + 5
    assert "from cloud within 3.0 s: the cloud worker is gone or stalled" in logs["edge"], logs["edge"]
    assert "from edge within 3.0 s" in logs["device"], logs["device"]


@pytest.mark.system
def test_a_worker_that_never_comes_is_named(ros_env, tmp_path):
    procs = _start_workers(tmp_path, DDS_POLICY, roles=("device", "edge"), steps=3, startup_timeout_s=2.0)
    try:
        codes = {role: proc.wait(timeout=30) for role, proc in procs.items()}
    finally:
        _stop(procs)
    logs = _logs(tmp_path)
    assert codes == {"device": 1, "edge": 1}, logs
    # the edge may not be up within 2 s either on a loaded machine: "no cloud and no edge worker"
    assert "found no cloud" in logs["device"] and "worker within 2.0 s" in logs["device"], logs["device"]
