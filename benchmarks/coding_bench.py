"""Coding benchmark (not a test): bits per sample of the edge's packed codes under the lossless coders, and the time.

Trains the edge (Fashion-MNIST, the package's EdgeTrainer) for ``--steps`` steps so that the features are those
of a learning edge, then codes the next ``--batches`` training payloads: raw packing, the order-0 entropy bound,
zlib level 9, and zstandard at several levels (core.coding), with the compress and decompress time per batch.

    .venv/bin/python benchmarks/coding_bench.py [--steps 300] [--batches 50] [--json out/coding_bench.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import zlib

import numpy as np
import torch

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core import codec
from hiertrain_ros.core.archs import SplitSpec
from hiertrain_ros.core.coding import compress, decompress, order0_bits
from hiertrain_ros.core.data import batches, load_fashion_mnist
from hiertrain_ros.core.optim import paper_optim
from hiertrain_ros.core.training import make_trainers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--position", type=int, default=3)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300, help="training steps before measuring")
    ap.add_argument("--batches", type=int, default=50, help="training payloads measured")
    ap.add_argument("--json", default="out/coding_bench.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    spec = SplitSpec(args.model, split_point=args.position, width=args.width, bits=args.bits)
    edge, _ = make_trainers(spec, paper_optim(args.model))
    frames = load_fashion_mnist("train")
    payloads = []
    for i, (images, labels) in enumerate(batches(frames, args.batch_size, shuffle=True, seed=0)):
        if i >= args.steps + args.batches:
            break
        _, payload = edge.train_step(images, labels.long())
        if i >= args.steps:
            payloads.append(payload)

    n = sum(p.num_samples for p in payloads)
    values = [codec.unpack(p.data, p.bits, int(np.prod(p.shape))) for p in payloads]
    rows = [{"coder": "raw packing", "bits_per_sample": sum(len(p.data) for p in payloads) * 8 / n},
            {"coder": "order-0 entropy (bound)", "bits_per_sample": sum(map(order0_bits, values)) / n},
            {"coder": "zlib level 9", "bits_per_sample": sum(len(zlib.compress(p.data, 9)) for p in payloads) * 8 / n}]
    for level in (1, 3, 9, 19):
        sizes, enc_ms, dec_ms = 0, [], []
        for p in payloads:
            t0 = time.perf_counter()
            blob = compress(p.data, "zstd", level)
            t1 = time.perf_counter()
            assert decompress(blob, "zstd", len(p.data)) == p.data
            t2 = time.perf_counter()
            sizes += len(blob)
            enc_ms.append(1e3 * (t1 - t0))
            dec_ms.append(1e3 * (t2 - t1))
        rows.append({"coder": f"zstd level {level}", "bits_per_sample": sizes * 8 / n,
                     "compress_ms_per_batch": statistics.median(enc_ms),
                     "decompress_ms_per_batch": statistics.median(dec_ms)})
    zeros = float(np.mean([np.mean(v == 0) for v in values]))
    report = {"conditions": {"model": args.model, "position": args.position, "width": args.width, "bits": args.bits,
                             "batch_size": args.batch_size, "trained_steps": args.steps, "batches": len(payloads),
                             "machine": platform.machine(), "cpus": os.cpu_count(),
                             "load_avg_1m": os.getloadavg()[0]},
              "zero_codes": zeros, "rows": rows}
    print(f"{len(payloads)} training batches of {args.batch_size}, after {args.steps} steps; {zeros:.0%} of codes 0")
    print_table(rows, ["coder", "bits_per_sample", "compress_ms_per_batch", "decompress_ms_per_batch"])
    write_json(args.json, report)


if __name__ == "__main__":
    main()
