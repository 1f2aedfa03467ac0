"""L2S benchmark (issue 13): LinUCB-E on the nodes against fixed splits, on an emulated link whose rate changes.

Runs, one after the other, ``hiertrain launch edge_cloud --link SCHEDULE --edge-cpu-quota F`` (the package's own
camera_sim, edge_node, cloud_node and fallback_node on real DDS, the cloud behind a tbf-shaped uplink) once per
candidate split with ``split_policy: fixed``, then once with ``split_policy: linucb`` over the same candidates.
From each run's report (the runner's batch timeline: when the edge made and the cloud trained each batch, at
which split) it computes the per-sample training delay over time, per link segment, and:

- best fixed in hindsight: the fixed run with the lowest delay over the whole schedule;
- Algorithm 1's static choice (``core.planner.select_position`` at the first segment's rate, see
  :func:`algorithm1`);
- the oracle: per segment, the best fixed run's delay in that segment (moves free);
- the steady oracle: per segment, the best of the ``steady:P@RATE`` runs, each a fixed split P on a link held at the
  segment's rate from the start (no backlog from an earlier, slower segment), in the same window;
- LinUCB-E's delay per segment after its first ``--rounds`` rounds there, against both oracles in the same window;
- cumulative regret (seconds) against the oracle.

Needs root, iproute2 and the cgroup-v1 CPU controller (docs/linkbench.md).  docs/l2s_bench.md has the set-up.

    sudo .venv/bin/python benchmarks/l2s_bench.py --json docs/l2s_bench.json --plot docs/l2s_bench.png
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--link", default="4g@0,3g@50,1e6@100,4g@150",
                   help="rate schedule, seconds after the warm-up (core.runtime.parse_link_schedule)")
    p.add_argument("--segment-s", type=float, default=50.0, help="length of the last segment of the schedule")
    p.add_argument("--warmup-s", type=float, default=25.0,
                   help="start-up at the first rate before the schedule's 0, not counted (nodes start, edge profiles)")
    p.add_argument("--candidates", default="3,8", help="split positions: one fixed run each, and LinUCB-E's arms")
    p.add_argument("--edge-cpu-quota", type=float, default=0.5, help="the edge node's share of one core")
    p.add_argument("--camera-hz", type=float, default=400.0)
    p.add_argument("--coding", default="none", help="edge_node.coding (none: the wire bits differ per split)")
    p.add_argument("--round-steps", type=int, default=2, help="edge_node.split_round_steps")
    p.add_argument("--rounds", type=int, default=50, help="LinUCB-E is compared with the oracle after this many "
                                                          "rounds in each segment")
    p.add_argument("--bin-s", type=float, default=5.0, help="time bin of the delay-over-time curve")
    p.add_argument("--acc-batches", type=int, default=50, help="final accuracy: the cloud's last N training batches")
    p.add_argument("--set", action="append", default=[], metavar="NODE.NAME=VALUE",
                   help="more parameter overrides for every run")
    p.add_argument("--runs", default="all",
                   help="'all', or a comma list of linucb, fixed:P and steady (every steady:P@RATE run)")
    p.add_argument("--log-dir", default=None, help="node logs and each run's raw report under DIR/RUN/")
    p.add_argument("--reanalyse", action="store_true",
                   help="run nothing: analyse the raw reports an earlier run left under --log-dir")
    p.add_argument("--json", required=True)
    p.add_argument("--plot", default=None, help="PNG: delay over time and cumulative regret")
    return p.parse_args(argv)


# ---- running ----------------------------------------------------------------------------------------------


def launch_schedule(schedule: list[tuple[float, float]], warmup_s: float) -> str:
    """Return the schedule shifted by the warm-up, which runs at the first rate."""
    items = [f"{schedule[0][1]:.6g}@0"] + [f"{rate:.6g}@{start + warmup_s:g}" for start, rate in schedule]
    return ",".join(items)


def run_overrides(args, policy: str, point: int) -> list[str]:
    sets = [f"camera_sim.rate_hz={args.camera_hz:g}",
            "camera_sim.holdout_every=100000000",  # every frame labelled: the link carries training only
            "edge_node.predict_every=100000001",  # no answers offloaded (the fallback still runs)
            f"edge_node.coding={args.coding}",
            # In flight at most 8 batches: at 3G an uncoded position-3 batch is 0.48 s of link, and with the default
            # 16 in flight (7.6 s) the 3 s resend timer sent most of them twice (measured: 77 resends in 25 s).
            # resend_after_s also paces the edge's move request, which carries the moving layers' weights and
            # optimizer state over the shaped link: at 6 s the resent copies filled the link (a 34.5 s move, then
            # no batch got through), so 30 s.
            "edge_node.unacked_max=8", "edge_node.resend_after_s=30.0",
            f"split_point={point}", f"split_policy={policy}"]
    if policy == "linucb":
        sets += [f"split_candidates={args.candidates}", f"edge_node.split_round_steps={args.round_steps}"]
    return sets + list(args.set)


def launch(name: str, sets: list[str], link: str, duration: float, args, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.json"
    cmd = [sys.executable, "-m", "hiertrain_ros.cli", "launch", "edge_cloud", "--link", link,
           "--duration", f"{duration:g}", "--edge-cpu-quota", f"{args.edge_cpu_quota:g}",
           "--json", str(report), "--log-dir", str(out)]
    for item in sets:
        cmd += ["--set", item]
    print(f"[l2s_bench] {name}: {' '.join(cmd[2:])}", flush=True)
    start = time.monotonic()
    with open(out / "launch.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    print(f"[l2s_bench] {name}: exit {proc.returncode} after {time.monotonic() - start:.0f} s", flush=True)
    if not report.exists():
        raise RuntimeError(f"{name}: no report ({out / 'launch.log'})")
    result = json.loads(report.read_text())
    result["launch_exit"] = proc.returncode
    return result


# ---- analysis ---------------------------------------------------------------------------------------------


def timeline(report: dict) -> list[tuple]:
    """(seq, edge time, cloud time or None, split, cloud accuracy) with times on the schedule's clock."""
    t0 = report["started_after_monitor_s"]
    return [(seq, te - t0, None if tc is None else tc - t0, split, acc)
            for seq, te, tc, split, acc in report["batch_timeline"]]


