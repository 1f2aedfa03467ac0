"""Rate-accuracy benchmark (not a test): test accuracy against bits per sample on the link (issue 14).

Every point is one offline training run of the package's core trainers (``core.training.train_offline``, what
``hiertrain train`` runs) on the same frames with the same budget (``--subset`` images x ``--epochs``):

- hierarchical, for each bit width x per-sample budget: the final exit's accuracy, with the bits per sample the
  edge sent both zstd-coded (the default) and uncoded (the raw packing); coding is lossless, so one run gives both;
- full-cloud trained and tested on frames that went through a lossy or lossless image codec first (JPEG at
  several qualities, WebP, PNG, with OpenCV as image_transport's compressed plugins use it), with the bits per
  sample of the coded frames, and on the raw frames.

    .venv/bin/python benchmarks/rate_accuracy.py [--subset 10000] [--epochs 3] [--data fashion-mnist|cifar10-dir:PATH]
        [--json docs/rate_accuracy.json] [--plot docs/rate_accuracy.png]

Fashion-MNIST's padded grey frames with black backgrounds are JPEG's good case; CIFAR-10 is not.
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import replace

import numpy as np

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core.data import Frames, load_dataset
from hiertrain_ros.core.training import TrainConfig, train_offline

IMAGE_CODECS = [("jpeg", q) for q in (50, 60, 70, 80, 90, 95)] + [("webp", q) for q in (50, 75, 90)] + [("png", 0)]


def image_codec(frames: Frames, fmt: str, quality: int) -> tuple[Frames, float]:
    """Return the frames after an encode/decode round trip through ``fmt``, and the mean coded bits per frame."""
    import cv2

    params = {"jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality], "webp": [cv2.IMWRITE_WEBP_QUALITY, quality],
              "png": [cv2.IMWRITE_PNG_COMPRESSION, 9]}[fmt]
    out, bits = np.empty_like(frames.images), 0
    for i, frame in enumerate(frames.images):
        ok, buf = cv2.imencode("." + fmt.replace("jpeg", "jpg"), np.ascontiguousarray(frame[..., ::-1]), params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a frame as {fmt}")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        bits += 8 * buf.size
    return Frames(out, frames.labels, frames.num_classes), bits / len(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--position", type=int, default=3)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--subset", type=int, default=10000, help="training images (the same for every point)")
    ap.add_argument("--test-subset", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bits", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--budgets", type=int, nargs="+", default=[16384, 8192, 4096, 2048])
    ap.add_argument("--image-codecs", nargs="*", default=[f"{f}{q}" if f != "png" else f for f, q in IMAGE_CODECS],
                    help="full-cloud peers: jpegQ, webpQ, png, raw")
    ap.add_argument("--json", default="out/rate_accuracy.json")
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()

    train = load_dataset(args.data, "train").subset(args.subset)
    test = load_dataset(args.data, "test").subset(args.test_subset)
    base = TrainConfig(arch=args.model, split_point=args.position, width=args.width, num_classes=train.num_classes,
                       epochs=args.epochs, seed=args.seed)
    rows = []
    for bits in args.bits:
        for budget in args.budgets:
            r = train_offline(replace(base, bits=bits, budget_bits=budget), train, test)
            rows.append({"system": "hierarchical", "setting": f"{bits}-bit B{budget}",
                         "accuracy": r["final_accuracy"], "early_exit_accuracy": r["early_exit_accuracy"],
                         "bits_per_sample": r["wire_bits_per_sample"],
                         "uncoded_bits_per_sample": r["uncoded_bits_per_sample"], "train_s": r["train_seconds"]})
            print_table(rows[-1:])
    for name in ["raw"] + [c for c in args.image_codecs if c != "raw"]:
        fmt = name.rstrip("0123456789")
        quality = int(name[len(fmt):] or 0)
        if name == "raw":
            tr, te, bits_per_frame = train, test, 8 * train.images[0].size
        else:
            tr, bits_per_frame = image_codec(train, fmt, quality)
            te, _ = image_codec(test, fmt, quality)
        r = train_offline(replace(base, mode="full-cloud"), tr, te)
        rows.append({"system": "full-cloud", "setting": name, "accuracy": r["accuracy"],
                     "bits_per_sample": bits_per_frame, "train_s": r["train_seconds"]})
        print_table(rows[-1:])

    jpeg90 = next((r["bits_per_sample"] for r in rows if r["setting"] == "jpeg90"), None)
    reference = next((r["accuracy"] for r in rows if r["setting"] == "4-bit B16384"), None)
    for r in rows:
        if jpeg90:
            r["bits_vs_jpeg90"] = r["bits_per_sample"] / jpeg90
        if reference is not None and r["system"] == "hierarchical":
            r["accuracy_vs_4bit_B16384"] = r["accuracy"] - reference
    report = {"conditions": {"data": args.data, "model": args.model, "position": args.position, "width": args.width,
                             "train_images": len(train), "test_images": len(test), "epochs": args.epochs,
                             "seed": args.seed, "machine": platform.machine(), "cpus": os.cpu_count()},
              "rows": rows}
    print_table(rows, ["system", "setting", "accuracy", "bits_per_sample", "uncoded_bits_per_sample",
                       "bits_vs_jpeg90", "accuracy_vs_4bit_B16384"])
    write_json(args.json, report)
    if args.plot:
        plot(rows, args.plot, args.data)


def plot(rows: list[dict], path: str, data: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    hier = [r for r in rows if r["system"] == "hierarchical"]
    ax.scatter([r["bits_per_sample"] for r in hier], [r["accuracy"] for r in hier], marker="o",
               label="hierarchical, zstd-coded")
    ax.scatter([r["uncoded_bits_per_sample"] for r in hier], [r["accuracy"] for r in hier], marker="o",
               facecolors="none", edgecolors="C0", label="hierarchical, uncoded")
    for r in hier:
        ax.annotate(r["setting"], (r["bits_per_sample"], r["accuracy"]), fontsize=6)
    for fmt, marker in (("jpeg", "s"), ("webp", "^"), ("png", "D"), ("raw", "x")):
        pts = [r for r in rows if r["system"] == "full-cloud" and r["setting"].startswith(fmt)]
        if pts:
            ax.scatter([r["bits_per_sample"] for r in pts], [r["accuracy"] for r in pts], marker=marker,
                       label=f"full-cloud on {fmt.upper() if fmt != 'raw' else 'raw'} frames")
            for r in pts:
                ax.annotate(r["setting"], (r["bits_per_sample"], r["accuracy"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("bits per sample on the link")
    ax.set_ylabel("test accuracy (final exit / full model)")
    ax.set_title(f"Rate-accuracy, {data}, same frames and training budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
