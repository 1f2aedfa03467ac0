#!/usr/bin/env python3
"""Online adaptation on a stream that changes: six ways of learning, the same seeded stream.

    python benchmarks/adapt_bench.py                       # both scenarios, seeds 0 1 2, half length
    python benchmarks/adapt_bench.py --scenarios domain_shift --seeds 0 --scale 0.25   # a quick look

Every mode starts from the same model trained offline (``--start-frames`` training images, one
epoch: a robot's factory model) and meets the same frames (``core.scenarios.stream``: the
frames ``hiertrain bag make --scenario`` writes and ``camera_sim`` plays).  The modes:

- ``frozen``: the trained start, never updated (its final exit answers the stream);
- ``edge-only``: the robot trains the whole network itself, online, each labelled frame once;
- ``full-cloud``: frames go to the cloud, which trains the whole network online with the same
  edge replay buffer as ``hier-replay`` (policy, memory, ratio);
- ``hier``: the package's nodes (``hiertrain replay`` of the scenario's bag in lockstep: real
  edge, cloud and fallback on real DDS), no replay;
- ``hier-replay``: the same with edge replay and the cloud's latent replay;
- ``offline``: the whole network trained offline on every labelled frame of the stream
  (``--offline-epochs``, shuffled), the upper bound; it has no stream answers.

Online modes answer each frame before they train on it (prequential, ``core.metrics``; the
output path for the nodes).  At the end each mode's final model answers every held-out frame of
every segment again ("final": for the split modes the better of the early and the final exit, as
the output's arbiter would serve; the nodes' from the checkpoints they write when they stop).
Forgetting of segment 0 is its held-out accuracy at the end of segment 0 (the last ``window``
held-out frames answered there) minus its final accuracy, in points; recovery is in frames
(``core.metrics.recovery``).  Writes a JSON with every run and the targets checked, a PNG of the
prequential accuracy over time (seed 0) with the segment boundaries, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core import checkpoint
from hiertrain_ros.core.archs import SplitSpec
from hiertrain_ros.core.data import Frames, frames_to_tensor, load_dataset
from hiertrain_ros.core.metrics import summarize
from hiertrain_ros.core.models import build_model
from hiertrain_ros.core.optim import paper_optim
from hiertrain_ros.core.replay import make_sampler
from hiertrain_ros.core.scenarios import load_scenario, scenario_path, stream
from hiertrain_ros.core.training import (FullCloudTrainer, TrainConfig, evaluate_full, evaluate_hierarchical,
                                         make_trainers, train_offline)

MODES = ("frozen", "edge-only", "full-cloud", "hier", "hier-replay", "offline")
NODE_MODES = ("hier", "hier-replay")
HOLDOUT_EVERY = 5  # as camera_sim and bag make
WINDOW = 50        # frames per block of the accuracy-over-time curve, as the nodes' monitor


# -- the stream --------------------------------------------------------------------------------------
def scaled_scenario(name: str, scale: float, out: Path) -> Path:
    """Write the shipped (or given) scenario with each segment's length times ``scale``; return its path."""
    raw = yaml.safe_load(scenario_path(name).read_text())
    for seg in raw:
        seg["frames"] = max(HOLDOUT_EVERY * 20, round(seg["frames"] * scale))
    path = out / f"{Path(name).stem}-x{scale:g}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def held_out_sets(frames, num_classes: int) -> list[Frames]:
    """Each segment's held-out frames, for the final evaluation."""
    segments = sorted({f.segment for f in frames})
    out = []
    for s in segments:
        chosen = [f for f in frames if f.segment == s and f.held_out]
        out.append(Frames(np.stack([f.frame for f in chosen]), np.array([f.label for f in chosen]), num_classes))
    return out


def stream_truth(frames) -> tuple[dict, dict]:
    """Return labels and truth as core.metrics.summarize takes them, keyed by frame index."""
    labels = {i: (f.label, f.segment) for i, f in enumerate(frames) if not f.held_out}
    truth = {i: (f.label, f.segment) for i, f in enumerate(frames) if f.held_out}
    return labels, truth


# -- the trained start -------------------------------------------------------------------------------
def train_start(spec: SplitSpec, args, out: Path) -> dict:
    """Train the factory models: hierarchical (edge.pt, cloud.pt) and whole-network (model.pt), same data."""
    train = load_dataset(args.data, "train").subset(args.start_frames)
    test = load_dataset(args.data, "test").subset(2000)
    base = dict(arch=spec.arch, split_point=spec.split_point, width=spec.width, bits=spec.bits,
                budget_bits=spec.budget_bits, epochs=1, seed=0)
    result = {}
    for mode in ("hierarchical", "full-cloud"):
        cfg = TrainConfig(**base, mode=mode)
        r = train_offline(cfg, train, test, save_dir=out)
        result[mode] = {k: r[k] for k in ("final_accuracy", "early_exit_accuracy", "accuracy", "train_seconds")
                        if k in r}
    return result


