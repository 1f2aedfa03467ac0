"""``hiertrain replay``.

The offline test — the edge/cloud/fallback graph against a bag, in lockstep, with held-out accuracy over the course of
the bag.  Same bag, config and seed: same numbers.
"""

from __future__ import annotations

import hashlib

NODES = ("edge_node", "cloud_node", "fallback_node")
# Offline there is no link to lose: a node slowed down by a busy machine must not look like
# an outage (which would make the output path depend on timing), and the cloud answers from
# its training thread (a serving copy would follow the weights on a timer).  --set overrides these.
OFFLINE_DEFAULTS = {
    "edge_node": {"heartbeat_timeout_s": 5.0},
    "cloud_node": {"metrics_every": 1, "serve_refresh_s": 0.0},
    "fallback_node": {"heartbeat_timeout_s": 5.0, "cloud_grace_s": 2.0},
}


def add_parser(sub) -> None:
    p = sub.add_parser("replay", help="run edge/cloud/fallback against a bag in lockstep and report accuracy")
    p.add_argument("bag")
    p.add_argument("--config", default=None, help="ROS params YAML (default: config/edge_cloud.yaml)")
    p.add_argument("--seed", type=int, default=None, help="model seed for every node (overrides the config)")
    p.add_argument("--set", action="append", default=[], metavar="[NODE.]NAME=VALUE",
                   help="override a parameter, e.g. --set width=0.125 --set edge_node.batch_size=16")
    p.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                   help="play the bag's topic FROM as TO (repeatable), e.g. a robot's camera: "
                        "--remap /camera/color/image_raw:=/camera/image_raw")
    p.add_argument("--bins", type=int, default=10, help="accuracy over time in this many parts of the bag")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each lockstep answer")
    p.add_argument("--log-dir", default=None, help="write each node's output to DIR/NODE.log")
    p.add_argument("--json", default=None, help="write the report to this file")
    p.add_argument("--answers", default=None, metavar="FILE",
                   help="write every frame's label and each path's answer to this JSON (offline analysis of the "
                        "arbiter, for example)")
    p.set_defaults(func=run)


def merge_overrides(sets: list[str], seed: int | None) -> dict:
    from .launch import parse_overrides

    overrides = {node: dict(values) for node, values in OFFLINE_DEFAULTS.items()}
    for node, values in parse_overrides(sets).items():
        overrides.setdefault(node, {}).update(values)
    if seed is not None:
        overrides.setdefault("*", {})["seed"] = seed
    return overrides


