"""Soak benchmark (not a test): the whole graph at camera rate for a long time, through outages.

The camera plays a stream that changes (the base domain and a rotated, dimmer one, alternating every
``--segment-minutes``), and the cloud is frozen (SIGSTOP: to the robot, an outage) for ``--outage-s`` every
``--outage-every`` seconds.  Reports each node's RSS after the warm-up and at the end (target: within 5 %),
the output topic's longest silence (target: 0.35 s), the batches the cloud never trained (target: none), the
queues' high-water marks against their limits, and the counts of frames, batches, drops and rejections.

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--rate 20] [--warmup 60] [--outage-every 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core.config import CloudConfig, EdgeConfig
from hiertrain_ros.ros_common import use_large_data_transport
from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak_scenario(args) -> list[dict]:
    """Segments alternating the base domain and domain_shift's rotated, dimmer one, long enough for the run."""
    frames = max(1, round(args.segment_minutes * 60 * args.rate))
    total_s = args.warmup + args.minutes * 60 + 120
    count = int(total_s // (args.segment_minutes * 60)) + 1
    shifted = {"rotation": 30, "brightness": 0.6}
    return [{"name": "base", "frames": frames} if i % 2 == 0 else
            {"name": "rotated, dim", "frames": frames, "transform": shifted} for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=20.0, help="camera frames per second")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the first RSS reading")
    parser.add_argument("--outage-every", type=float, default=300.0, help="seconds between outages (0: none)")
    parser.add_argument("--outage-s", type=float, default=30.0, help="length of each outage")
    parser.add_argument("--segment-minutes", type=float, default=5.0, help="the stream changes this often")
    parser.add_argument("--json", default="out/soak.json")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "89")
    use_large_data_transport()  # this process's monitor talks to the nodes over their transport

    scenario = Path(tempfile.mkdtemp(prefix="soak-")) / "soak.yaml"
    scenario.write_text(yaml.safe_dump(soak_scenario(args)))
    graph = Graph(GRAPHS["edge_cloud"], overrides={"camera_sim": {"rate_hz": args.rate, "scenario": str(scenario)},
                                                   "edge_node": {"batch_size": 16}})
    monitor = MonitorThread()
    graph.start()
    time.sleep(args.warmup)
    pids = {name: proc.pid for name, proc in graph.procs.items()}
    start = {name: rss_mib(pid) for name, pid in pids.items()}
    samples = [(0.0, dict(start))]
    outages = []  # (start, end) seconds after t0
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.minutes * 60:
        time.sleep(1.0)
        now = time.monotonic() - t0
        due = args.outage_every and now >= args.outage_every * (len(outages) + 1)
        if due and now + args.outage_s < args.minutes * 60:
            graph.pause("cloud_node")
            time.sleep(args.outage_s)
            graph.resume("cloud_node")
            outages.append((round(now, 1), round(time.monotonic() - t0, 1)))
        if time.monotonic() - t0 - samples[-1][0] >= 10:
            samples.append((round(time.monotonic() - t0, 1), {n: rss_mib(p) for n, p in pids.items()}))
        if not all(graph.alive().values()):
            break
    time.sleep(20)  # what the last outage left stored reaches the cloud
    end = samples[-1][1]
    alive = graph.alive()
    report = monitor.node.report()
    codes = graph.stop()
    monitor.close()

    rows = [{"node": n, "rss_start_mib": start[n], "rss_end_mib": end[n],
             "growth_pct": 100 * (end[n] - start[n]) / start[n], "alive_at_end": alive[n]} for n in pids]
    edge, cloud = report["node_status"].get("edge_node", {}), report["node_status"].get("cloud_node", {})
    untrained = [age for age in report["batches"]["not_trained_by_cloud_age_s"] if age > 10]  # not on their way
    result = {
        "conditions": {"minutes": args.minutes, "rate_hz": args.rate, "warmup_s": args.warmup,
                       "outage_every_s": args.outage_every, "outage_s": args.outage_s,
                       "segment_minutes": args.segment_minutes, "cpu_count": os.cpu_count()},
        "outages_s": outages, "exit_codes": codes,
        "max_output_gap_s": report["max_output_gap_s"], "output_gaps_over_0.3s": report["output_gaps_over_0.3s"],
        "max_edge_gap_s": report["max_edge_gap_s"],
        "batches": report["batches"], "batches_lost": len(untrained),
        "adaptation": report["adaptation"],
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
    print(f"outages (s after the warm-up): {outages}")
    print(f"output: longest silence {report['max_output_gap_s']:.3f} s (edge's own {report['max_edge_gap_s']:.3f} s); "
          f"silences over 0.3 s: {report['output_gaps_over_0.3s']}")
    print(f"batches: {report['batches']['edge']} made, {report['batches']['cloud']} trained, "
          f"{report['batches']['cloud_trained_twice']} twice, {len(untrained)} never (ages {untrained[:10]}); "
          f"exit codes {codes}")
    print("queue peaks:", report["queue_peaks"])
    print_table([{"frames": edge.get("frames"), "edge_steps": edge.get("steps"), "cloud_steps": cloud.get("steps"),
                  "feature_batches": report["counts"].get("feature_batches"),
                  "dropped_infer": edge.get("dropped_infer_queue"), "dropped_train": edge.get("dropped_train_buffer"),
                  "outbox_dropped": edge.get("outbox_dropped"), "rejected_edge": edge.get("rejected"),
                  "rejected_cloud": cloud.get("rejected")}])
    write_json(args.json, result)


if __name__ == "__main__":
    main()