def _full_trainer(spec: SplitSpec, start: Path, num_classes: int) -> FullCloudTrainer:
    model = build_model(spec.arch, num_classes=num_classes, width=spec.width)
    model.load_state_dict(torch.load(start / "model.pt", map_location="cpu", weights_only=True))
    return FullCloudTrainer(model, paper_optim(spec.arch), f"{spec.arch}-w{spec.width:g}-c{num_classes}-full")


def _hier_trainers(spec: SplitSpec, start: Path):
    edge, cloud = make_trainers(spec, paper_optim(spec.arch), seed=0)
    for trainer in (edge, cloud):
        weights, fresh = checkpoint.load_init(start, trainer.role, spec)
        trainer.load_weights(weights, fresh)
    return edge, cloud


# -- the modes that run here -------------------------------------------------------------------------
def run_in_process(mode: str, spec: SplitSpec, frames, held_out, args, start: Path, seed: int) -> dict:
    torch.manual_seed(seed)
    num_classes = held_out[0].num_classes
    if mode == "frozen":
        edge, cloud = _hier_trainers(spec, start)

        def predict(x):
            return cloud.predict(edge.infer(x)[2])[0]
    else:
        full = _full_trainer(spec, start, num_classes)
        predict = lambda x: full.predict(x)[0]  # noqa: E731
    if mode == "offline":
        labelled = [f for f in frames if not f.held_out]
        images = frames_to_tensor(np.stack([f.frame for f in labelled]))
        labels = torch.tensor([f.label for f in labelled])
        gen = torch.Generator().manual_seed(seed)
        for _ in range(args.offline_epochs):
            order = torch.randperm(len(labels), generator=gen)
            for i in range(0, len(order), args.batch):
                idx = order[i:i + args.batch]
                full.train_step(images[idx], labels[idx])
        return {"final": [evaluate_full(full, h)["accuracy"] for h in held_out]}

    policy = args.replay if mode == "full-cloud" else "none"
    sampler = make_sampler(1 << 20, policy, args.memory_mb, args.ratio, seed)
    answers: dict = {}
    waiting: list[int] = []  # frames to answer with the current weights (before the next training step)

    def answer_waiting():
        for at in range(0, len(waiting), 1024):
            chunk = waiting[at:at + 1024]
            answers.update(zip(chunk, predict(frames_to_tensor(np.stack([frames[i].frame for i in chunk]))).tolist()))
        waiting.clear()

    for i, f in enumerate(frames):
        waiting.append(i)
        if f.held_out or mode == "frozen":
            continue
        sampler.add((frames_to_tensor(f.frame[None])[0], f.label))
        batch = sampler.draw(args.batch)
        if batch:
            answer_waiting()  # test, then train
            full.train_step(torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch]))
    answer_waiting()
    labels, truth = stream_truth(frames)
    run = {"adaptation": summarize(labels, {"output": answers}, truth, window=WINDOW)}
    if mode == "frozen":
        return {**run, **final_hierarchical(edge, cloud, held_out)}
    return {**run, "final": [evaluate_full(full, h)["accuracy"] for h in held_out]}


def final_hierarchical(edge, cloud, held_out) -> dict:
    """Return both exits' final accuracy per segment; ``final`` is the better one (the arbiter serves it)."""
    exits = [evaluate_hierarchical(edge, cloud, h) for h in held_out]
    return {"final": [max(e.values()) for e in exits], "final_exits": exits}


