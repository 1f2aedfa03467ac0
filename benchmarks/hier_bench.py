"""HierTrain benchmark (issue 16, not a test): three hier_worker_node processes over shaped links, per iteration.

The paper's Fig. 7/8 set-up: device-edge 5 Mbit/s, edge-cloud from 1.5 to 5 Mbit/s (device-cloud traffic goes
at the slower of the two, as :class:`core.hierschedule.Links` assumes without a direct link).  The device, edge
and cloud are emulated on this one machine by three network namespaces (:class:`linkbench.netns.MeshEmulator`)
and three cgroup-v1 CPU quotas (default 0.1, 0.3 and 1 core: ratios 1 : 3 : 10).

1. The layer profile is measured on one thread (``profile_layers``) and scaled by 1/cores for each role (a CFS
   quota does not slow millisecond bursts, so per-layer timings under it come out unthrottled); with
   ``--calibrate``, by the ratio of a whole SGD step timed under the role's quota to the profile's step.
2. For each edge-cloud rate, :func:`schedule` picks the policy; it, All-Edge, All-Cloud and the JointDNN-style
   device-cloud split (as a HierTrain policy: the device is worker_l with m_l = k and the whole batch, the cloud
   worker_o; unlike JointDNN it also sends layers 1..k's weights back and forth, Eq. 11), and any policy of your
   own from ``--policies``, each run ``--steps`` real iterations on ROS 2, in ``--repeats`` rounds of shuffled
   order; the measured time is worker_o's median step interval after the first step (the median over the rounds).
3. JSON (``--json``) and a table: predicted (Eq. 12 for the policy run) against measured; and per rate, HierTrain's
   runs against those of the fastest baseline (:func:`against_baselines`).

Needs root (namespaces, tc, cgroups).

    .venv/bin/python benchmarks/hier_bench.py [--model lenet5] [--batch 64] [--steps 6] [--json out/hier_bench.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core.hierschedule import (ROLES, Links, Overheads, Policy, joint_split, problem_from_profiles,
                                             scaled, schedule)
from hiertrain_ros.cli.launch import LINK_PROFILE
from hiertrain_ros.linkbench.netns import CGROUP_CPU, MeshEmulator, unavailable_reason
from hiertrain_ros.ros_common import config_file

# A short CFS period: the quota throttles within a step rather than in 100 ms bursts.  The kernel's smallest quota
# is 1 ms, so a role under 0.1 core gets a longer period (1 ms / cores: 33 ms at 0.03).
CFS_PERIOD_US = 10_000
CFS_MIN_QUOTA_US = 1_000

REPO = Path(__file__).resolve().parents[1]
# No shared memory (it would cross the namespaces and bypass the shaped links) and no other profile: every worker
# gets config/fastdds_link.xml (UDP only, socket buffers larger than the link's queue), as `hiertrain launch --link`
# gives its nodes.  With the default 208 KiB send buffer and UDPv4, a 393 KB message lost datagrams at the sender's
# socket (UdpSndbufErrors) and DDS repaired them: 1.65x the bytes on the link, 0.55-0.7 of the nominal rate.
_DROPPED_ENV = ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "FASTDDS_BUILTIN_TRANSPORTS",
                "FASTRTPS_DEFAULT_PROFILES_FILE")


class Quotas:
    """One cgroup-v1 CPU quota per role; :meth:`confine` moves a process (all its threads) into one."""

    def __init__(self, cores: dict[str, float]):
        self.cores = cores
        self.dirs = {role: CGROUP_CPU / f"hierbench{os.getpid()}-{role}" for role in cores}
        self.period_us = {role: max(CFS_PERIOD_US, math.ceil(CFS_MIN_QUOTA_US / c)) for role, c in cores.items()}

    def __enter__(self):
        for role, d in self.dirs.items():
            d.mkdir(exist_ok=True)
            (d / "cpu.cfs_period_us").write_text(str(self.period_us[role]))
            (d / "cpu.cfs_quota_us").write_text(str(int(round(self.cores[role] * self.period_us[role]))))
        return self

    def confine(self, role: str, pid: int) -> None:
        (self.dirs[role] / "cgroup.procs").write_text(str(pid))

    def __exit__(self, *exc):
        for d in self.dirs.values():
            for pid in (d / "cgroup.procs").read_text().split():  # back to the root group, then remove
                try:
                    (CGROUP_CPU / "cgroup.procs").write_text(pid)
                except OSError:
                    pass
            try:
                d.rmdir()
            except OSError:
                pass


def _python() -> list[str]:
    return [sys.executable]


def profile_one_core(arch: str, width: float, batch: int) -> dict:
    """``profile_layers`` in a child process on one thread, without a quota.

    Not under the quotas: a CFS quota lets a burst shorter than its share of the period run at full speed, so
    per-layer timings of a few milliseconds come out unthrottled (measured: the 0.1-core device's LeNet-5 profile
    as fast as an unlimited one).  Over a whole iteration the quota is a slowdown of 1/cores, which is what
    :func:`scaled` applies.
    """
    code = ("import json, sys, torch\n"
            "torch.set_num_threads(1)\n"
            "from hiertrain_ros.core.hierschedule import profile_layers\n"
            f"p = profile_layers({arch!r}, width={width}, batch_size={batch}, repeats=7)\n"
            "json.dump(p, sys.stdout)\n")
    proc = subprocess.Popen(_python() + ["-c", code], stdout=subprocess.PIPE, cwd=REPO)
    out, _ = proc.communicate(timeout=900)
    if proc.returncode:
        raise RuntimeError(f"profiling failed (exit {proc.returncode})")
    return json.loads(out)


def steps_under_quota(quotas: Quotas, role: str, args) -> dict:
    """Median seconds of one whole-model SGD step on ``args.batch`` samples, one thread, under ``role``'s quota.

    The median over ``args.repeats`` processes (each its own median): under the device's 1 ms per 33 ms, the same
    step came out at 0.667 and 1.003 s in two processes minutes apart, while steps within one process agree.

    A whole step is long against the 10 ms CFS period, so the quota does slow it (unlike a single layer's burst).
    Also the device's preparation of a batch alone, under the same quota.  What a worker adds to the step is timed
    on the node itself (:func:`node_step_s`).
    """
    code = ("import json, os, statistics, sys, time, torch\n"
            "torch.set_num_threads(1)\n"
            "from hiertrain_ros.core.hierexec import WorkerConfig, model_layers\n"
            f"model = torch.nn.Sequential(*model_layers({args.model!r}, width={args.width}, seed=0)).train()\n"
            "opt = torch.optim.SGD(model.parameters(), lr=0.0)\n"
            f"x, y = torch.randn({args.batch}, 3, 32, 32), torch.randint(0, 10, ({args.batch},))\n"
            f"cfg = WorkerConfig(role='device', mapping='device,edge,cloud', m_s=0, m_l=0, b_o={args.batch}, "
            f"b_s=0, b_l=0, arch={args.model!r}, width={args.width})\n"
            "batches = cfg.batches()\n"
            f"open({str(quotas.dirs[role] / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
            "times = []\n"
            "for rep in range(6):\n"
            "    t0 = time.perf_counter()\n"
            "    opt.zero_grad()\n"
            "    torch.nn.functional.cross_entropy(model(x), y).backward()\n"
            "    opt.step()\n"
            "    times.append(time.perf_counter() - t0)\n"
            "prepare = []\n"
            "for step in range(6):\n"
            "    t0 = time.perf_counter()\n"
            "    batches(100 + step)\n"
            "    prepare.append(time.perf_counter() - t0)\n"
            "json.dump({'sgd_step_s': statistics.median(times[1:]), 'batch_s': statistics.median(prepare[1:])},\n"
            "          sys.stdout)\n")
    runs = [json.loads(subprocess.run(_python() + ["-c", code], stdout=subprocess.PIPE, cwd=REPO, timeout=900,
                                      check=True).stdout) for _ in range(args.repeats)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]} | {"runs": runs}


def node_step_s(mesh: MeshEmulator, quotas: Quotas, role: str, args, domain: int, logs: Path) -> list[float]:
    """Seconds per iteration of ``hier_worker_node`` training All-Device under ``role``'s quota, ``args.repeats`` runs.

    That is a worker_o step with no message, as the node runs it: its executor, DDS's threads and the step's Python
    beside the SGD step.  The two idle workers go under the cloud's quota, so that nothing else shares ``role``'s.
    One run alone was off by 18 % from the median of the same policy's runs (1.099 against 0.933 s on the device).
    """
    policy = Policy(("device", "edge", "cloud"), 0, 0, args.batch, 0, 0, 0.0)
    return [run_retried(mesh, quotas, policy, args, (domain + 50 * rep) % 230, logs / str(rep),
                        f"the node's step under the {role} quota (run {rep + 1})",
                        quota_of={"device": role, "edge": "cloud", "cloud": "cloud"})["measured_s"]
            for rep in range(args.repeats)]


def _probe(mesh: MeshEmulator, quotas: Quotas, role: str, domain: int, *probe_args: str) -> subprocess.Popen:
    """Start ``hier_probe.py`` as ``role`` in its namespace; :func:`_go` puts it under its quota."""
    cmd = mesh.exec_prefix(role) + _python() + [str(REPO / "benchmarks" / "hier_probe.py"), *probe_args, "--role", role]
    return subprocess.Popen(cmd, env=_env(mesh, role, domain), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=REPO, text=True)


def _go(quotas: Quotas, probes: dict[str, subprocess.Popen]) -> None:
    """Once every probe has matched its peer (start-up at full speed), confine each to its role's quota; go."""
    for role, proc in probes.items():
        if proc.stdout.readline().strip() != "matched":
            raise RuntimeError(f"the {role} probe did not match its peer (exit {proc.wait(timeout=60)})")
    for role, proc in probes.items():
        quotas.confine(role, proc.pid)  # `ip netns exec` execs: the pid is the probe
    for proc in probes.values():
        proc.stdin.write("go\n")
        proc.stdin.flush()


def _probe_result(proc: subprocess.Popen, what: str) -> dict:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode:
        raise RuntimeError(f"{what}: the probe exited {proc.returncode}")
    return json.loads(out)


def message_cost(mesh: MeshEmulator, quotas: Quotas, role: str, domain: int) -> dict:
    """Seconds to send or receive one small HierTensor under ``role``'s quota (``hier_probe.py loopback``)."""
    proc = _probe(mesh, quotas, role, domain, "loopback")
    try:
        _go(quotas, {role: proc})
        return _probe_result(proc, f"the {role} message probe")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def link_rates(mesh: MeshEmulator, quotas: Quotas, a: str, b: str, domain: int, size_bytes: int) -> list[dict]:
    """Effective rates a->b and b->a of a ``size_bytes`` HierTensor, each side under its quota (``hier_probe.py``).

    The bench sends the size of the whole batch's INPUT, the largest message of any policy (All-Cloud's).
    """
    size = ["--bytes", str(size_bytes), "--repeats", "2"]
    probes = {b: _probe(mesh, quotas, b, domain, "link", "--peer", a, *size),
              a: _probe(mesh, quotas, a, domain, "link", "--peer", b, "--lead", *size)}
    try:
        _go(quotas, probes)
        result = _probe_result(probes[a], f"the {a}-{b} link probe")
        _probe_result(probes[b], f"the {b}-{a} link probe")
    finally:
        for proc in probes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return result["directions"]


def profile_step_s(profile: dict, batch: int) -> float:
    """One whole-model SGD step on ``batch`` samples as the profile predicts it."""
    return sum(batch * (lay["forward_s"] + lay["backward_s"]) + lay["update_s"] for lay in profile["layers"])


def largest_message_bytes(profile: dict, batch: int) -> int:
    """Return the bytes of the largest message any policy sends.

    That is the whole batch's input, a layer's activations for the whole batch (float32) or one layer's parameters.
    Each shaped link's queue holds two (:class:`MeshEmulator`): a message dropped at the shaper would be repaired by
    DDS only at its next periodic heartbeat (``config/fastdds_link.xml``).
    """
    layers = profile["layers"]
    bits = max(batch * profile["sample_bits"], batch * max(lay["output_bits"] for lay in layers),
               max(lay["param_bits"] for lay in layers))
    return math.ceil(bits / 8)


def _env(mesh: MeshEmulator, role: str, domain: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    # The other two by unicast as well as multicast: discovery over the shaped veths once missed a peer for 120 s.
    peers = ";".join(mesh.address(peer, role) for peer in ROLES if peer != role)
    env.update(FASTDDS_DEFAULT_PROFILES_FILE=str(config_file(LINK_PROFILE)), ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET",
               ROS_STATIC_PEERS=peers, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    return env


def run_policy(mesh: MeshEmulator, quotas: Quotas, policy: Policy, args, domain: int, logs: Path,
               quota_of: dict[str, str] | None = None, **extra) -> dict:
    """Run the three workers for ``args.steps`` iterations of ``policy``; worker_o's median step time.

    ``quota_of`` maps a worker's role to the role whose quota it runs under (default its own).  ``extra`` are more
    worker parameters (``steps``, ``data``, ``dump_path``), overriding the defaults.
    """
    quota_of = quota_of or {role: role for role in ROLES}
    params = {"mapping": ",".join(policy.mapping), "m_s": policy.m_s, "m_l": policy.m_l, "b_o": policy.b_o,
              "b_s": policy.b_s, "b_l": policy.b_l, "arch": args.model, "width": args.width,
              "steps": args.steps, "lr": args.lr, "momentum": args.momentum, "peer_timeout_s": 60.0,
              "startup_timeout_s": 120.0, **extra}
    procs, logfiles = {}, {}
    starts = {role: logs / f"{role}.go" for role in ROLES}  # each made once its worker is under its quota (below)
    try:
        for role in ROLES:
            cmd = mesh.exec_prefix(role) + _python() + ["-m", "hiertrain_ros.hier_worker_node", "--ros-args",
                                                        "-r", f"__node:=hier_{role}", "-p", f"role:={role}"]
            for k, v in params.items():
                cmd += ["-p", f"{k}:={v}"]
            starts[role].unlink(missing_ok=True)
            cmd += ["-p", f"start_file:={starts[role]}"]
            logfiles[role] = logs / f"{role}.log"
            with open(logfiles[role], "wb") as out:
                procs[role] = subprocess.Popen(cmd, env=_env(mesh, role, domain), stdout=out,
                                               stderr=subprocess.STDOUT, cwd=REPO)
        # Start-up (imports, DDS discovery) at full speed; the iterations under the quotas.  Discovery under the
        # 0.03-core quota (confined once the node had logged its role) missed a peer for 120 s twice in a row.  A
        # worker waits for its start file, so no step runs before its confinement (a LeNet-5 All-Device run once
        # did all its steps in the 50 ms before it, and measured 11 ms per iteration against 130).
        confined = set()
        deadline = time.monotonic() + 300
        while len(confined) < len(ROLES) and time.monotonic() < deadline:
            for role in ROLES:
                if role not in confined and " found its peers" in logfiles[role].read_text(errors="replace"):
                    quotas.confine(quota_of[role], procs[role].pid)  # `ip netns exec` execs: the pid is the node
                    starts[role].touch()  # now it may step
                    confined.add(role)
            time.sleep(0.05)
        codes = {role: proc.wait(timeout=1800) for role, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    text = {role: f.read_text(errors="replace") for role, f in logfiles.items()}
    if any(codes.values()):
        raise RuntimeError(f"workers exited {codes}:\n" + "\n".join(f"--- {r}\n{t[-2000:]}" for r, t in text.items()))
    line = [ln for ln in text[policy.mapping[0]].splitlines() if "ms per iteration" in ln][-1]
    measured_ms = float(line.split("steps, ")[1].split(" ms")[0])
    return {"measured_s": measured_ms / 1e3, "exit_codes": codes}


NAMED_POLICIES = ("HierTrain", "All-Device", "All-Edge", "All-Cloud", "JointDNN")
BASELINES = NAMED_POLICIES[1:]


def _work(row: dict) -> tuple:
    """Who trains what in a row's policy: worker_o, then (worker, m, samples) of the tasks S and L that have samples.

    All-Edge and a schedule that puts the whole batch on the edge are one policy whatever the idle workers' order.
    """
    mapping, shares = row["mapping"], row["split"][1:]
    return (mapping[0],) + tuple((w, m, b) for w, m, b in zip(mapping[1:], (row["m_s"], row["m_l"]), shares) if b)


def against_baselines(rows: list[dict]) -> dict | None:
    """HierTrain's runs at one rate against those of the baseline with the lowest median.

    The runs of a policy are separate processes, interleaved with the other policies' runs, so they are independent
    samples; the machine's speed moves between them by 10-20 % (one core's LeNet-5 step took 16-24 ms of CPU in
    processes seconds apart, unconfined).  A one-sided Mann-Whitney U test (scipy) on the two sets of run times says
    whether HierTrain is slower (``p_slower``) or faster (``p_faster``) than that baseline; it needs no assumption
    about the noise's shape, and with 5 runs each it can reach p = 0.004.  None without HierTrain or a baseline run.
    """
    from scipy.stats import mannwhitneyu

    measured = {r["policy"]: r for r in rows if r.get("measured_runs_s")}
    baselines = [name for name in BASELINES if name in measured]
    if "HierTrain" not in measured or not baselines:
        return None
    best = min(baselines, key=lambda name: measured[name]["measured_s"])
    ours, theirs = measured["HierTrain"], measured[best]
    a, b = ours["measured_runs_s"], theirs["measured_runs_s"]
    return {"best_baseline": best, "same_policy": _work(ours) == _work(theirs),
            "median_ratio": ours["measured_s"] / theirs["measured_s"], "runs": [len(a), len(b)],
            "p_slower": float(mannwhitneyu(a, b, alternative="greater").pvalue),
            "p_faster": float(mannwhitneyu(a, b, alternative="less").pvalue)}


def parse_policy(spec: str, args) -> Policy:
    """Return the policy ``o,s,l:m_s,m_l:b_o,b_s,b_l`` (a --policies entry) for ``args.model`` and ``args.batch``."""
    from hiertrain_ros.core.hierexec import check_policy, model_layers

    try:
        roles, depths, split = spec.split(":")
        policy = Policy(tuple(roles.split(",")), *map(int, depths.split(",")), *map(int, split.split(",")), 0.0)
    except (ValueError, TypeError):
        raise ValueError(f"--policies: {spec!r} is none of {', '.join(NAMED_POLICIES)} and not a policy "
                         "o,s,l:m_s,m_l:b_o,b_s,b_l") from None
    check_policy(policy, len(model_layers(args.model, width=args.width)))
    samples = policy.b_o + policy.b_s + policy.b_l
    if samples != args.batch:
        raise ValueError(f"--policies: {spec!r} splits {samples} samples, not the batch of {args.batch}")
    return policy


def run_retried(mesh: MeshEmulator, quotas: Quotas, policy: Policy, args, domain: int, logs: Path, what: str,
                **kwargs) -> dict:
    """:func:`run_policy`, once more if it fails (said in the result: ``retried``)."""
    logs.mkdir(parents=True, exist_ok=True)
    try:
        return run_policy(mesh, quotas, policy, args, domain, logs, **kwargs)
    except RuntimeError as exc:
        print(f"{what} failed, run again: {str(exc)[:2000]}", flush=True)
        shutil.rmtree(logs)
        logs.mkdir()
        return {**run_policy(mesh, quotas, policy, args, domain + 1, logs, **kwargs), "retried": True}


def accuracy_runs(mesh: MeshEmulator, quotas: Quotas, candidates: dict, problem, args, logs: Path) -> dict:
    """Train each policy ``args.accuracy_steps`` steps on ``args.data`` on the nodes; test accuracy of each.

    Every policy is one SGD step of the whole batch per iteration, so all of them should reach the accuracy of
    single-process SGD on the same batches (the reference, computed here) up to float order.
    """
    import torch

    from hiertrain_ros.core.hierexec import dataset_accuracy, dataset_batches, model_layers, sgd_reference

    steps, rows = args.accuracy_steps, []
    logs.mkdir()
    for j, name in enumerate(args.policies):
        policy = candidates[name]
        run_logs = logs / name
        dump = run_logs / "weights.pt"
        domain = 60 + (os.getpid() + 7 + 2 * j) % 150
        t0 = time.monotonic()
        try:
            run = run_retried(mesh, quotas, policy, args, domain, run_logs, f"{name} accuracy run", steps=steps,
                              data=args.data, dump_path=str(dump))
        except RuntimeError as exc:  # failed twice: said in the row, the other policies still run
            rows.append({"policy": name, "error": str(exc)[-600:]})
            print(json.dumps(rows[-1]), flush=True)
            continue
        wall_s = time.monotonic() - t0
        layers = model_layers(args.model, width=args.width, seed=0)
        torch.nn.ModuleList(layers).load_state_dict(torch.load(dump, weights_only=True))
        rows.append({"policy": name, "split": [policy.b_o, policy.b_s, policy.b_l], "m_s": policy.m_s,
                     "m_l": policy.m_l, "mapping": list(policy.mapping),
                     "test_accuracy": dataset_accuracy(layers, args.data),
                     "measured_s": run["measured_s"],
                     "predicted_s": problem.iteration_time(policy.mapping, policy.m_s, policy.m_l, policy.b_o,
                                                           policy.b_s, policy.b_l),
                     "train_s_at_measured": steps * run["measured_s"], "wall_s": wall_s,
                     "retried": run.get("retried", False)})
        print(json.dumps(rows[-1]), flush=True)
    batches = dataset_batches(args.data, args.batch, 1)  # WorkerConfig's data_seed
    reference = sgd_reference(model_layers(args.model, width=args.width, seed=0), (batches(k) for k in range(steps)),
                              lr=args.lr, momentum=args.momentum)
    return {"steps": steps, "samples": steps * args.batch, "data": args.data,
            "edge_cloud_mbps": args.accuracy_mbps or args.edge_cloud_mbps[0],
            "reference_accuracy": dataset_accuracy(list(reference), args.data), "runs": rows}


def plot(result: dict, path: str) -> None:
    """Per-iteration time against the edge-cloud rate: measured (solid) and predicted (dashed) per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    names = list(dict.fromkeys(r["policy"] for r in result["runs"]))
    for i, name in enumerate(names):
        rows = [r for r in result["runs"] if r["policy"] == name and "measured_s" in r]
        # A little apart, so that policies measured at one rate do not hide each other.
        x = [r["edge_cloud_mbps"] + 0.04 * (i - (len(names) - 1) / 2) for r in rows]
        y = [r["measured_s"] for r in rows]
        spread = [[m - min(r.get("measured_runs_s", [m])) for r, m in zip(rows, y)],
                  [max(r.get("measured_runs_s", [m])) - m for r, m in zip(rows, y)]]  # earlier JSONs: one run
        ax.errorbar(x, y, yerr=spread, fmt="o-", color=f"C{i}", capsize=3, label=f"{name} measured (median, range)")
        ax.plot(x, [r["predicted_s"] for r in rows], "x--", color=f"C{i}", alpha=0.6, label=f"{name} predicted")
    c = result["config"]
    ax.set_xlabel("edge-cloud Mbit/s")
    ax.set_ylabel("seconds per iteration")
    ax.set_title(f"HierTrain, {c['model']}, B={c['batch']}, device-edge {c['device_edge_mbps']} Mbit/s, "
                 f"cores {'/'.join(str(v) for v in c['quota'])}", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--width", type=float, default=0.125, help="VGG-16/ResNet-18 width (LeNet-5 has one)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each policy at each rate, in rounds of shuffled order; a row reports their median "
                         "and each run (with --calibrate, also of each timed step of the calibration)")
    ap.add_argument("--device-edge-mbps", type=float, default=5.0)
    ap.add_argument("--edge-cloud-mbps", type=float, nargs="+", default=[1.5, 3.0, 5.0])
    ap.add_argument("--quota", type=float, nargs=3, default=[0.1, 0.3, 1.0], metavar=("DEVICE", "EDGE", "CLOUD"),
                    help="CPU cores of the device, edge and cloud (cgroup-v1 cfs quota)")
    ap.add_argument("--policies", nargs="+", default=["HierTrain", "All-Edge", "All-Cloud", "JointDNN"],
                    help=f"some of {', '.join(NAMED_POLICIES)}, or a policy of your own as "
                         "o,s,l:m_s,m_l:b_o,b_s,b_l (e.g. edge,device,cloud:2,2:60,68,0)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--accuracy-steps", type=int, default=0,
                    help="at --accuracy-mbps, also train each policy this many steps on --data and report the test "
                         "accuracy of worker_o's weights (0: not)")
    ap.add_argument("--accuracy-mbps", type=float, help="edge-cloud rate of the accuracy runs (default: the first)")
    ap.add_argument("--data", default="fashion-mnist", help="the accuracy runs' dataset (core.data.load_dataset)")
    ap.add_argument("--profiles", help="reuse the profiles of an earlier --json instead of measuring")
    ap.add_argument("--calibrate", action="store_true",
                    help="scale each role's profile by a whole step timed under its quota, not by 1/cores, and "
                         "measure the extension's costs (per message, per step, each link's effective rate)")
    ap.add_argument("--paper-model", action="store_true",
                    help="with --calibrate: schedule and predict with Eqs. 1-12 alone (the costs are still measured)")
    ap.add_argument("--trace-dir", help="each policy run's workers write their traces (each send, wait and step "
                                        "end; hier_worker_node's trace_dir) to TRACE_DIR/<rate>-<policy>-<run>/")
    ap.add_argument("--json", default="out/hier_bench.json")
    ap.add_argument("--png", help="plot to this file (default: the JSON's name with .png)")
    ap.add_argument("--plot-only", action="store_true", help="plot the --json of an earlier run and stop")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    try:
        own = {name: parse_policy(name, args) for name in args.policies if name not in NAMED_POLICIES}
    except ValueError as exc:
        ap.error(str(exc))
    png = args.png or str(Path(args.json).with_suffix(".png"))
    if args.plot_only:
        plot(json.loads(Path(args.json).read_text()), png)
        return
    reason = unavailable_reason(need_cgroup=True)
    if reason:
        sys.exit(f"hier_bench: {reason}")
    cores = dict(zip(ROLES, args.quota))
    result = {"config": {**vars(args), "cores": cores, "cpu_count": os.cpu_count()}, "runs": []}
    with Quotas(cores) as quotas, tempfile.TemporaryDirectory(prefix="hierbench-") as tmp:
        result["config"]["cfs_period_us"] = quotas.period_us
        if args.profiles:
            profiles = json.loads(Path(args.profiles).read_text())["profiles"]
        else:
            one_core = profile_one_core(args.model, args.width, args.batch)
            factors = {role: 1.0 / cores[role] for role in ROLES}
            if args.calibrate:  # each role's slowdown from a whole step timed under its quota
                profile_s = profile_step_s(one_core, args.batch)
                steps = {role: steps_under_quota(quotas, role, args) for role in ROLES}
                factors = {role: steps[role]["sgd_step_s"] / profile_s for role in ROLES}
                result["calibration"] = {"profile_step_s": profile_s, "step_under_quota": steps,
                                         "slowdown": factors, "nominal_slowdown": {r: 1 / c for r, c in cores.items()}}
                print(f"calibration: {result['calibration']}", flush=True)
            profiles = {role: scaled(one_core, factors[role]) for role in ROLES}
        result["profiles"] = profiles
        costs = result.setdefault("overheads", {"used_by_the_scheduler": not args.paper_model, "per_rate": []})
        per_message, device_edge = {}, None
        for k, ec in enumerate(args.edge_cloud_mbps):
            de = args.device_edge_mbps
            links = Links(de * 1e6, ec * 1e6)
            rates = {("device", "edge"): de * 1e6, ("edge", "cloud"): ec * 1e6,
                     ("device", "cloud"): links.bps("device", "cloud")}
            largest = largest_message_bytes(profiles["device"], args.batch)
            with MeshEmulator(rates, largest_message_bytes=largest) as mesh:
                overheads = None
                if "calibration" in result:  # the extension's costs, measured apart from the policies' runs
                    probe_domain = 10 + (os.getpid() + 5 * k) % 40
                    if not per_message:
                        per_message = {role: message_cost(mesh, quotas, role, probe_domain + i)
                                       for i, role in enumerate(ROLES)}
                        costs["per_message"] = per_message
                        node_runs = {role: node_step_s(mesh, quotas, role, args, probe_domain + 6 + 2 * i,
                                                       Path(tmp) / f"node-step-{role}")
                                     for i, role in enumerate(ROLES)}
                        node_steps = {role: statistics.median(runs) for role, runs in node_runs.items()}
                        result["calibration"].update(node_step_s=node_steps, node_step_runs_s=node_runs)
                        print(f"the node's All-Device step under each quota: {node_steps}", flush=True)
                    size = args.batch * 3 * 32 * 32  # the whole batch's INPUT (uint8 codes)
                    if device_edge is None:  # the same 5 Mbit/s at every edge-cloud rate
                        device_edge = link_rates(mesh, quotas, "device", "edge", probe_domain + 3, size)
                    directions = (device_edge + link_rates(mesh, quotas, "edge", "cloud", probe_domain + 4, size)
                                  + link_rates(mesh, quotas, "device", "cloud", probe_domain + 5, size))
                    steps = result["calibration"]["step_under_quota"]
                    # A byte's CPU on a role, sent to or received from a peer, as seconds under the role's quota
                    # (CPU-bound: CPU / cores).  Per peer: on the slower links a byte took about 3x the CPU.
                    byte_cpu = {}
                    for d in directions:
                        for end, peer in (("sender", "receiver"), ("receiver", "sender")):
                            if d.get(f"{end}_cpu_per_byte_s") is not None:
                                byte_cpu.setdefault((d[end], d[peer]), []).append(d[f"{end}_cpu_per_byte_s"])
                    overheads = Overheads(
                        shared_uplink=True,
                        per_byte_s={pair: statistics.mean(v) / cores[pair[0]] for pair, v in byte_cpu.items()},
                        per_message_s={role: per_message[role]["per_message_s"] for role in ROLES},
                        per_step_s={role: max(0.0, node_steps[role] - steps[role]["sgd_step_s"]
                                              - steps[role]["batch_s"]) for role in ROLES},
                        batch_s=steps["device"]["batch_s"],
                        rate_bps={(d["sender"], d["receiver"]): d["rate_bps"] for d in directions})
                    costs["per_rate"].append({
                        "edge_cloud_mbps": ec, "links": directions, "shared_uplink": overheads.shared_uplink,
                        "per_message_s": overheads.per_message_s,
                        "per_step_s": overheads.per_step_s, "batch_s": overheads.batch_s,
                        "per_byte_s": {f"{a}-{b}": e for (a, b), e in overheads.per_byte_s.items()},
                        "effective_over_nominal": {f"{a}->{b}": r / links.bps(a, b)
                                                   for (a, b), r in overheads.rate_bps.items()}})
                    print(f"overheads at {ec} Mbit/s: {json.dumps(costs['per_rate'][-1])}", flush=True)
                    write_json(args.json, result)
                paper = problem_from_profiles(profiles, links, args.batch)  # Eqs. 1-12 alone
                problem = paper if args.paper_model else problem_from_profiles(profiles, links, args.batch, overheads)
                best = schedule(problem)
                paper_best = schedule(paper)
                result.setdefault("choices", []).append({"edge_cloud_mbps": ec, "scheduled": best.__dict__,
                                                         "paper_model_choice": paper_best.__dict__})
                split_k, joint_s = joint_split(problem)
                big_b = args.batch
                candidates = {
                    "HierTrain": best,
                    "All-Device": Policy(("device", "edge", "cloud"), 0, 0, big_b, 0, 0, 0.0),
                    "All-Edge": Policy(("edge", "device", "cloud"), 0, 0, big_b, 0, 0, 0.0),
                    "All-Cloud": Policy(("cloud", "device", "edge"), 0, 0, big_b, 0, 0, 0.0),
                    "JointDNN": (Policy(("cloud", "edge", "device"), 0, split_k, 0, 0, big_b, 0.0)
                                 if 0 < split_k < problem.n else  # k = 0 is All-Cloud, k = N All-Device
                                 Policy(("device" if split_k else "cloud", "edge",
                                         "device" if not split_k else "cloud"), 0, 0, big_b, 0, 0, 0.0)),
                    **own,
                }
                # Each policy --repeats times, interleaved (every policy once, then again), so that the machine's
                # drift reaches them alike; a row has the median and every run.  Each round in its own order,
                # shuffled (seeded by the round, so a bench can be repeated), so that no policy always has the same
                # place or follows the same one: in one fixed order the same All-Device policy measured 0.161 s a
                # step as the round's first policy and 0.199 s right after All-Cloud (medians of 4).  A row keeps
                # which policy ran before each of its runs.
                times: dict[str, list[float]] = {name: [] for name in args.policies}
                after: dict[str, list[str | None]] = {name: [] for name in args.policies}
                errors: dict[str, list[str]] = {name: [] for name in args.policies}
                retried = dict.fromkeys(args.policies, 0)
                previous = None
                for rep in range(args.repeats):
                    order = random.Random(1000 * k + rep).sample(args.policies, len(args.policies))
                    for j, name in enumerate(order):
                        logs = Path(tmp) / f"{k}-{name}-{rep}"
                        domain = 60 + (os.getpid() + 2 * (j + len(args.policies) * (rep + args.repeats * k))) % 150
                        run_dir = "-".join((str(ec), re.sub(r"[^\w.-]", "_", name), str(rep + 1)))  # a ROS value
                        trace = {"trace_dir": str(Path(args.trace_dir).resolve() / run_dir)} if args.trace_dir else {}
                        before, previous = previous, name
                        try:
                            run = run_retried(mesh, quotas, candidates[name], args, domain, logs,
                                              f"{name} at {ec} Mbit/s (run {rep + 1})", **trace)
                        except RuntimeError as exc:  # failed twice: said in the row, the other policies still run
                            errors[name].append(str(exc)[-600:])
                            print(f"{name} at {ec} Mbit/s (run {rep + 1}) failed twice: {errors[name][-1]}", flush=True)
                            continue
                        times[name].append(run["measured_s"])
                        after[name].append(before)
                        retried[name] += run.get("retried", False)
                        print(f"{name} at {ec} Mbit/s (run {rep + 1}): {run['measured_s']:.3f} s", flush=True)
                for name in args.policies:
                    policy = candidates[name]
                    shape = (policy.mapping, policy.m_s, policy.m_l, policy.b_o, policy.b_s, policy.b_l)
                    predicted = problem.iteration_time(*shape)
                    row = {"edge_cloud_mbps": ec, "device_edge_mbps": de, "policy": name,
                           "mapping": list(policy.mapping), "m_s": policy.m_s, "m_l": policy.m_l,
                           "split": [policy.b_o, policy.b_s, policy.b_l], "predicted_s": predicted,
                           "paper_model_s": paper.iteration_time(*shape)}
                    if times[name]:
                        measured = statistics.median(times[name])
                        row.update(measured_s=measured, measured_runs_s=times[name], runs_after=after[name],
                                   retried=retried[name], error=measured / predicted - 1 if predicted else None)
                    if errors[name]:
                        row["error_message"] = errors[name][-1]
                        row["failed_runs"] = len(errors[name])
                    if name == "JointDNN":
                        row.update(jointdnn_k=split_k, jointdnn_model_s=joint_s)  # joint_split's (no weight exchange)
                    result["runs"].append(row)
                    print(json.dumps(row), flush=True)
                verdict = against_baselines([r for r in result["runs"] if r["edge_cloud_mbps"] == ec])
                if verdict:
                    result.setdefault("against_baselines", []).append({"edge_cloud_mbps": ec, **verdict})
                write_json(args.json, result)
                if args.accuracy_steps and ec == (args.accuracy_mbps or args.edge_cloud_mbps[0]):
                    result["accuracy"] = accuracy_runs(mesh, quotas, candidates, problem, args, Path(tmp) / f"{k}-acc")
                    write_json(args.json, result)
    if "accuracy" in result:
        acc = result["accuracy"]
        print(f"accuracy after {acc['samples']} samples of {args.data} at {acc['edge_cloud_mbps']} Mbit/s; "
              f"single-process SGD of the same batches: {acc['reference_accuracy']:.4f}")
        print_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in acc["runs"]])
    print_table([{"edge-cloud Mbit/s": r["edge_cloud_mbps"], "policy": r["policy"],
                  "mapping (o,s,l)": ",".join(r["mapping"]), "m_s,m_l": f"{r['m_s']},{r['m_l']}",
                  "b_o,b_s,b_l": ",".join(map(str, r["split"])), "predicted s": round(r["predicted_s"], 3),
                  "Eq. 12 alone s": round(r.get("paper_model_s", r["predicted_s"]), 3),
                  "measured s": round(r["measured_s"], 3), "error": f"{100 * r['error']:+.0f} %",
                  "runs s": " ".join(f"{t:.3f}" for t in r["measured_runs_s"])}
                 for r in result["runs"] if "measured_s" in r])
    if result.get("against_baselines"):
        print("HierTrain's runs against the baseline with the lowest median (one-sided Mann-Whitney U on the runs):")
        print_table([{"edge-cloud Mbit/s": v["edge_cloud_mbps"], "fastest baseline": v["best_baseline"],
                      "same policy": v["same_policy"], "HierTrain / baseline (medians)": round(v["median_ratio"], 3),
                      "p slower": round(v["p_slower"], 3), "p faster": round(v["p_faster"], 3),
                      "runs": "/".join(map(str, v["runs"]))} for v in result["against_baselines"]])
    write_json(args.json, result)
    plot(result, png)


if __name__ == "__main__":
    main()
