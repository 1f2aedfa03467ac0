#!/usr/bin/env python3
"""Micro-benchmarks of the ROS-free core.

Codec throughput, training step times and, optionally, hierarchical vs full-cloud accuracy on Fashion-MNIST.

    python benchmarks/core_bench.py                       # (a) codec + (b) step times
    python benchmarks/core_bench.py --accuracy            # + (c) accuracy (about 30 min on 2 cores)
    python benchmarks/core_bench.py --skip-codec --skip-steps --accuracy --subset 500 --epochs 1

(a) encode+decode of a 128x16x16x16 post-ReLU float32 batch at 1, 2, 4 and 8 bits,
    throughput in MB/s of float32 input (median over --reps);
(b) edge, cloud and full-cloud training step time in ms (median over --steps after
    --warmup), width 1, batch 32, VGG-16 and ResNet-18 at position 3, using the real
    trainers (edge step includes encoding, cloud step includes decoding);
(c) train_offline at several positions plus the full-cloud baseline; reports final-exit,
    early-exit and full-cloud test accuracy and the gap (full-cloud - final).

Results go to --json (default out/core_bench.json) and are printed as tables.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import torch

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core import codec
from hiertrain_ros.core.costs import cost_table
from hiertrain_ros.core.models import SplitSpec, build_model
from hiertrain_ros.core.training import (FullCloudTrainer, TrainConfig, make_trainers, paper_optim,
                                         train_offline)

log = logging.getLogger("core_bench")


def machine_info() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _median_seconds(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_codec(reps: int, shape=(128, 16, 16, 16)) -> list[dict]:
    """Measure (a) encode + decode throughput of a post-ReLU batch, in MB/s of float32 input."""
    torch.manual_seed(0)
    x = torch.relu(torch.randn(*shape))
    mbytes = x.numel() * 4 / 1e6
    rows = []
    for bits in codec.VALID_BITS:
        payload = codec.encode(x, bits=bits, split_point=3)
        enc = _median_seconds(lambda: codec.encode(x, bits=bits, split_point=3), reps)
        dec = _median_seconds(lambda: codec.decode(payload), reps)
        both = _median_seconds(lambda: codec.decode(codec.encode(x, bits=bits, split_point=3)), reps)
        err = float((codec.decode(payload) - x).abs().max())
        rows.append({"bits": bits, "encode_ms": enc * 1e3, "decode_ms": dec * 1e3, "enc+dec_ms": both * 1e3,
                     "MB/s": mbytes / both, "payload_bytes": len(payload.data), "input_MB": mbytes,
                     "max_abs_err": err, "half_step": payload.scale / 2})
    return rows


def bench_steps(steps: int, warmup: int, batch: int, width: float, archs=("vgg16", "resnet18"),
                position: int = 3) -> list[dict]:
    """(b) median edge / cloud / full-cloud training step time with the real trainers."""
    rows = []
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 32, 32)
    labels = torch.randint(0, 10, (batch,))
    for arch in archs:
        (cost,) = cost_table(arch, positions=[position], width=width, batch_size=batch)
        spec = SplitSpec(arch, position, width=width)
        optim = paper_optim(arch)
        edge, cloud = make_trainers(spec, optim, seed=0)
        payloads = []

        def edge_step():
            payloads.append(edge.train_step(images, labels)[1])

        edge_s = _median_seconds(edge_step, steps, warmup)
        # Each cloud step consumes one real payload from the edge steps above.
        cloud_s = _median_seconds(lambda: cloud.train_step(payloads.pop()), steps, warmup)
        full = FullCloudTrainer(build_model(arch, width=width), optim, f"{arch}-full")
        full_s = _median_seconds(lambda: full.train_step(images, labels), steps, warmup)
        for part, seconds, macs in (("edge", edge_s, cost.edge_macs), ("cloud", cloud_s, cost.cloud_macs),
                                    ("full-cloud", full_s, cost.full_macs)):
            rows.append({"model": arch, "position": position if part != "full-cloud" else None, "part": part,
                         "width": width, "batch": batch, "step_ms": seconds * 1e3,
                         "MACs/step": macs * batch, "GMAC/s": macs * batch / seconds / 1e9})
        log.info("%s: edge %.0f ms, cloud %.0f ms, full-cloud %.0f ms", arch, edge_s * 1e3, cloud_s * 1e3,
                 full_s * 1e3)
    return rows


def bench_accuracy(args) -> list[dict]:
    """(c) hierarchical (final and early exit) vs full-cloud test accuracy on Fashion-MNIST."""
    from hiertrain_ros.core.data import load_dataset

    train = load_dataset("fashion-mnist", "train").subset(args.subset)
    test = load_dataset("fashion-mnist", "test").subset(args.test_subset)
    common = dict(arch=args.model, width=args.width, epochs=args.epochs, batch_size=32, seed=args.seed)
    full = train_offline(TrainConfig(mode="full-cloud", **common), train, test)
    log.info("full-cloud: %.4f (%.0f s)", full["accuracy"], full["train_seconds"])
    rows = []
    for p in args.positions:
        r = train_offline(TrainConfig(split_point=p, mode="hierarchical", **common), train, test)
        rows.append({"model": args.model, "position": p, "width": args.width, "train": len(train),
                     "test": len(test), "epochs": args.epochs, "final_acc": r["final_accuracy"],
                     "early_exit_acc": r["early_exit_accuracy"], "full_cloud_acc": full["accuracy"],
                     "gap": full["accuracy"] - r["final_accuracy"], "train_s": r["train_seconds"],
                     "wire_bits/sample": r["wire_bits_per_sample"]})
        log.info("position %d: final %.4f early %.4f (%.0f s)", p, r["final_accuracy"],
                 r["early_exit_accuracy"], r["train_seconds"])
    rows.append({"model": args.model, "position": None, "width": args.width, "train": len(train),
                 "test": len(test), "epochs": args.epochs, "final_acc": None, "early_exit_acc": None,
                 "full_cloud_acc": full["accuracy"], "gap": 0.0, "train_s": full["train_seconds"],
                 "wire_bits/sample": full["wire_bits_per_sample"]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default="out/core_bench.json", help="write results here ('' to skip)")
    p.add_argument("--reps", type=int, default=20, help="codec repetitions (median)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per part (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps per part")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--step-width", type=float, default=1.0, help="width multiplier for (b)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--skip-codec", action="store_true")
    p.add_argument("--skip-steps", action="store_true")
    p.add_argument("--accuracy", action="store_true", help="also run (c): train on Fashion-MNIST (slow)")
    p.add_argument("--model", default="vgg16", choices=("vgg16", "resnet18"), help="model for (c)")
    p.add_argument("--positions", type=lambda s: [int(v) for v in s.split(",")], default=[1, 3, 5, 8],
                   help="comma-separated positions for (c)")
    p.add_argument("--width", type=float, default=0.25, help="width multiplier for (c)")
    p.add_argument("--subset", type=int, default=8000, help="training images for (c)")
    p.add_argument("--test-subset", type=int, default=10000, help="test images for (c)")
    p.add_argument("--epochs", type=int, default=2, help="epochs for (c)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    result = {"machine": machine_info(), "args": vars(args)}
    if not args.skip_codec:
        result["codec"] = bench_codec(args.reps)
        print("\n(a) codec encode+decode, 128x16x16x16 float32 post-ReLU batch")
        print_table(result["codec"], ["bits", "encode_ms", "decode_ms", "enc+dec_ms", "MB/s", "payload_bytes"])
    if not args.skip_steps:
        result["steps"] = bench_steps(args.steps, args.warmup, args.batch_size, args.step_width)
        print(f"\n(b) training step time, width {args.step_width:g}, batch {args.batch_size}")
        print_table(result["steps"], ["model", "position", "part", "step_ms", "MACs/step", "GMAC/s"])
    if args.accuracy:
        result["accuracy"] = bench_accuracy(args)
        print(f"\n(c) Fashion-MNIST accuracy, {args.model} width {args.width:g}, {args.epochs} epoch(s)")
        print_table(result["accuracy"], ["position", "final_acc", "early_exit_acc", "full_cloud_acc", "gap",
                                         "train_s"])
    result["machine"]["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    write_json(args.json, result)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
