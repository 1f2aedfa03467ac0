"""System benchmark (not a test): the edge node on a camera stream, wire bytes, latencies.

Starts the real graph (camera_sim -> edge -> cloud -> fallback) as processes on real DDS,
feeds the edge a 640x480 rgb8 stream at 30 Hz by default, and reports:
  * frames published vs processed vs dropped by the edge, and its queue high-water marks;
  * serialized FeatureBatch bytes vs payload bits (packed codes + the 32-bit scale);
  * prediction latency p50/p99 (frame stamp -> prediction published) for edge and cloud.

    .venv/bin/python benchmarks/system_bench.py [--seconds 30] [--rate 30] [--size 640x480]
"""

from __future__ import annotations

import argparse
import os
import time
import numpy as np
from hiertrain_interfaces.msg import FeatureBatch
from rclpy.serialization import serialize_message

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core.config import EdgeConfig
from hiertrain_ros.ros_common import use_large_data_transport
from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--json", default="out/system_bench.json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "88")
    use_large_data_transport()  # this process's monitor talks to the nodes over their transport

    graph = Graph(GRAPHS["edge_cloud"], overrides={
        "camera_sim": {"rate_hz": args.rate, "width_px": width, "height_px": height}})
    monitor = MonitorThread()
    mon = monitor.node
    wire: list[tuple[int, int, int]] = []  # (serialized bytes, payload bits, samples)

    def on_features(msg: FeatureBatch) -> None:
        wire.append((len(serialize_message(msg)), len(msg.data) * 8 + 32, msg.shape[0] if msg.shape else 0))

    mon.create_subscription(FeatureBatch, "hiertrain/features", on_features, 50)
    graph.start()

    def snapshot():
        published = mon.counts["labels"] + mon.counts["held_out_frames"]
        return published, int(mon.status.get("edge_node", {}).get("frames", 0))

    # Count from the edge's first status report on: frames published before the edge
    # had subscribed are start-up, not drops.
    deadline = time.monotonic() + 60
    while "edge_node" not in mon.status and time.monotonic() < deadline:
        time.sleep(0.1)
    first = snapshot()
    time.sleep(args.seconds)
    last = snapshot()
    graph.stop()
    time.sleep(0.5)
    report = mon.report()
    monitor.close()

    edge = report["node_status"].get("edge_node", {})
    latencies = {}
    for key in ("edge", "cloud", "output"):
        values = np.array([answer[2] for answer in mon.predictions[key].values()])
        if values.size:
            latencies[key] = {"p50_ms": float(np.percentile(values, 50) * 1e3),
                              "p99_ms": float(np.percentile(values, 99) * 1e3), "n": int(values.size)}
    sizes = np.array(wire) if wire else np.zeros((0, 3))
    train = sizes[sizes[:, 2] >= 16] if len(sizes) else sizes
    infer = sizes[sizes[:, 2] < 16] if len(sizes) else sizes
    result = {
        "conditions": {"seconds": args.seconds, "rate_hz": args.rate, "size": args.size,
                       "cpu_count": os.cpu_count(), "note": "all nodes and the monitor on one machine"},
        "frames_published": last[0] - first[0],
        "edge_frames_received": last[1] - first[1],
        "frames_lost_before_edge": (last[0] - first[0]) - (last[1] - first[1]),
        "edge_dropped_infer_queue": int(edge.get("dropped_infer_queue", 0)),
        "edge_dropped_train_buffer": int(edge.get("dropped_train_buffer", 0)),
        "edge_steps": int(edge.get("steps", 0)),
        "queue_peaks": report["queue_peaks"],
        "queue_limits": {"edge_node.infer_queue": EdgeConfig.queue_size,
                         "edge_node.buffer_fill": EdgeConfig.buffer_size},
        "wire_over_payload_train": float(train[:, 0].sum() / (train[:, 1].sum() / 8)) if len(train) else None,
        "wire_over_payload_infer": float(infer[:, 0].sum() / (infer[:, 1].sum() / 8)) if len(infer) else None,
        "wire_over_payload_all": float(sizes[:, 0].sum() / (sizes[:, 1].sum() / 8)) if len(sizes) else None,
        "mean_infer_batch": float(infer[:, 2].mean()) if len(infer) else None,
        "latency": latencies,
        "counts": report["counts"],
    }
    print_table([{k: v for k, v in result.items() if not isinstance(v, dict)}])
    print_table([{"path": k, **v} for k, v in latencies.items()])
    print("queue peaks:", report["queue_peaks"])
    write_json(args.json, result)


if __name__ == "__main__":
    main()
