"""``hiertrain launch``: start a node graph from the params file, the pip user's ``ros2 launch``."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("launch", help="start the edge/cloud/fallback graph as processes (Ctrl-C stops it)")
    p.add_argument("graph", choices=("edge_cloud", "edge", "cloud"))
    p.add_argument("--params-file", default=None, help="ROS params YAML (default: config/edge_cloud.yaml)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: run until Ctrl-C)")
    p.add_argument("--set", action="append", default=[], metavar="[NODE.]NAME=VALUE",
                   help="override a parameter, e.g. --set split_point=4 or --set camera_sim.rate_hz=30")
    p.add_argument("--log-dir", default=None, help="write each node's output to DIR/NODE.log")
    p.add_argument("--json", default=None, help="write the final report to this file")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict:
    import yaml

    overrides: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects [NODE.]NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        node, _, name = key.rpartition(".")
        overrides.setdefault(node or "*", {})[name] = yaml.safe_load(value)
    return overrides


def run(args) -> int:
    import signal
    import time

    from ..runner import GRAPHS, Graph, MonitorThread
    from .common import print_table, write_json

    graph = Graph(GRAPHS[args.graph], args.params_file, parse_overrides(args.set), log_dir=args.log_dir)
    monitor = MonitorThread()
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    print(f"hiertrain launch {args.graph}: {', '.join(graph.nodes)} with {graph.params_file}", flush=True)
    graph.start()
    start = time.monotonic()
    try:
        while not stop["now"] and (not args.duration or time.monotonic() - start < args.duration):
            time.sleep(0.2)
            dead = [n for n, ok in graph.alive().items() if not ok]
            if dead:
                print(f"node(s) exited: {', '.join(dead)}", flush=True)
                break
    finally:
        codes = graph.stop()
        report = monitor.node.report()
        monitor.close()
    report["exit_codes"] = codes
    report["duration_s"] = time.monotonic() - start
    _print_report(report, print_table)
    write_json(args.json, report)
    return 0 if all(c in (0, -2, 130) for c in codes.values()) else 1


def _print_report(report: dict, print_table) -> None:
    print("\nHeld-out accuracy (frames never trained on):")
    print_table([{"path": k, "accuracy": report[f"{k}_accuracy"], "frames": report[f"{k}_evaluated"]}
                 for k in ("edge", "cloud", "output")])
    print("\nMessage counts:")
    print_table([{"topic": k, "count": v} for k, v in sorted(report["counts"].items())])
    for key in ("cloud", "edge"):
        if f"{key}_loss_first" in report:
            print(f"{key} loss: {report[f'{key}_loss_first']:.3f} -> {report[f'{key}_loss_last']:.3f}")
    print(f"output served by cloud: {report['output_from_cloud']}, by edge: {report['output_from_edge']}")