def samples_trained(rows, a: float, b: float, batch: int, made_from: float = -math.inf) -> int:
    """Count the samples the cloud trained in [a, b), of batches the edge made at ``made_from`` or later."""
    return batch * sum(1 for r in rows if r[2] is not None and a <= r[2] < b and r[1] >= made_from)


def delay_ms(rows, a: float, b: float, batch: int, made_from: float = -math.inf) -> float | None:
    """Per-sample training delay over [a, b): the time over the samples the cloud trained in it (ms/sample).

    A link segment passes its own start as ``made_from``: a backlog the edge made in the previous segment (a slow
    link's outbox, trained once the link is fast again) belongs to that segment's link, and counts in none.
    """
    n = samples_trained(rows, a, b, batch, made_from)
    return 1e3 * (b - a) / n if n else None


def round_times(rows, a: float, b: float, round_steps: int, rounds: int) -> tuple[float | None, int]:
    """When the edge finished ``rounds`` rounds (``round_steps`` batches each) made in [a, b), and how many it made."""
    made = sorted(r[1] for r in rows if a <= r[1] < b)
    full = len(made) // round_steps
    k = rounds * round_steps
    return (made[k - 1] if len(made) >= k else None), full


def split_changes(rows) -> list[tuple[float, int]]:
    """(edge time, split) at each change of the split the edge's batches were made at."""
    out, last = [], None
    for r in rows:
        if r[3] is not None and r[3] != last:
            out.append((round(r[1], 2), r[3]))
            last = r[3]
    return out