# -- the modes that run the nodes --------------------------------------------------------------------
def run_nodes(mode: str, spec: SplitSpec, bag: Path, held_out, args, start: Path, seed: int, work: Path) -> dict:
    run = f"{bag.name.removeprefix('bag-')}-{mode}"  # scenario-seed-mode
    ckpt, report, logs = work / f"ckpt-{run}", work / f"replay-{run}.json", work / f"logs-{run}"
    answers = work / f"answers-{run}.json"  # every frame's answers, for a look at the arbiter afterwards
    # Each run starts from the trained start: a checkpoint left in checkpoint_dir would win (nodes resume).
    shutil.rmtree(ckpt, ignore_errors=True)
    report.unlink(missing_ok=True)
    sets = [f"model={spec.arch}", f"split_point={spec.split_point}", f"width={spec.width}", f"bits={spec.bits}",
            f"edge_node.batch_size={args.batch}",
            f"edge_node.init_from={start}", f"cloud_node.init_from={start}",
            f"edge_node.checkpoint_dir={ckpt}", f"cloud_node.checkpoint_dir={ckpt}",
            # every frame to the cloud, as when docs/adaptation.md's figures were measured: the arbiter's
            # per-path scores (and arbiter_sweep) compare both paths on the same frames
            "edge_node.offload_policy=always"]
    if mode == "hier-replay":
        sets += [f"edge_node.replay={args.replay}", f"edge_node.replay_memory_mb={args.memory_mb}",
                 f"edge_node.replay_ratio={args.ratio}", f"cloud_node.latent_replay_mb={args.latent_mb}",
                 f"cloud_node.latent_ratio={args.ratio}", f"cloud_node.latent_staleness={args.latent_staleness}"]
    cmd = [sys.executable, "-m", "hiertrain_ros.cli", "replay", str(bag), "--seed", str(seed), "--json", str(report),
           "--log-dir", str(logs), "--answers", str(answers)] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if not report.exists():
        raise RuntimeError(f"{mode} seed {seed}: hiertrain replay wrote no report (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads(report.read_text())
    edge, cloud = make_trainers(spec, paper_optim(spec.arch), seed=0)
    edge.load_state_dict(checkpoint.load(ckpt / "edge.pt"))
    cloud.load_state_dict(checkpoint.load(ckpt / "cloud.pt"))
    return {"adaptation": result["adaptation"], "exit": proc.returncode, "drops": result["drops"],
            "duration_s": result["duration_s"], **final_hierarchical(edge, cloud, held_out)}


# -- the summary -------------------------------------------------------------------------------------
def figures(run: dict) -> dict:
    """Return the numbers a table row needs from one run."""
    out = {"final_avg": float(np.mean(run["final"]))}
    ad = run.get("adaptation")
    if ad is None:
        return out
    out["prequential"] = ad["prequential"]["output"]["accuracy"]
    out["by_segment"] = {int(s): row["output"]["accuracy"] for s, row in ad["prequential_by_segment"].items()}
    out["paths_by_segment"] = {int(s): {p: v["accuracy"] for p, v in row.items()}
                               for s, row in ad["prequential_by_segment"].items()}
    out["anytime"] = ad["anytime_average"]["output"]
    out["recovery"] = [r["frames"] for r in ad["recovery"]]
    seg0 = ad.get("forgetting", {}).get("output", {})
    seg0 = seg0.get(0, seg0.get("0"))
    if seg0 is not None:
        out["seg0_at_its_end"] = seg0["final"]
        out["forgetting_seg0_points"] = 100 * (seg0["final"] - run["final"][0])
    return out


def _stat(values) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(values, scale=1.0, digits=3) -> str:
    mean, sd = _stat(values)
    if mean is None:
        return "-"
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def table(results: dict) -> list[dict]:
    rows = []
    for scenario, modes in results.items():
        for mode, runs in modes.items():
            f = [figures(r) for r in runs]
            segs = sorted({s for x in f for s in x.get("by_segment", {})})
            rows.append({"scenario": scenario, "mode": mode, "seeds": len(runs),
                         "prequential": _fmt([x.get("prequential") for x in f]),
                         **{f"seg{s}": _fmt([x.get("by_segment", {}).get(s) for x in f]) for s in segs},
                         "final_avg": _fmt([x["final_avg"] for x in f]),
                         "forget_seg0_pts": _fmt([x.get("forgetting_seg0_points") for x in f], digits=1),
                         "recovery_frames": _fmt([np.mean(x["recovery"]) if x.get("recovery") and None not in
                                                  x["recovery"] else None for x in f], digits=0)})
    return rows


def targets(results: dict) -> dict:
    """Check the adaptation issue's targets on the means over seeds."""
    def mean(scenario, mode, key, pick=lambda v: v):
        runs = results.get(scenario, {}).get(mode, [])
        return _stat([pick(figures(r).get(key)) for r in runs])[0]

    out = {}
    for scenario, modes in results.items():
        for mode in NODE_MODES:
            for run in modes.get(mode, []):
                for s, paths in figures(run).get("paths_by_segment", {}).items():
                    best = max(v for p, v in paths.items() if p != "output" and v is not None)
                    key = f"{scenario}/{mode}: output >= max(edge, cloud) - 1 pt in every segment"
                    out[key] = out.get(key, True) and paths["output"] >= best - 0.01
    ci = "class_incremental"
    if "hier-replay" in results.get(ci, {}):
        final = mean(ci, "hier-replay", "final_avg")
        out["class_incremental/hier-replay: final average accuracy >= 0.80"] = {"value": final, "met": final >= 0.80}
        forget = mean(ci, "hier-replay", "forgetting_seg0_points")
        if forget is not None:
            out["class_incremental/hier-replay: forgetting of segment 0 <= 10 points"] = {
                "value": forget, "met": forget <= 10}
        cloud = mean(ci, "full-cloud", "final_avg")
        if cloud is not None:
            out["class_incremental/hier-replay: within 3 points of full-cloud (final average)"] = {
                "value": 100 * (final - cloud), "met": final >= cloud - 0.03}
    ds = "domain_shift"
    if {"hier-replay", "full-cloud"} <= set(results.get(ds, {})):
        def rec(v):
            return float(np.mean(v)) if v and None not in v else None
        ours, base = mean(ds, "hier-replay", "recovery", rec), mean(ds, "full-cloud", "recovery", rec)
        out["domain_shift/hier-replay: recovery <= 2x full-cloud's (frames)"] = {
            "value": ours, "full_cloud": base,
            "met": None if ours is None or base is None else ours <= 2 * max(base, 1)}
    return out


def plot(results: dict, frames_by_scenario: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 3.6 * len(results)), squeeze=False)
    for ax, (scenario, modes) in zip(axes[:, 0], results.items()):
        for mode, runs in modes.items():
            ad = runs[0].get("adaptation")
            if ad is None:
                ax.axhline(np.mean(runs[0]["final"]), ls=":", color="grey", label=f"{mode} (final)")
                continue
            curve = ad["prequential_over_time"]["output"]
            ax.plot((np.arange(len(curve)) + 0.5) * WINDOW, curve, label=mode, lw=1.2)
        labelled = [f.segment for f in frames_by_scenario[scenario] if not f.held_out]
        for i in range(1, len(labelled)):
            if labelled[i] != labelled[i - 1]:
                ax.axvline(i, color="k", lw=0.8, ls="--")
        ax.set_title(f"{scenario} (seed {0}): prequential accuracy of the answer served, blocks of {WINDOW}")
        ax.set_xlabel("labelled frames")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, ncol=3, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", nargs="+", default=["class_incremental", "domain_shift"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--scale", type=float, default=0.5, help="segment lengths times this (1: as shipped)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--start-frames", type=int, default=3000, help="training images of the trained start")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--replay", default="balanced", choices=("reservoir", "balanced"))
    p.add_argument("--memory-mb", type=float, default=4.0)
    p.add_argument("--latent-mb", type=float, default=4.0)
    p.add_argument("--latent-staleness", default="drop", choices=("none", "drop", "downweight"))
    p.add_argument("--ratio", type=float, default=0.75)
    p.add_argument("--offline-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads here (the nodes set their own)")
    p.add_argument("--work", default=None, help="bags, node logs and checkpoints (default: a temporary folder)")
    p.add_argument("--json", default="out/adapt_bench.json")
    p.add_argument("--png", default="out/adapt_bench.png")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="adapt-bench-"))
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    spec = SplitSpec("vgg16", 3, width=args.width, num_classes=train.num_classes)
    started = time.perf_counter()
    start = work / "start"
    start_acc = train_start(spec, args, start)
    print(f"trained start ({args.start_frames} images, 1 epoch): {start_acc}", flush=True)

    results: dict = {}
    frames_by_scenario: dict = {}
    for name in args.scenarios:
        yaml_path = scaled_scenario(name, args.scale, work / "scenarios")
        scenario = load_scenario(str(yaml_path))
        results[name] = {m: [] for m in args.modes}
        for seed in args.seeds:
            frames = list(stream(scenario, train, test, HOLDOUT_EVERY, seed))
            if seed == args.seeds[0]:
                frames_by_scenario[name] = frames
            held_out = held_out_sets(frames, train.num_classes)
            bag = work / f"bag-{name}-{seed}"
            if set(args.modes) & set(NODE_MODES) and not bag.exists():
                subprocess.run([sys.executable, "-m", "hiertrain_ros.cli", "bag", "make", "--data", args.data,
                                "--scenario", str(yaml_path), "--rate", "100", "--seed", str(seed),
                                "--holdout-every", str(HOLDOUT_EVERY), "--out", str(bag)],
                               check=True, capture_output=True)
            for mode in args.modes:
                t0 = time.perf_counter()
                if mode in NODE_MODES:
                    run = run_nodes(mode, spec, bag, held_out, args, start, seed, work)
                else:
                    run = run_in_process(mode, spec, frames, held_out, args, start, seed)
                run["seconds"] = round(time.perf_counter() - t0, 1)
                results[name][mode].append(run)
                f = figures(run)
                print(f"{name} seed {seed} {mode:12s} prequential {f.get('prequential')} final {f['final_avg']:.3f} "
                      f"({run['seconds']} s)", flush=True)
                write_json(args.json, {"args": vars(args), "start": start_acc, "window": WINDOW, "partial": True,
                                       "results": results})  # a long run keeps what it has measured
    rows = table(results)
    print_table(rows)
    checked = targets(results)
    for key, value in checked.items():
        print(f"target {key}: {value}")
    write_json(args.json, {"args": vars(args), "start": start_acc, "window": WINDOW, "targets": checked,
                           "table": rows, "results": results, "seconds": round(time.perf_counter() - started, 1)})
    plot(results, frames_by_scenario, Path(args.png))
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
