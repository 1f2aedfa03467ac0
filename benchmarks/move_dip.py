r"""Move-dip bench: what a move of the split costs the cloud's accuracy, with and without the adapters kept ready.

The package's core trainers (``core.training.EdgeTrainer`` / ``CloudTrainer`` on ``core.repartition.MovableSide``,
what the edge and cloud nodes run) train one network in one process, without ROS or a link: the edge trains its
layers from its exit's loss, the cloud the rest from the final loss on the codec's decoded features, batch after
batch.  The split moves on a schedule of edge steps (by default 3 -> 8 at step 700 and 8 -> 3 at step 1100, as
LinUCB-E's moves in the L2S bench, where the first move also comes before any visit to 8).  Each seed runs twice:
with the cloud keeping the schedule's splits ready (``keep_ready``, the default: it is told them as a cloud node
is told ``split_candidates``) and without (how moves were made before).

Reported per run: the cloud's training accuracy (each batch scored before its step: prequential) in the 50 steps
before and after each move after the warm-up, the dip (before - after), and the cloud's and the edge exit's test
accuracy at the end (``--test`` test frames).  JSON and a printed table:

    .venv/bin/python benchmarks/move_dip.py --seeds 0 1 2 --json docs/move_dip.json

About 2 minutes per run on this 2-core machine, two at once (``--jobs``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from hiertrain_ros.core.data import batches, load_fashion_mnist
from hiertrain_ros.core.models import SplitSpec
from hiertrain_ros.core.repartition import MovableSide
from hiertrain_ros.core.splits import ScheduledSplit, SplitContext, parse_split_schedule
from hiertrain_ros.core.training import CloudTrainer, EdgeTrainer, OptimConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--schedule", default="3@0,8@700,3@1100", help="split schedule in edge steps")
    p.add_argument("--warmup-steps", type=int, default=100, help="moves before this step are not reported")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam, both sides")
    p.add_argument("--window", type=int, default=50, help="steps before and after a move")
    p.add_argument("--test", type=int, default=2000, help="test frames for the final accuracy")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="runs at once")
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def run(args, seed: int, keep_ready: bool) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    splits = [split for _, split in parse_split_schedule(args.schedule, 4)]
    spec = SplitSpec(args.arch, splits[0].split_point, width=args.width)
    optim = OptimConfig(name="adam", lr=args.lr)
    sides = {role: MovableSide(role, spec, seed=seed, keep_ready=keep_ready, candidates=splits)
             for role in ("edge", "cloud")}
    edge = EdgeTrainer(sides["edge"].model, spec, optim)
    edge.make_movable(sides["edge"])
    cloud = CloudTrainer(sides["cloud"].model, spec, optim)
    cloud.make_movable(sides["cloud"])
    policy = ScheduledSplit(args.schedule, spec.bits)
    data = load_fashion_mnist("train").subset(args.batch_size * args.steps)
    correct, moves, start = [], [], time.perf_counter()
    for images, labels in batches(data, args.batch_size, shuffle=True, seed=seed):
        want = policy.choose(SplitContext(step=edge.step))
        if want != edge.split:  # the protocol's flow: the edge's units go with the request, the cloud's come back
            moves.append((edge.step, edge.split.split_point, want.split_point))
            edge.move(want, len(moves), cloud.move(want, len(moves), edge.movable.export(want, edge.optimizer)))
        _, payload = edge.train_step(images, labels)
        result = cloud.train_step(payload)
        correct.append(result.correct / result.samples)
    w = args.window
    dips = [{"step": step, "from": a, "to": b, "before": statistics.fmean(correct[step - w:step]),
             "after": statistics.fmean(correct[step:step + w])}
            for step, a, b in moves if step >= args.warmup_steps]
    for d in dips:
        d["dip"] = d["before"] - d["after"]
    right = {"cloud": 0, "edge": 0}
    test = load_fashion_mnist("test").subset(args.test)
    for images, labels in batches(test, 250, shuffle=False):
        classes, _, payload = edge.infer(images)
        right["edge"] += int((torch.as_tensor(classes) == labels).sum())
        right["cloud"] += int((torch.as_tensor(cloud.predict(payload)[0]) == labels).sum())
    return {"seed": seed, "keep_ready": keep_ready, "moves": dips, "seconds": time.perf_counter() - start,
            "test_cloud": right["cloud"] / len(test), "test_edge": right["edge"] / len(test)}


def main(argv=None) -> int:
    args = parse_args(argv)
    with ProcessPoolExecutor(args.jobs) as pool:  # one thread per run
        runs = list(pool.map(run, *zip(*[(args, seed, keep) for seed in args.seeds for keep in (False, True)])))
    heads = " ".join(f"{'dip ' + str(m['from']) + '->' + str(m['to']):>9}" for m in runs[0]["moves"])
    print(f"{'seed':>4} {'kept ready':>10} {heads} {'test cloud':>10} {'edge':>6}")
    for r in runs:
        print(f"{r['seed']:>4} {str(r['keep_ready']):>10} " + " ".join(f"{m['dip']:>+9.3f}" for m in r["moves"])
              + f" {r['test_cloud']:>10.4f} {r['test_edge']:>6.4f}")
    summary = {}
    for keep in (False, True):
        mine = [r for r in runs if r["keep_ready"] == keep]
        summary["kept_ready" if keep else "not_kept"] = {
            "mean_dip_per_move": [statistics.fmean(r["moves"][i]["dip"] for r in mine)
                                  for i in range(len(mine[0]["moves"]))],
            "mean_test_cloud": statistics.fmean(r["test_cloud"] for r in mine)}
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