def batches_row(report: dict) -> dict:
    b = report["batches"]
    edge = report["node_status"].get("edge_node", {})
    cloud = report["node_status"].get("cloud_node", {})
    ages = b["not_trained_by_cloud_age_s"]
    return {"made": b["edge"], "trained": b["cloud"], "trained_twice": b["cloud_trained_twice"],
            # made and trained when the edge sent its last status: the moment of its outbox and dropped counts
            "at_edge_status": b.get("at_edge_status"),
            "untrained_at_end": len(ages), "untrained_older_than_30s": sum(a > 30 for a in ages),
            "outbox_dropped": int(edge.get("outbox_dropped", 0)), "outbox_expired": int(edge.get("outbox_expired", 0)),
            "outbox_at_end": int(edge.get("outbox", 0)), "unacked_at_end": int(edge.get("unacked", 0)),
            "move_discarded": int(edge.get("move_discarded", 0)), "resent": int(edge.get("resent", 0)),
            "cloud_rejected": sum(int(v) for k, v in cloud.items() if k.startswith("rejected") and v.isdigit())}


def _scored(rows) -> list[tuple]:
    """Return the batches the cloud trained and scored (each before it was trained on), in the order trained."""
    return sorted((r for r in rows if r[2] is not None and r[4] is not None), key=lambda r: r[2])


def final_accuracy(rows, n: int) -> float | None:
    """Mean training accuracy of the cloud's exit on its last ``n`` batches, each scored before it was trained on."""
    accs = [r[4] for r in _scored(rows)]
    return sum(accs[-n:]) / len(accs[-n:]) if accs else None


def accuracy_around_moves(rows, n: int = 40, first: int = 10) -> list[dict]:
    """Per change of the split the cloud trained at: its accuracy on the batches around it.

    On the ``n`` batches before, the ``first`` after and the ``n`` after (see :func:`_scored`).
    """
    scored = _scored(rows)
    out = []
    for i in range(1, len(scored)):
        if scored[i][3] != scored[i - 1][3]:
            def mean(part):
                return sum(r[4] for r in part) / len(part)
            out.append({"cloud_s": round(scored[i][2], 2), "from": scored[i - 1][3], "to": scored[i][3],
                        "before": mean(scored[max(0, i - n):i]), "first_after": mean(scored[i:i + first]),
                        "after": mean(scored[i:i + n])})
    return out


def algorithm1(candidates: list[int], rate_bps: float, quota: float, measured_s_per_sample: dict) -> dict:
    """Algorithm 1's static choice at the first segment's rate (core.planner.select_position).

    Loop 1 (memory) is skipped.  Loop 2 estimates one epoch (50000 samples) with Eq. 1 (core.runtime.estimate_epoch)
    from forward times measured on this machine, the edge's scaled by 1 / quota (its share of one core).  The
    accepted runtime is 1.1 x the fastest estimate.  Loop 3 "measures an epoch" as the fixed run's measured delay in
    the first segment x 50000.  Loop 4 (accuracy) is skipped: the deepest survivor is the choice.
    """
    from hiertrain_ros.core.models import SplitSpec, build_model
    from hiertrain_ros.core.planner import select_position
    from hiertrain_ros.core.runtime import RuntimeParams, beta_for, estimate_epoch, measure_forward_times

    samples, batch = 50000, 32
    model = build_model("vgg16", num_classes=10, width=0.25)
    params = RuntimeParams(alpha=2.0, beta=beta_for("adam"), s_net=rate_bps)
    estimates = {}
    for p in candidates:
        spec = SplitSpec(arch="vgg16", split_point=p, width=0.25, num_classes=10, bits=4, budget_bits=16384)
        times = measure_forward_times(spec, batch, 5, "cpu", model=model)
        estimates[p] = estimate_epoch(spec, samples, batch, params, times, 1.0 / quota, model=model)["T_hier"]
    max_runtime = 1.1 * min(estimates.values())
    result = select_position(candidates, edge_bytes=lambda p: 0, estimate_runtime=estimates.get,
                             measure_epoch=lambda p: measured_s_per_sample[p] * samples,
                             train_accuracy=lambda p: math.nan, max_runtime=max_runtime)
    return {"chosen": result.chosen, "estimated_epoch_s": estimates, "max_runtime_s": max_runtime,
            "measured_epoch_s": result.measured_s, "s2": result.s2, "s3": result.s3, "rate_bps": rate_bps}


def segment_bounds(schedule, segment_s: float) -> list[tuple[float, float, float]]:
    """(start, end, rate) per link segment, on the schedule's clock."""
    duration = schedule[-1][0] + segment_s
    return [(start, (schedule[i + 1][0] if i + 1 < len(schedule) else duration), rate)
            for i, (start, rate) in enumerate(schedule)]


