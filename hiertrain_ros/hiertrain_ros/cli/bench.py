"""``hiertrain bench link``: every training mode over one emulated edge->cloud link."""

from __future__ import annotations

import signal
import sys

from .common import add_model_options


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks on emulated links (needs root: namespaces, tc, cgroups)")
    kinds = p.add_subparsers(dest="bench", required=True)
    link = kinds.add_parser("link", help="hierarchical vs full-cloud (raw, JPEG) vs split learning vs edge-only, "
                                         "real ROS 2 processes over a tbf-shaped veth between two namespaces")
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
    link.add_argument("--cloud-threads", type=int, default=1, help="torch threads of the cloud process")
    link.add_argument("--epoch-samples", type=int, default=50000,
                      help="epoch size the per-epoch columns are scaled to (CIFAR-10: 50000)")
    link.add_argument("--data", default="fashion-mnist", help="fashion-mnist or cifar10-dir:PATH")
    link.add_argument("--alpha", default="2", type=_alpha,
                      help="backward/forward ratio of the estimates (Eq. 2-3): a number (the paper's 2) or "
                           "'measured' (timed on the whole model under the edge quota)")
    link.add_argument("--log-dir", default=None, help="keep the workers' logs here")
    link.add_argument("--json", required=True, help="write the full report here")
    link.add_argument("--plot", default=None, help="write linkbench.png into this folder")
    link.set_defaults(func=run)


def _alpha(value: str) -> float | None:
    if value.strip().lower() == "measured":
        return None
    return float(value)


def _terminate(_signum, _frame):
    raise KeyboardInterrupt  # unwinds through the emulator's clean-up


def config_from_args(args):
    """(BenchConfig, positions or None) from the parsed ``bench link`` arguments."""
    from ..linkbench.bench import BenchConfig, parse_positions
    from ..linkbench.worker import MODES

    positions = parse_positions(args.positions, args.model) if args.positions else None
    default_modes = ("hierarchical",) if positions else MODES
    cfg = BenchConfig(arch=args.model, split_point=positions[0] if positions else args.position, link=args.link,
                      samples=args.samples, batch_size=args.batch_size, width=args.width, bits=args.bits,
                      budget_bits=args.budget_bits, edge_cpu_quota=args.edge_cpu_quota,
                      modes=tuple(args.modes or default_modes), window=args.window,
                      jpeg_quality=args.jpeg_quality, cloud_threads=args.cloud_threads,
                      epoch_samples=args.epoch_samples, data=args.data, log_dir=args.log_dir, alpha=args.alpha)
    return cfg, positions


def run(args) -> int:
    from ..linkbench.bench import plot, plot_positions, run_link_bench, run_positions, table_rows
    from ..linkbench.netns import LinkUnavailable
    from .common import print_table, write_json

    try:
        cfg, positions = config_from_args(args)
    except ValueError as exc:
        print(f"hiertrain bench link: {exc}", file=sys.stderr)
        return 2
    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        report = run_positions(cfg, positions) if positions else run_link_bench(cfg)
    except LinkUnavailable as exc:
        print(f"hiertrain bench link: {exc}", file=sys.stderr)
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
