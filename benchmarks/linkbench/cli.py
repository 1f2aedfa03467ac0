"""``python benchmarks/link_bench.py``: every training mode over one emulated edge->cloud link.

Not a verb of the installed ``hiertrain`` CLI: the bench lives in the source tree's
``benchmarks/``, which the package does not install.
"""

from __future__ import annotations

import argparse
import signal
import sys

from hiertrain_ros.cli.common import add_model_options

PROG = "link_bench.py"


def build_parser() -> argparse.ArgumentParser:
    link = argparse.ArgumentParser(
        prog=PROG, description="hierarchical (the package's edge_node and cloud_node) vs full-cloud (raw, JPEG) vs "
                               "split learning vs edge-only, real ROS 2 processes over a tbf-shaped veth between two "
                               "namespaces (needs root: namespaces, tc, cgroups)")
    add_model_options(link, skip=("num_classes",))  # the dataset sets it
    link.add_argument("--positions", default=None,
                      help="'all' or a list such as 1,3,5: run the hierarchical mode (or --modes) once per "
                           "position, and with --plot draw estimated vs measured epoch time per position")
    link.add_argument("--link", default="3g", help="edge->cloud rate: 3g, 4g or bits/s")
    link.add_argument("--samples", type=int, default=512, help="training samples each mode runs")
    link.add_argument("--edge-cpu-quota", type=float, default=None,
                      help="edge CPU as a fraction of one core (cgroup v1 cfs quota); default: no limit")
    link.add_argument("--batch-size", type=int, default=32)
    link.add_argument("--modes", nargs="+", default=None,
                      help="some of: hierarchical fullcloud-raw fullcloud-jpeg split edge-only (default all)")
    link.add_argument("--window", type=int, default=2, help="un-acknowledged batches allowed on the wire")
    link.add_argument("--jpeg-quality", type=int, default=90)
    link.add_argument("--coding", default="zstd", choices=("zstd", "none"),
                      help="hierarchical and split: lossless coding of the feature codes (the edge node's coding)")
    link.add_argument("--cloud-threads", type=int, default=1, help="torch threads of the cloud process")
    link.add_argument("--epoch-samples", type=int, default=50000,
                      help="epoch size the per-epoch columns are scaled to (CIFAR-10: 50000)")
    link.add_argument("--data", default="fashion-mnist", help="fashion-mnist or cifar10-dir:PATH")
    link.add_argument("--alpha", default="2", type=_alpha,
                      help="backward/forward ratio of the estimates (Eq. 2-3): a number (the paper's 2) or "
                           "'measured' (timed on the whole model under the edge quota)")
    link.add_argument("--log-dir", default=None, help="keep the workers' and nodes' logs here")
    link.add_argument("--json", required=True, help="write the full report here")
    link.add_argument("--camera-hz", type=float, default=100.0,
                      help="hierarchical: the camera simulator's frame rate (it offers 2 x --samples frames)")
    link.add_argument("--edge-executor", default="", choices=("", "single", "events"),
                      help="hierarchical: the edge node's executor (ros_common.make_executor); default: the node's")
    link.add_argument("--plot", default=None, help="write linkbench.png into this folder")
    return link


def _alpha(value: str) -> float | None:
    if value.strip().lower() == "measured":
        return None
    return float(value)


def _terminate(_signum, _frame):
    raise KeyboardInterrupt  # unwinds through the emulator's clean-up


def config_from_args(args):
    """(BenchConfig, positions or None) from the parsed arguments."""
    from .bench import MODES, BenchConfig, parse_positions

    positions = parse_positions(args.positions, args.model) if args.positions else None
    default_modes = ("hierarchical",) if positions else MODES
    cfg = BenchConfig(arch=args.model, split_point=positions[0] if positions else args.position, link=args.link,
                      samples=args.samples, batch_size=args.batch_size, width=args.width, bits=args.bits,
                      budget_bits=args.budget_bits, edge_cpu_quota=args.edge_cpu_quota,
                      modes=tuple(args.modes or default_modes), window=args.window,
                      jpeg_quality=args.jpeg_quality, coding=args.coding, cloud_threads=args.cloud_threads,
                      epoch_samples=args.epoch_samples, data=args.data, log_dir=args.log_dir, alpha=args.alpha,
                      camera_hz=args.camera_hz, edge_executor=args.edge_executor)
    return cfg, positions


def main(argv: list[str] | None = None) -> int:
    import logging

    from hiertrain_ros.cli.common import print_table, write_json
    from hiertrain_ros.linkbench.netns import LinkUnavailable

    from .bench import plot, plot_positions, run_link_bench, run_positions, table_rows

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        cfg, positions = config_from_args(args)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        report = run_positions(cfg, positions) if positions else run_link_bench(cfg)
    except LinkUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGTERM, old)
    c = report["config"]
    if positions:
        print(f"# {c['arch']} width {c['width']:g} positions {positions}, link {report['link_bps']:g} bit/s, "
              f"edge quota {c['edge_cpu_quota']}, {c['bits']} bits, budget {c['budget_bits']} bits, "
              f"{c['samples']} samples per position; {report['cpu']}")
        print_table(report["rows"])
        write_json(args.json, report)
        if args.plot:
            print(f"plot: {plot_positions(report, args.plot)}")
        return 0
    print(f"# {c['arch']} width {c['width']:g} position {c['split_point']}, link {report['link_bps']:g} bit/s, "
          f"edge quota {c['edge_cpu_quota']}, {c['bits']} bits, budget {c['budget_bits']} bits, "
          f"{c['samples']} samples, batch {c['batch_size']}, "
          f"epoch = {c['epoch_samples']} samples, estimates with alpha {report['estimate']['params']['alpha']:.3g}; "
          f"{report['cpu']}")
    print_table(table_rows(report))
    for name, value in report["ratios"].items():
        print(f"{name}: {value:.3f}")
    write_json(args.json, report)
    if args.plot:
        print(f"plot: {plot(report, args.plot)}")
    return 0