def steady_names(schedule, candidates: list[int]) -> list[str]:
    """Name the steady runs: each candidate on a link held at each of the schedule's rates."""
    rates = sorted({rate for _, rate in schedule}, reverse=True)
    return [f"steady:{p}@{rate:.6g}" for rate in rates for p in candidates]


def steady_oracle(rows: dict, a: float, u: float, b: float, rate: float, batch: int) -> tuple[str | None, float | None]:
    """Return the best steady run at ``rate`` and its delay over [u, b) of a segment that starts at ``a``.

    Each steady run is measured in the same window of its own clock (which starts after its warm-up).  It holds the
    link at one rate from its start, so no slower segment left a backlog in its outbox: its delay is the split's own
    at that rate, which is what an oracle that knows the true per-split costs pays.
    """
    seg = {n: delay_ms(r, u - a, b - a, batch, 0.0) for n, r in rows.items()
           if n.startswith("steady:") and math.isclose(float(n.rpartition("@")[2]), rate, rel_tol=1e-6)}
    seg = {n: d for n, d in seg.items() if d}
    if not seg:
        return None, None
    best = min(seg, key=seg.get)
    return best, seg[best]


def analyse(runs: dict, schedule, args) -> dict:
    batch = 32
    bounds = segment_bounds(schedule, args.segment_s)
    duration = bounds[-1][1]
    rows = {name: timeline(r) for name, r in runs.items()}
    out = {"segments": [{"start_s": a, "end_s": b, "rate_bps": rate} for a, b, rate in bounds], "runs": {}}
    for name, report in runs.items():
        rr = rows[name]
        edge = report["node_status"].get("edge_node", {})
        out["runs"][name] = {
            "segment_delay_ms": [delay_ms(rr, a, b, batch, a) for a, b, _ in bounds],
            "total_delay_ms": delay_ms(rr, 0.0, duration, batch),
            "samples_trained": samples_trained(rr, 0.0, duration, batch),
            "first_cloud_batch_s": min((r[2] for r in rr if r[2] is not None), default=None),
            "delay_over_time": [(t + args.bin_s / 2, delay_ms(rr, t, t + args.bin_s, batch))
                                for t in _bins(-args.warmup_s, duration, args.bin_s)],
            "splits": split_changes(rr),
            "moves": int(edge.get("moves", 0)), "moves_abandoned": int(edge.get("moves_abandoned", 0)),
            "move_pause_ms_last5": edge.get("move_pause_ms", ""),
            "link_rate_seen_bps": edge.get("link_rate_seen_bps"),
            "edge_steps": edge.get("steps"),
            "batches": batches_row(report),
            "final_accuracy": final_accuracy(rr, args.acc_batches),
            "accuracy_around_moves": accuracy_around_moves(rr),
            "edge_frames": edge.get("frames"), "edge_dropped_train_buffer": edge.get("dropped_train_buffer"),
            "launch_exit": report.get("launch_exit"), "exit_codes": report.get("exit_codes"),
        }
    steady = [steady_oracle(rows, a, a, b, rate, batch) for a, b, rate in bounds]
    if any(d for _, d in steady):
        out["steady_oracle_arm_per_segment"] = [n for n, _ in steady]
        out["steady_oracle_segment_delay_ms"] = [d for _, d in steady]
    fixed = {n: v for n, v in out["runs"].items() if n.startswith("fixed:")}
    if not fixed:
        return out
    best = min(fixed, key=lambda n: fixed[n]["total_delay_ms"] or math.inf)
    out["best_fixed"] = best
    oracle = []
    for i, (a, b, _) in enumerate(bounds):
        seg = {n: v["segment_delay_ms"][i] for n, v in fixed.items() if v["segment_delay_ms"][i]}
        oracle.append(min(seg, key=seg.get) if seg else None)
    out["oracle_arm_per_segment"] = oracle
    out["oracle_segment_delay_ms"] = [fixed[o]["segment_delay_ms"][i] if o else None for i, o in enumerate(oracle)]
    # The oracle trains, per segment, what the best fixed run trained there: moves cost it nothing.
    oracle_samples = sum(samples_trained(rows[o], a, b, batch, a) for o, (a, b, _) in zip(oracle, bounds) if o)
    out["oracle_total_delay_ms"] = 1e3 * duration / oracle_samples if oracle_samples else None
    if "linucb" in runs:
        lin = rows["linucb"]
        after = []
        for i, (a, b, rate) in enumerate(bounds):
            t, rounds = round_times(lin, a, b, args.round_steps, args.rounds)
            row = {"segment": i, "rounds_in_segment": rounds, "window_start_s": t, "oracle": oracle[i]}
            if t is not None and b - t >= args.bin_s and oracle[i]:
                row["linucb_ms"] = delay_ms(lin, t, b, batch, a)
                row["oracle_ms"] = delay_ms(rows[oracle[i]], t, b, batch, a)
                row["ratio"] = row["linucb_ms"] / row["oracle_ms"] if row["linucb_ms"] and row["oracle_ms"] else None
            if t is not None and b - t >= args.bin_s:
                row["steady_oracle"], row["steady_oracle_ms"] = steady_oracle(rows, a, t, b, rate, batch)
                if row.get("linucb_ms") and row["steady_oracle_ms"]:
                    row["steady_ratio"] = row["linucb_ms"] / row["steady_oracle_ms"]
            after.append(row)
        out["linucb_after_rounds"] = after
        out["regret"] = {n: regret_curve(rows[n], rows, oracle, bounds, batch, args.bin_s)
                         for n in [*fixed, "linucb"]}
        lin_total = out["runs"]["linucb"]["total_delay_ms"]
        ratios = [r.get("ratio") for r in after]
        out["targets"] = {
            "within_10pct_of_oracle_after_rounds": {
                "met": bool(ratios) and all(x is not None and x <= 1.10 for x in ratios),
                "ratios": ratios},
            **({"within_10pct_of_steady_oracle_after_rounds": {
                "met": all(r.get("steady_ratio") is not None and r["steady_ratio"] <= 1.10 for r in after),
                "ratios": [r.get("steady_ratio") for r in after]}} if "steady_oracle_segment_delay_ms" in out else {}),
            "beats_best_fixed": {"met": bool(lin_total and lin_total < fixed[best]["total_delay_ms"]),
                                 "linucb_ms": lin_total, "best_fixed_ms": fixed[best]["total_delay_ms"]},
            "zero_batches_lost": {"met": _lost(out["runs"]["linucb"]["batches"]) <= 0,
                                  "lost": _lost(out["runs"]["linucb"]["batches"])},
            "accuracy_within_1pt": _acc_target(out["runs"]["linucb"]["final_accuracy"],
                                               fixed[best]["final_accuracy"]),
        }
    return out


