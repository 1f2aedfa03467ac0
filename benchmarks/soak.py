"""Soak benchmark (not a test): the whole graph at camera rate for a long time.

Reports each node's RSS after a warm-up and at the end (target growth <= 5 %), the
queues' high-water marks against their limits, and the counts of frames, batches,
drops and rejections.

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--rate 30] [--warmup 60]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core.config import CloudConfig, EdgeConfig
from hiertrain_ros.ros_common import use_large_data_transport
from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the first RSS reading")
    parser.add_argument("--json", default="out/soak.json")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "89")
    use_large_data_transport()  # this process's monitor talks to the nodes over their transport

    graph = Graph(GRAPHS["edge_cloud"], overrides={"camera_sim": {"rate_hz": args.rate}})
    monitor = MonitorThread()
    graph.start()
    time.sleep(args.warmup)
    pids = {name: proc.pid for name, proc in graph.procs.items()}
    start = {name: rss_mib(pid) for name, pid in pids.items()}
    samples = [(0.0, dict(start))]
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.minutes * 60:
        time.sleep(10)
        samples.append((time.monotonic() - t0, {n: rss_mib(p) for n, p in pids.items()}))
        if not all(graph.alive().values()):
            break
    end = samples[-1][1]
    alive = graph.alive()
    graph.stop()
    report = monitor.node.report()
    monitor.close()

    rows = [{"node": n, "rss_start_mib": start[n], "rss_end_mib": end[n],
             "growth_pct": 100 * (end[n] - start[n]) / start[n], "alive_at_end": alive[n]} for n in pids]
    edge, cloud = report["node_status"].get("edge_node", {}), report["node_status"].get("cloud_node", {})
    result = {
        "conditions": {"minutes": args.minutes, "rate_hz": args.rate, "warmup_s": args.warmup,
                       "cpu_count": os.cpu_count()},
        "rss": rows, "rss_samples": samples,
        "queue_peaks": report["queue_peaks"],
        "queue_limits": {"edge_node.infer_queue": EdgeConfig.queue_size,
                         "edge_node.buffer_fill": EdgeConfig.buffer_size,
                         "cloud_node.train_queue": CloudConfig.queue_size,
                         "cloud_node.infer_queue": CloudConfig.queue_size},
        "edge": edge, "cloud": cloud, "counts": report["counts"],
        "held_out_accuracy": {k: report[f"{k}_accuracy"] for k in ("edge", "cloud", "output")},
    }
    print_table(rows)
    print("queue peaks:", report["queue_peaks"])
    print_table([{"frames": edge.get("frames"), "edge_steps": edge.get("steps"), "cloud_steps": cloud.get("steps"),
                  "feature_batches": report["counts"].get("feature_batches"),
                  "dropped_infer": edge.get("dropped_infer_queue"), "dropped_train": edge.get("dropped_train_buffer"),
                  "outbox_dropped": edge.get("outbox_dropped"), "rejected_edge": edge.get("rejected"),
                  "rejected_cloud": cloud.get("rejected")}])
    write_json(args.json, result)


if __name__ == "__main__":
    main()