def accuracy_over_time(frame_stamps: list[int], truth: dict, predictions: dict, bins: int) -> list[dict]:
    """Held-out accuracy of each path in each of ``bins`` consecutive parts of the bag."""
    n = len(frame_stamps)
    rows = [{"part": f"{100 * b // bins}-{100 * (b + 1) // bins}%", "held_out": 0,
             **{f"{k}_correct": 0 for k in predictions}, **{f"{k}_evaluated": 0 for k in predictions}}
            for b in range(bins)]
    for i, stamp in enumerate(frame_stamps):
        if stamp not in truth:
            continue
        row = rows[min(bins - 1, i * bins // max(1, n))]
        row["held_out"] += 1
        for key, preds in predictions.items():
            if stamp in preds:
                row[f"{key}_evaluated"] += 1
                row[f"{key}_correct"] += int(preds[stamp][0] == truth[stamp])
    for row in rows:
        for key in predictions:
            done = row.pop(f"{key}_evaluated")
            row[f"{key}_accuracy"] = row.pop(f"{key}_correct") / done if done else None
    return rows


def digest(frame_stamps: list[int], predictions: dict) -> str:
    """Fingerprint of every prediction, in bag order (equal digests: identical runs)."""
    h = hashlib.sha256()
    for stamp in frame_stamps:
        for key in sorted(predictions):
            p = predictions[key].get(stamp)
            h.update(f"{key}:{p[0] if p else '-'};".encode())
    return h.hexdigest()[:16]


def frame_answers(labels: dict, truth: dict, segments: dict, predictions: dict) -> dict:
    """Every frame's truth and answers, in stamp order: for ``--answers``."""
    fields = ("class_id", "source", "latency", "confidence", "reason")
    frames = []
    for stamp in sorted(set(labels) | set(truth) | {s for by_stamp in predictions.values() for s in by_stamp}):
        if stamp in labels:
            frame = {"stamp": stamp, "label": labels[stamp][0], "segment": labels[stamp][1]}
        elif stamp in truth:
            frame = {"stamp": stamp, "truth": truth[stamp], "segment": segments.get(stamp, 0)}
        else:
            frame = {"stamp": stamp}
        for path, by_stamp in predictions.items():
            if stamp in by_stamp:
                frame[path] = dict(zip(fields, by_stamp[stamp]))
        frames.append(frame)
    return {"fields": list(fields), "frames": frames}


def run(args) -> int:
    import tempfile
    import time
    from pathlib import Path

    from .. import bag_files
    from ..core.fallback import NOT_OFFLOADED
    from ..bag_nodes import Player
    from ..ros_common import Spinner, StopFlag
    from ..ros_common import use_large_data_transport
    from ..runner import Graph, MonitorThread
    from .common import parse_remaps, print_adaptation, print_table, write_json

    info = bag_files.bag_info(args.bag)  # a missing or malformed bag fails here, before any node starts
    remap = parse_remaps(args.remap)
    counts = {remap.get(t["topic"], t["topic"]): t["count"] for t in info["topics"]}  # by the name played
    if bag_files.TOPIC_IMAGE not in counts:
        images = [t["topic"] for t in info["topics"] if t["type"] == bag_files.IMAGE_TYPE]
        hint = f" (images on {images[0]}: add --remap {images[0]}:={bag_files.TOPIC_IMAGE})" if images else ""
        raise ValueError(f"{args.bag} plays nothing on {bag_files.TOPIC_IMAGE}: nothing to replay{hint}")
    if args.bins < 1:
        raise ValueError(f"--bins must be >= 1, got {args.bins}")
    overrides = merge_overrides(args.set, args.seed)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="hiertrain-replay-"))
    use_large_data_transport()  # before rclpy.init and Graph: the nodes inherit it via the environment
    graph = Graph(NODES, args.config, overrides, log_dir=log_dir)
    stop = StopFlag()
    monitor = MonitorThread()
    spinner = None
    codes: dict = {}
    start = time.monotonic()
    print(f"hiertrain replay {args.bag}: {info['messages']} messages, {', '.join(NODES)} "
          f"with {graph.params_file} (logs in {log_dir})", flush=True)
    try:
        # The player stands in for the camera: it signs the labels with the camera's key, if any.
        player = Player(args.bag, remap=remap, lockstep=True, key_file=graph.param("camera_sim", "auth_key_file", ""))
        spinner = Spinner(player)
        graph.start()
        total = counts[bag_files.TOPIC_IMAGE]
        marks = {max(1, total * k // 10) for k in range(1, 11)}

        def progress(p):
            if p.frames_sent in marks:
                dead = [n for n, ok in graph.alive().items() if not ok]
                if dead:
                    raise RuntimeError(f"node(s) exited: {', '.join(dead)} (see {log_dir})")
                print(f"  {p.frames_sent}/{total} frames, {p.edge_steps} training steps", flush=True)

        try:
            summary = player.play_lockstep(wait_cloud=True, timeout=args.timeout, stop=stop, progress=progress,
                                           fallback="fallback_node")
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
        time.sleep(0.5)  # the monitor's last predictions and metrics
    finally:
        if spinner:
            spinner.close()
        codes = graph.stop()
        mon = monitor.node
        report = mon.report()
        with mon._lock:
            truth = dict(mon.truth)
            predictions = {k: dict(v) for k, v in mon.predictions.items() if k in ("edge", "cloud")}
            answers = frame_answers(mon.labels, mon.truth, mon.segments, mon.predictions) if args.answers else None
        monitor.close()
        stop.restore()

    frames = player.frame_stamps
    truth_in_bag = counts.get(bag_files.TOPIC_TRUTH, 0)
    report.update(
        bag=str(args.bag), seed=args.seed, overrides=overrides, exit_codes=codes,
        duration_s=time.monotonic() - start, player=summary,
        accuracy_over_time=accuracy_over_time(frames, truth, predictions, args.bins),
        predictions_digest=digest(frames, predictions),
        drops={"frames_not_consumed": summary["frames"] - summary["consumed"],
               "held_out_truth_missing": truth_in_bag - len(truth),
               # every held-out frame is predicted only with predict_every 1
               "edge_predictions_missing": sum(1 for s in truth if s not in predictions["edge"])
               if summary["predict_every"] == 1 else None,
               # ... and offloaded unless the edge kept it (offload_policy unsure or never: reason NOT_OFFLOADED)
               "cloud_predictions_missing": sum(1 for s in truth if s not in predictions["cloud"]
                                                and predictions["edge"].get(s, (None,) * 5)[4] != NOT_OFFLOADED)
               if summary["predict_every"] == 1 else None,
               "lockstep_timeouts": sum(summary["timeouts"].values())})
    print("\nHeld-out accuracy over the bag:")
    print_table(report["accuracy_over_time"], ["part", "held_out", "edge_accuracy", "cloud_accuracy"])
    print("\nHeld-out accuracy, whole bag:")
    print_table([{"path": k, "accuracy": report[f"{k}_accuracy"], "frames": report[f"{k}_evaluated"]}
                 for k in ("edge", "cloud", "output")])
    print_adaptation(report["adaptation"])
    print("\nMessage counts:")
    print_table([{"topic": k, "count": v} for k, v in sorted(report["counts"].items())])
    print(f"\nframes {summary['frames']}, consumed {summary['consumed']}, edge steps {summary['edge_steps']}, "
          f"cloud steps {summary['cloud_steps']}, {summary['frames_per_s']:.1f} frames/s")
    print("drops: " + ", ".join(f"{k} {v}" for k, v in report["drops"].items()))
    print(f"predictions digest: {report['predictions_digest']}")
    write_json(args.json, report)
    write_json(args.answers, answers)
    bad_exit = not all(c in (0, -2, 130) for c in codes.values())
    return 1 if bad_exit or any(report["drops"].values()) else 0