def _lost(b: dict) -> int:
    """Batches lost silently: made, never trained, not counted as dropped by the edge and not held by it at the end.

    The edge counts the batches it drops: the oldest when its outbox is full (a link slower than the edge), those
    past their age, and those not yet sent when a move began (made for the old split, see docs/l2s_bench.md).
    The edge's counts come from its last status, up to a second before the end; made and trained are counted at
    that status's moment (the runner's ``at_edge_status``).  A report from before that has only the end's counts,
    where a count a few off zero means the status lagged, never that a batch was trained twice.
    """
    now = b.get("at_edge_status") or b  # a report from before the counts at the edge's status: at the end
    return now["made"] - now["trained"] - _counted(b) - b["outbox_at_end"] - b["unacked_at_end"]


def _counted(b: dict) -> int:
    return b["outbox_dropped"] + b["outbox_expired"] + b["move_discarded"]


def _acc_target(lin, best) -> dict:
    if lin is None or best is None:
        return {"met": False, "linucb": lin, "best_fixed": best}
    return {"met": lin >= best - 0.01, "linucb": lin, "best_fixed": best}


def _bins(a: float, b: float, step: float) -> list[float]:
    n = int(math.floor((b - a) / step + 1e-9))
    return [a + k * step for k in range(n)]


def regret_curve(rr, rows, oracle, bounds, batch: int, step: float) -> list[tuple[float, float]]:
    """Cumulative regret (s) against the oracle: time spent beyond what the oracle would need for the same samples.

    At each bin end t: sum over segments of (time in the segment up to t) - (samples trained there) x the oracle's
    delay in that segment.
    """
    curve = []
    end = bounds[-1][1]
    for t in [*_bins(0.0, end, step)[1:], end]:
        r = 0.0
        for o, (a, b, _) in zip(oracle, bounds):
            if not o or t <= a:
                continue
            d = delay_ms(rows[o], a, b, batch, a)
            if d is None:
                continue
            u = min(t, b)
            r += (u - a) - samples_trained(rr, a, u, batch, a) * d / 1e3
        curve.append((t, r))
    return curve


