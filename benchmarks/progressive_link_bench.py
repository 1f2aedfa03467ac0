r"""Progressive inference over an emulated 3G link, measured on the nodes (issue 12; not a test).

Runs, one after the other, ``hiertrain launch edge_cloud --link 3g`` (the package's own camera_sim, edge_node,
cloud_node and fallback_node on real DDS, the cloud behind a tbf-shaped uplink, docs/linkbench.md) once per
setting: ``offload_policy`` ``always`` (today's: every frame's features go up, the cloud answers), ``never``
(the edge's exit answers every frame) and ``unsure`` at each c_thr (only frames no edge exit is sure about go up).

Every setting starts the edge and the cloud from the same trained weights (``--init DIR``: ``hiertrain train
--save DIR``, or ``--pretrain-epochs`` here) and plays the same ``--frames`` frames: the camera holds every frame
out (``holdout_every: 1``), so no labels come, nothing trains, the weights stay the trained ones and the i-th
frame is the same test image in every run.  From the runner's report and its per-frame answers
(``hiertrain launch --answers-json``), per setting:

- output accuracy on the frames the output answered in every setting (and on all it answered);
- fraction offloaded (the edge's /diagnostics ``frames_offloaded`` over ``frames_offloaded + frames_kept``);
- inference bits on the link per answered frame: the inference feature messages' bytes (the monitor's count),
  and every byte the edge's side of the link sent (the link's counter: DDS headers, discovery, acknowledgements);
- answer latency p50/p99, measured: the answer's DDS source timestamp minus the frame's stamp, on the output
  topic, for all frames and for the frames the edge kept; and on the edge's topic (``always``: today's exit);
  over the frames every setting answered (a run's first answers, while its nodes warm up, are left out);
- cost per 1000 answers: core.progressive.offload_cost of the offloaded frames' cloud time (one time per frame,
  measured here with the core's CloudTrainer on the same weights) and the inference bytes.

The issue's targets: (1) the edge answers confident frames (``unsure``, kept) with p99 latency no worse than
today's early exit (``always``, the edge's topic) + 1 ms; (2) at the default, output accuracy within 0.5 points
of ``always`` while offloading at most 30 % of the frames.

Needs root, iproute2 and the cgroup-v1 CPU controller (docs/linkbench.md):

    .venv/bin/python benchmarks/progressive_link_bench.py --init trained --json docs/progressive_link_bench.json \\
        --png docs/progressive_link_bench.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", default="", help="trained weights for both sides (a directory with edge.pt, cloud.pt)")
    p.add_argument("--pretrain-epochs", type=int, default=0,
                   help="first train --init's weights offline (core.training.train_offline) for this many epochs")
    p.add_argument("--pretrain-lr", type=float, default=1e-3, help="Adam learning rate, cosine to 0, for --pretrain")
    p.add_argument("--settings", default="always,never,unsure@0.8,unsure@0.9",
                   help="comma list of always, never and unsure@C_THR")
    p.add_argument("--link", default="3g", help="hiertrain launch --link")
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--frames", type=int, default=1200, help="frames the camera plays per setting (all held out)")
    p.add_argument("--startup-s", type=float, default=25.0,
                   help="added to frames / camera-hz: the nodes start, and the last answers arrive")
    p.add_argument("--edge-cpu-quota", type=float, default=None, help="hiertrain launch --edge-cpu-quota")
    p.add_argument("--offline-test", type=int, default=10000,
                   help="also sweep c_thr offline (core only) over this many test frames; 0: skip")
    p.add_argument("--price-per-cloud-hour", type=float, default=3.6, help="$ per hour of cloud compute")
    p.add_argument("--price-per-gb", type=float, default=0.09, help="$ per GB transferred")
    p.add_argument("--set", action="append", default=[], metavar="NODE.NAME=VALUE",
                   help="more parameter overrides for every run")
    p.add_argument("--log-dir", default="out/progressive_link", help="node logs and raw reports under DIR/SETTING/")
    p.add_argument("--reanalyse", action="store_true", help="run nothing: analyse the reports under --log-dir")
    p.add_argument("--json", default="out/progressive_link_bench.json")
    p.add_argument("--png", default="out/progressive_link_bench.png")
    return p.parse_args(argv)


def parse_settings(text: str) -> list[tuple[str, float | None]]:
    out = []
    for item in text.split(","):
        policy, _, c_thr = item.strip().partition("@")
        if policy not in ("always", "never", "unsure") or (policy == "unsure") != bool(c_thr):
            raise ValueError(f"--settings: expected always, never or unsure@C_THR, got {item!r}")
        out.append((policy, float(c_thr) if c_thr else None))
    return out


def setting_name(policy: str, c_thr: float | None) -> str:
    return policy if c_thr is None else f"{policy}@{c_thr:g}"


# ---- weights -----------------------------------------------------------------------------------------------


def pretrain(directory: str, epochs: int, lr: float) -> dict:
    """Train the nodes' default model offline and save it for init_from; return its test accuracies."""
    from hiertrain_ros.core.data import load_dataset
    from hiertrain_ros.core.optim import OptimConfig
    from hiertrain_ros.core.training import TrainConfig, train_offline

    Path(directory).mkdir(parents=True, exist_ok=True)
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    steps = epochs * -(-len(train) // 32)
    config = TrainConfig(arch="vgg16", split_point=3, width=0.25, bits=4, num_classes=10, epochs=epochs,
                         optim=OptimConfig(lr=lr, cosine_steps=steps))
    result = train_offline(config, train, test, save_dir=directory)
    return {k: result[k] for k in ("final_accuracy", "early_exit_accuracy", "train_seconds", "train_samples",
                                   "test_samples")} | {"epochs": epochs, "lr": lr}


def trained_parts(init: str):
    """Return the nodes' default edge and cloud (core trainers) on the trained weights ``init`` (as init_from)."""
    import torch

    from hiertrain_ros.core import checkpoint
    from hiertrain_ros.core.archs import SplitSpec
    from hiertrain_ros.core.models import build_cloud, build_edge
    from hiertrain_ros.core.optim import paper_optim
    from hiertrain_ros.core.training import CloudTrainer, EdgeTrainer

    torch.set_num_threads(1)
    spec = SplitSpec("vgg16", split_point=3, width=0.25, bits=4)
    edge = EdgeTrainer(build_edge(spec, seed=0), spec, paper_optim("vgg16"))
    cloud = CloudTrainer(build_cloud(spec, seed=0), spec, paper_optim("vgg16"))
    edge.load_weights(*checkpoint.load_init(init, "edge", spec))
    cloud.load_weights(*checkpoint.load_init(init, "cloud", spec))
    edge.model.eval()
    return edge, cloud


def cloud_seconds_per_frame(init: str, frames: int = 64) -> float:
    """Median time of the cloud's answer to one offloaded frame, on the trained weights (core only)."""
    import torch

    from hiertrain_ros.core import codec
    from hiertrain_ros.core.data import batches, load_dataset

    edge, cloud = trained_parts(init)
    test = load_dataset("fashion-mnist", "test")
    times = []
    with torch.no_grad():
        for i, (images, _) in enumerate(batches(test, 1, shuffle=False)):
            if i == frames:
                break
            features, _ = edge.model.forward_exits(images)
            payload = codec.encode(features, bits=edge.spec.bits, split_point=edge.spec.split_point,
                                   coding=edge.coding, model_hash=edge.model_hash)
            start = time.perf_counter()
            cloud.predict(payload)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def offline_sweep(init: str, test_frames: int, thresholds: list[float]) -> dict:
    """Accuracy and share offloaded of always, never and unsure at each c_thr over many more test frames.

    Core only, the same weights (progressive_bench's forward and sweep): the nodes' runs answer ~1,200 frames,
    too few to tell apart accuracies a few tenths of a point apart.
    """
    import progressive_bench

    from hiertrain_ros.core.data import Frames, load_dataset

    edge, cloud = trained_parts(init)
    test = load_dataset("fashion-mnist", "test")
    test = Frames(test.images[:test_frames], test.labels[:test_frames], test.num_classes)
    passes = progressive_bench.forward(edge, test, 16)
    rows, baselines = progressive_bench.sweep(edge, cloud, passes, thresholds, argparse.Namespace(
        measure="max_softmax", price_per_cloud_hour=0.0, price_per_gb=0.0, uplink_bps=1.1e6, rtt_ms=0.0))
    return {"test_frames": len(test), "always": baselines["always"]["accuracy"],
            "never": baselines["never"]["accuracy"],
            "unsure": [{"c_thr": r["c_thr"], "accuracy": r["accuracy"], "offloaded": r["offloaded"],
                        "bits_per_answer": r["bits_per_answer"]} for r in rows],
            "always_bits_per_answer": baselines["always"]["bits_per_answer"]}


# ---- running -----------------------------------------------------------------------------------------------


def launch(name: str, policy: str, c_thr: float | None, args) -> dict:
    out = Path(args.log_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    init = str(Path(args.init).resolve())
    sets = [f"camera_sim.rate_hz={args.camera_hz:g}", "camera_sim.holdout_every=1",
            f"camera_sim.max_frames={args.frames}", f"edge_node.init_from={init}", f"cloud_node.init_from={init}",
            f"edge_node.offload_policy={policy}"]
    if c_thr is not None:
        sets.append(f"edge_node.confidence_threshold={c_thr:g}")
    cmd = [sys.executable, "-m", "hiertrain_ros.cli", "launch", "edge_cloud", "--link", args.link,
           "--duration", f"{args.frames / args.camera_hz + args.startup_s:g}", "--json", str(out / "report.json"),
           "--answers-json", str(out / "answers.json"), "--log-dir", str(out)]
    if args.edge_cpu_quota is not None:
        cmd += ["--edge-cpu-quota", f"{args.edge_cpu_quota:g}"]
    for item in sets + list(args.set):
        cmd += ["--set", item]
    print(f"[progressive_link_bench] {name}: {' '.join(cmd[2:])}", flush=True)
    start = time.monotonic()
    load = os.getloadavg()[0]
    with open(out / "launch.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    (out / "load_avg_1m.json").write_text(json.dumps({"before": load, "after": os.getloadavg()[0]}))
    print(f"[progressive_link_bench] {name}: exit {proc.returncode} after {time.monotonic() - start:.0f} s",
          flush=True)
    if not (out / "report.json").exists():
        raise RuntimeError(f"{name}: no report ({out / 'launch.log'})")
    return load_run(out)


def load_run(out: Path) -> dict:
    load = out / "load_avg_1m.json"
    return {"report": json.loads((out / "report.json").read_text()),
            "answers": json.loads((out / "answers.json").read_text()),
            "load_avg_1m": json.loads(load.read_text()) if load.exists() else None}


# ---- analysis ----------------------------------------------------------------------------------------------


def percentiles(values) -> dict:
    v = np.asarray(values, dtype=float)
    if not len(v):
        return {"n": 0, "p50": None, "p99": None}
    return {"n": int(len(v)), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}


def analyse(runs: dict, frames: int, cloud_s: float, args) -> tuple[list[dict], dict]:
    from hiertrain_ros.core.fallback import NOT_OFFLOADED
    from hiertrain_ros.core.progressive import offload_cost

    # Frame i is the i-th frame the camera played, the same test image in every run.  The monitor may miss the
    # first few truths while discovery completes; the last ones it sees are the camera's last, so its j-th of M is
    # frame j + frames - M, which the true classes (the stream's, from the core) must confirm frame by frame.
    expected = expected_classes(frames)
    index = {}
    for name, r in runs.items():
        offset = frames - len(r["answers"])
        aligned = offset >= 0 and all(a["truth"] == expected[j + offset] for j, a in enumerate(r["answers"]))
        index[name] = {j + offset: a for j, a in enumerate(r["answers"])} if aligned else None
    complete = {name: index[name] is not None for name in runs}
    common = set(range(frames))
    for name in runs:
        common &= {i for i, a in (index[name] or {}).items() if a["output"] is not None}
    rows = []
    for name, r in runs.items():
        report, answers = r["report"], r["answers"]
        edge = report["node_status"].get("edge_node", {})
        offloaded, kept = int(edge.get("frames_offloaded", 0)), int(edge.get("frames_kept", 0))
        out = [a for a in answers if a["output"] is not None]
        # Latency on the frames every setting answered: each run's first answers (the nodes still warming up, a
        # different number of frames per run) would otherwise weigh in its p99 alone.
        timed = [index[name][i] for i in sorted(common)] if complete[name] and common else answers
        kept_lat = [a["output"][5] for a in timed if a["edge"] is not None and a["edge"][3] == NOT_OFFLOADED]
        sent_lat = [a["output"][5] for a in timed if a["edge"] is not None and a["edge"][3] != NOT_OFFLOADED]
        edge_lat = [a["edge"][5] for a in timed if a["edge"] is not None]
        edge_kept_lat = [a["edge"][5] for a in timed if a["edge"] is not None and a["edge"][3] == NOT_OFFLOADED]
        answered = len(out)
        infer_bytes = report.get("infer_bytes", 0)
        cost = offload_cost(offloaded * cloud_s, infer_bytes, price_per_cloud_hour=args.price_per_cloud_hour,
                            price_per_gb=args.price_per_gb)
        sources = [a["output"][4] for a in out]
        exits = [a["output"][2] for a in out if a["output"][4] == 0]  # Prediction.SOURCE_EDGE = 0
        rows.append({
            "setting": name, "answered": answered, "frames_seen_by_monitor": len(answers),
            "accuracy": float(np.mean([index[name][i]["output"][0] == index[name][i]["truth"] for i in sorted(common)]))
            if common and complete[name] else None,
            "edge_exit_accuracy_common": float(np.mean([index[name][i]["edge"][0] == index[name][i]["truth"]
                                                        for i in sorted(common) if index[name][i]["edge"]]))
            if common and complete[name] else None,
            "accuracy_all_answered": float(np.mean([a["output"][0] == a["truth"] for a in out])) if out else None,
            "edge_exit_accuracy": float(np.mean([a["edge"][0] == a["truth"] for a in answers if a["edge"]]))
            if any(a["edge"] for a in answers) else None,
            "offloaded": offloaded / max(1, offloaded + kept), "frames_offloaded": offloaded, "frames_kept": kept,
            "exit_answers": edge.get("exit_answers"),
            "served_by_cloud": sum(s == 1 for s in sources), "served_by_edge": sum(s == 0 for s in sources),
            "served_edge_exits": {str(k): exits.count(k) for k in sorted(set(exits))},
            "infer_bits_per_answer": 8 * infer_bytes / max(1, answered),
            "uplink_bits_per_answer": 8 * report.get("link", {}).get("uplink_bytes", 0) / max(1, answered),
            "cost_per_1000": 1000 * cost / max(1, answered),
            "latency_ms": percentiles([a["output"][5] for a in timed if a["output"] is not None]),
            "latency_all_answered_ms": percentiles([a["output"][5] for a in out]),
            "latency_kept_ms": percentiles(kept_lat), "latency_offloaded_ms": percentiles(sent_lat),
            "edge_topic_latency_ms": percentiles(edge_lat), "edge_topic_kept_ms": percentiles(edge_kept_lat),
            "infer_batches": report["counts"].get("infer_batches", 0),
            "train_batches": report["counts"].get("train_batches", 0),
            "link_utilisation": report.get("link", {}).get("utilisation_while_up"),
            "exit_codes": report.get("exit_codes"), "load_avg_1m": r.get("load_avg_1m"),
        })
    return rows, {"common_frames": len(common), "frames_aligned": complete}


def expected_classes(frames: int) -> list[int]:
    """Return the true classes of the first ``frames`` frames camera_sim plays (holdout 1, seed 0, no scenario)."""
    from hiertrain_ros.core.data import load_dataset
    from hiertrain_ros.core.scenarios import plain, stream

    played = stream(plain(), load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test"), 1, 0)
    return [next(played).label for _ in range(frames)]


def targets(rows: list[dict]) -> dict:
    by = {r["setting"]: r for r in rows}
    out: dict = {}
    if "always" not in by:
        return out
    always = by["always"]
    # Today's early exit: the edge's answer on its topic with offload_policy always (the exit answers every frame
    # there and the fallback holds it for the cloud's).  Against it, the edge's answers to the frames it kept.
    today = always["edge_topic_latency_ms"]["p99"]
    # On the output topic a kept frame goes through the fallback, served at once, as every frame with never.
    never = by["never"]["latency_ms"]["p99"] if "never" in by else None
    for r in rows:
        if not r["setting"].startswith("unsure"):
            continue
        kept = r["edge_topic_kept_ms"]["p99"]
        served = r["latency_kept_ms"]["p99"]
        acc = None if r["accuracy"] is None or always["accuracy"] is None else r["accuracy"] - always["accuracy"]
        out[r["setting"]] = {
            "kept_p99_ms": kept, "today_exit_p99_ms": today,
            "latency_met": kept is not None and today is not None and kept <= today + 1.0,
            "output_kept_p99_ms": served, "never_output_p99_ms": never,
            "output_latency_met_vs_never": None if served is None or never is None else served <= never + 1.0,
            "accuracy_minus_always_points": None if acc is None else 100 * acc,
            "offloaded": r["offloaded"],
            "accuracy_and_offload_met": acc is not None and acc >= -0.005 and r["offloaded"] <= 0.30,
            "infer_bits_fewer_than_always": always["infer_bits_per_answer"] / max(1e-9, r["infer_bits_per_answer"]),
        }
    return out


def fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["setting"] for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    axes[0].bar(x, [100 * (r["accuracy"] or 0) for r in rows])
    axes[0].set_ylabel("output accuracy (%)")
    lo = min(100 * (r["accuracy"] or 1) for r in rows)
    axes[0].set_ylim(max(0, lo - 5), 100)
    axes[1].bar(x, [100 * r["offloaded"] for r in rows])
    axes[1].axhline(30, color="k", ls=":", lw=0.8)
    axes[1].set_ylabel("frames offloaded (%)")
    axes[2].bar(x - 0.2, [r["infer_bits_per_answer"] for r in rows], 0.4, label="inference messages")
    axes[2].bar(x + 0.2, [r["uplink_bits_per_answer"] for r in rows], 0.4, label="all uplink bytes")
    axes[2].set_ylabel("bits on the link per answer")
    axes[2].legend(fontsize=8)
    for key, label, off in (("latency_ms", "output, all", -0.27), ("latency_kept_ms", "output, kept", 0.0),
                            ("edge_topic_latency_ms", "edge topic", 0.27)):
        axes[3].bar(x + off, [r[key]["p99"] or 0 for r in rows], 0.27, label=f"p99 {label}")
    axes[3].set_yscale("log")
    axes[3].set_ylabel("answer latency p99 (ms)")
    axes[3].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, names, rotation=30, fontsize=8)
    fig.suptitle("Progressive inference on the nodes over emulated 3G (VGG-16 w0.25, position 3, trained weights)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    from hiertrain_ros.cli.common import print_table, write_json

    settings = parse_settings(args.settings)
    if not args.init:
        raise SystemExit("--init DIR is required (trained weights; --pretrain-epochs N makes them there)")
    pretrained = None
    if args.pretrain_epochs and not args.reanalyse:
        pretrained = pretrain(args.init, args.pretrain_epochs, args.pretrain_lr)
        print(f"[progressive_link_bench] pretrained: {pretrained}", flush=True)
    load = os.getloadavg()[0]
    runs = {}
    for policy, c_thr in settings:
        name = setting_name(policy, c_thr)
        runs[name] = load_run(Path(args.log_dir) / name) if args.reanalyse else launch(name, policy, c_thr, args)
    # Timed with the runs (inside the same lock), kept for --reanalyse: a later machine load would change it.
    cloud_file = Path(args.log_dir) / "cloud_seconds_per_frame.json"
    if not args.reanalyse or not cloud_file.exists():
        cloud_file.parent.mkdir(parents=True, exist_ok=True)
        cloud_file.write_text(json.dumps(cloud_seconds_per_frame(args.init)))
    cloud_s = json.loads(cloud_file.read_text())
    rows, common = analyse(runs, args.frames, cloud_s, args)
    thresholds = sorted({c for _, c in settings if c is not None} | {0.7, 0.8, 0.9, 0.95})
    offline = offline_sweep(args.init, args.offline_test, thresholds) if args.offline_test else None
    met = targets(rows)
    print_table([{"setting": r["setting"], "accuracy": r["accuracy"], "edge_exit_acc": r["edge_exit_accuracy_common"],
                  "offloaded": r["offloaded"], "infer_bits/answer": r["infer_bits_per_answer"],
                  "uplink_bits/answer": r["uplink_bits_per_answer"], "cost/1000": r["cost_per_1000"],
                  "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
                  "out_kept_p99": r["latency_kept_ms"]["p99"], "edge_p99": r["edge_topic_latency_ms"]["p99"],
                  "edge_kept_p99": r["edge_topic_kept_ms"]["p99"]}
                 for r in rows])
    print(f"\naccuracy on the {common['common_frames']} frames every setting answered")
    if offline:
        print(f"\noffline, core only, {offline['test_frames']} test frames: always {offline['always']:.4f}, "
              f"never {offline['never']:.4f}")
        print_table(offline["unsure"])
    for name, m in met.items():
        print(f"{name}: edge answers to kept frames p99 {fmt(m['kept_p99_ms'])} ms vs today's exit (always, edge "
              f"topic) p99 {fmt(m['today_exit_p99_ms'])} ms + 1 ({'met' if m['latency_met'] else 'missed'}); on the "
              f"output {fmt(m['output_kept_p99_ms'])} ms vs never's {fmt(m['never_output_p99_ms'])} ms + 1; "
              f"accuracy {fmt(m['accuracy_minus_always_points'], '+.2f')} points "
              f"vs always at {100 * m['offloaded']:.1f} % offloaded "
              f"({'met' if m['accuracy_and_offload_met'] else 'missed'})")
    report = {"conditions": {"model": "vgg16", "width": 0.25, "position": 3, "bits": 4, "coding": "zstd",
                             "init": args.init, "pretrained": pretrained, "link": args.link,
                             "camera_hz": args.camera_hz, "frames": args.frames,
                             "edge_cpu_quota": args.edge_cpu_quota, "set": args.set,
                             "cloud_ms_per_frame": 1e3 * cloud_s, "price_per_cloud_hour": args.price_per_cloud_hour,
                             "price_per_gb": args.price_per_gb, "latency": "measured: source timestamp - frame stamp",
                             "cpus": os.cpu_count(), "load_avg_1m_at_analysis": load},
              **common, "rows": rows, "targets": met, "offline": offline}
    write_json(args.json, report)
    if args.png:
        plot(rows, args.png)
    print(f"wrote {args.json}" + (f" and {args.png}" if args.png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
