#!/usr/bin/env python3
"""Forgetting with and without replay, offline (no ROS).

A class-incremental Fashion-MNIST stream (classes 0-4, then 5-9) through the edge and cloud trainers, one frame at a
time through the edge's sampler, as the nodes do.

    python benchmarks/replay_bench.py                              # none, reservoir, balanced (9 min on a busy core)
    python benchmarks/replay_bench.py --modes none latent-none latent-drop latent-downweight

Modes: ``none`` (FifoSampler: each frame once), ``reservoir`` and ``balanced`` (edge replay,
--memory-mb, --ratio of each batch replayed; the cloud trains on the mixed batch's features),
``latent-<staleness>`` (no edge replay; the cloud replays its quantized feature batches,
--latent-mb, --ratio of each step's samples).  After each segment, cloud (final) and early-exit
accuracy on held-out frames of each segment's classes.  Reports final accuracy on all classes
and forgetting of segment 0 (its accuracy after segment 0 minus after segment 1), in points.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core.data import Frames, frames_to_tensor, load_fashion_mnist
from hiertrain_ros.core.models import SplitSpec
from hiertrain_ros.core.replay import LatentReplay, make_sampler
from hiertrain_ros.core.training import OptimConfig, evaluate_hierarchical, make_trainers

SEGMENTS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))


def _pick(frames: Frames, classes, n: int, rng) -> Frames:
    idx = np.flatnonzero(np.isin(frames.labels, classes))
    idx = rng.permutation(idx)[:n]
    return Frames(frames.images[idx], frames.labels[idx], frames.num_classes)


def run_mode(mode: str, train: list[Frames], test: list[Frames], args) -> dict:
    torch.manual_seed(args.seed)
    edge, cloud = make_trainers(SplitSpec("vgg16", 3, width=args.width), OptimConfig(), seed=args.seed)
    policy = mode if mode in ("reservoir", "balanced") else "none"
    sampler = make_sampler(1 << 20, policy, args.memory_mb, args.ratio, args.seed)
    latent = (LatentReplay(args.latent_mb * 1e6, staleness=mode.split("-", 1)[1], max_age=args.max_age,
                           half_life=args.half_life, seed=args.seed) if mode.startswith("latent-") else None)
    after, steps, start = [], 0, time.perf_counter()
    for segment in train:
        images = frames_to_tensor(segment.images)
        for x, y in zip(images, segment.labels.tolist()):
            sampler.add((x, y))
            batch = sampler.draw(args.batch)
            if not batch:
                continue
            result, payload = edge.train_step(torch.stack([b[0] for b in batch]),
                                              torch.tensor([b[1] for b in batch]))
            replay = ()
            if latent is not None:
                replay = latent.sample(round(payload.num_samples * args.ratio / (1 - args.ratio)))
            cloud.train_step(payload, replay)
            if latent is not None:
                latent.add(payload)
            steps += 1
        after.append([evaluate_hierarchical(edge, cloud, t) for t in test])
    first_best, first_end = after[0][0]["final_accuracy"], after[-1][0]["final_accuracy"]
    row = {"mode": mode, "steps": steps, "seconds": round(time.perf_counter() - start, 1),
           "final_all": float(np.mean([a["final_accuracy"] for a in after[-1]])),
           "early_all": float(np.mean([a["early_exit_accuracy"] for a in after[-1]])),
           "seg0_after_seg0": first_best, "seg0_at_end": first_end,
           "forgetting_seg0_points": 100 * (first_best - first_end),
           "per_segment": after}
    if hasattr(sampler, "memory"):
        row["memory_items"] = len(sampler.memory)
        row["memory_classes"] = np.bincount([i[1] for i in sampler.memory.items()], minlength=10).tolist()
    if latent is not None:
        row["latent_batches"] = len(latent)
        row["latent_stale_evicted"] = latent.evicted_stale
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", default=["none", "reservoir", "balanced"])
    p.add_argument("--frames", type=int, default=1500, help="training frames per segment")
    p.add_argument("--test", type=int, default=1000, help="held-out frames per segment")
    p.add_argument("--memory-mb", type=float, default=4.0)
    p.add_argument("--latent-mb", type=float, default=4.0)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--max-age", type=int, default=40, help="latent drop: seqs (here: training steps)")
    p.add_argument("--half-life", type=float, default=20.0, help="latent downweight: seqs")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="out/replay_bench.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    train_all, test_all = load_fashion_mnist("train"), load_fashion_mnist("test")
    train = [_pick(train_all, c, args.frames, rng) for c in SEGMENTS]
    test = [_pick(test_all, c, args.test, rng) for c in SEGMENTS]
    rows = [run_mode(mode, train, test, args) for mode in args.modes]
    print_table(rows, ["mode", "steps", "seconds", "final_all", "early_all", "seg0_after_seg0", "seg0_at_end",
                       "forgetting_seg0_points"])
    write_json(args.json, {"args": vars(args), "segments": SEGMENTS, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