# ---- output -----------------------------------------------------------------------------------------------


def print_tables(summary: dict) -> None:
    segs = summary["segments"]
    head = ["run"] + [f"seg{i} {s['rate_bps'] / 1e6:.3g}M" for i, s in enumerate(segs)] + [
        "total", "moves", "pauses_ms", "made", "trained", "dropped (counted)", "lost", "final_acc"]
    print("\nPer-sample training delay (ms/sample) per link segment:")
    print(" | ".join(head))
    for name, v in summary["runs"].items():
        if name.startswith("steady:"):  # one segment each, below
            continue
        cells = [name] + [_f(x) for x in v["segment_delay_ms"]] + [
            _f(v["total_delay_ms"]), str(v["moves"]), v["move_pause_ms_last5"] or "-",
            str(v["batches"]["made"]), str(v["batches"]["trained"]), str(_counted(v["batches"])),
            str(_lost(v["batches"])),
            _f(v["final_accuracy"], 3)]
        print(" | ".join(cells))
    if "oracle_segment_delay_ms" in summary:
        print(" | ".join(["oracle"] + [_f(x) for x in summary["oracle_segment_delay_ms"]]
                         + [_f(summary["oracle_total_delay_ms"])]))
        print(f"oracle arms per segment: {summary['oracle_arm_per_segment']}; best fixed: {summary['best_fixed']}")
    steady = {n: v["segment_delay_ms"][0] for n, v in summary["runs"].items() if n.startswith("steady:")}
    if steady:
        print("steady runs (ms/sample over the first segment's length): "
              + ", ".join(f"{n} {_f(d)}" for n, d in steady.items()))
    if "steady_oracle_segment_delay_ms" in summary:
        print(" | ".join(["steady oracle"] + [_f(x) for x in summary["steady_oracle_segment_delay_ms"]]))
        print(f"steady oracle runs per segment: {summary['steady_oracle_arm_per_segment']}")
    if "algorithm1" in summary:
        print(f"Algorithm 1's static choice: {summary['algorithm1']['chosen']}")
    for row in summary.get("linucb_after_rounds", []):
        print(f"segment {row['segment']}: {row['rounds_in_segment']} rounds; after {summary['rounds']} rounds "
              f"(from {_f(row['window_start_s'])} s): linucb {_f(row.get('linucb_ms'))} vs oracle "
              f"{_f(row.get('oracle_ms'))} ms/sample, ratio {_f(row.get('ratio'), 3)}; steady oracle "
              f"{_f(row.get('steady_oracle_ms'))}, ratio {_f(row.get('steady_ratio'), 3)}")
    for name, v in summary["runs"].items():
        for m in v.get("accuracy_around_moves", []):
            print(f"{name}: the cloud's accuracy around the {m['from']}->{m['to']} move at {_f(m['cloud_s'])} s: "
                  f"{_f(m['before'], 3)} on the 40 batches before, {_f(m['first_after'], 3)} on the first 10 after, "
                  f"{_f(m['after'], 3)} on the 40 after")
    for name, t in summary.get("targets", {}).items():
        print(f"target {name}: {'met' if t['met'] else 'MISSED'} {({k: v for k, v in t.items() if k != 'met'})}")


def _f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    colors = {name: f"C{i}" for i, name in enumerate(summary["runs"])}  # one colour per run in both panels
    for name, v in summary["runs"].items():
        if name.startswith("steady:"):  # each on its own constant link: not on the schedule's clock
            continue
        pts = [(t, d) for t, d in v["delay_over_time"] if d is not None]
        ax1.plot([t for t, _ in pts], [d for _, d in pts], label=name, lw=2.2 if name == "linucb" else 1.2,
                 color=colors[name])
    for i, (s, d) in enumerate(zip(summary["segments"], summary.get("steady_oracle_segment_delay_ms", []))):
        if d:
            ax1.hlines(d, s["start_s"], s["end_s"], color="black", ls="--", lw=1.0,
                       label="steady oracle" if i == 0 else None)
    for s in summary["segments"]:
        ax1.axvline(s["start_s"], color="grey", lw=0.6, ls=":")
        ax1.text(s["start_s"] + 1, 0.98, f"{s['rate_bps'] / 1e6:.3g} Mbit/s", transform=ax1.get_xaxis_transform(),
                 va="top", fontsize=8)
    moves = [t for t, _ in summary["runs"].get("linucb", {}).get("splits", [])[1:]]
    for t in moves:
        ax1.axvline(t, color="black", lw=0.5, alpha=0.4)
    ax1.set_yscale("log")
    ax1.set_ylabel("training delay [ms/sample]")
    ax1.set_title("per-sample training delay (cloud-trained samples per bin); thin black lines: LinUCB-E's moves")
    ax1.legend(fontsize=8)
    for name, curve in summary.get("regret", {}).items():
        ax2.plot([t for t, _ in curve], [r for _, r in curve], label=name, lw=2.2 if name == "linucb" else 1.2,
                 color=colors[name])
    ax2.set_ylabel("cumulative regret vs oracle [s]")
    ax2.set_xlabel("time after the warm-up [s]")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    from hiertrain_ros.core.runtime import parse_link_schedule

    args = parse_args(argv)
    schedule = parse_link_schedule(args.link)
    candidates = [int(p) for p in args.candidates.split(",")]
    names = ["linucb", *(f"fixed:{p}" for p in candidates), "steady"] if args.runs == "all" else args.runs.split(",")
    if "steady" in names:
        names.remove("steady")
        names += steady_names(schedule, candidates)
    duration = args.warmup_s + schedule[-1][0] + args.segment_s
    link = launch_schedule(schedule, args.warmup_s)
    longest = max(b - a for a, b, _ in segment_bounds(schedule, args.segment_s))
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="l2s_bench-"))
    if args.reanalyse and not args.log_dir:
        raise SystemExit("--reanalyse needs --log-dir")
    runs, overrides = {}, {}
    for name in names:
        policy, _, point = name.partition(":")
        point, _, rate = point.partition("@")
        point = int(point) if point else candidates[0]
        if rate:  # a steady run: fixed at ``point`` on a link held at ``rate``
            policy, run_s = "fixed", args.warmup_s + longest
            run_link = launch_schedule([(0.0, float(rate))], args.warmup_s)
        else:
            run_link, run_s = link, duration
        sets = overrides[name] = run_overrides(args, policy, point)
        out = log_dir / name.replace(":", "_")
        report = json.loads((out / "report.json").read_text()) if args.reanalyse else launch(
            name, sets, run_link, run_s, args, out)
        # The analysis counts from the end of the warm-up.
        report["started_after_monitor_s"] += args.warmup_s
        runs[name] = report
    summary = analyse(runs, schedule, args)
    fixed = {int(n.split(":")[1]): v["segment_delay_ms"][0] for n, v in summary["runs"].items()
             if n.startswith("fixed:") and v["segment_delay_ms"][0]}
    if len(fixed) == len(candidates):
        summary["algorithm1"] = algorithm1(candidates, schedule[0][1], args.edge_cpu_quota,
                                           {p: d / 1e3 for p, d in fixed.items()})
        summary["algorithm1_run"] = f"fixed:{summary['algorithm1']['chosen']}"
    summary["rounds"] = args.rounds
    summary["config"] = {**vars(args), "launch_link": link, "duration_s": duration,
                         "overrides": overrides}
    print_tables(summary)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.plot:
        plot(summary, args.plot)
    print(f"[l2s_bench] wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
