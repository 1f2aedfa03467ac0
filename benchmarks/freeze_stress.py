"""Freeze the cloud of a real edge_cloud graph K times; report the edge's longest output silence per freeze.

The reproduction of issue 15's ~1 s stall (Fast DDS shared memory meeting a SIGSTOPped peer).  By default the
graph runs as the package runs it on one host (ros_common.large_data_env: localhost UDP, no shared memory);
``--shared-memory`` keeps rmw_fastrtps's own LOCALHOST transports (shared memory + UDP), as before the fix.
Measured with this loop before it became this script: with shared memory, 4 stalls of 1.00-1.02 s in 150 freezes
(30 of them frozen 1.6 s, resumed 2.4 s); without it, 0 in 120, longest silence 0.161 s.

    .venv/bin/python benchmarks/freeze_stress.py --freezes 120 [--shared-memory] --json out/freeze_stress.json
"""

import argparse
import os
import time

from hiertrain_ros.cli.common import print_table, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--freezes", type=int, default=30)
    ap.add_argument("--shared-memory", action="store_true",
                    help="rmw_fastrtps's LOCALHOST transports (shared memory + UDP) instead of the package's")
    ap.add_argument("--json", default="out/freeze_stress.json")
    args = ap.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", "91")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    from hiertrain_ros.ros_common import large_data_profile, use_large_data_transport

    if args.shared_memory:  # a chosen profile: the package leaves LOCALHOST alone, and rmw_fastrtps adds shared memory
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = large_data_profile()
    use_large_data_transport()
    from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread, longest_gap

    graph = Graph(GRAPHS["edge_cloud"], overrides={"camera_sim": {"rate_hz": 100.0}, "edge_node": {"batch_size": 16}})
    monitor = MonitorThread()
    mon = monitor.node
    graph.start()
    silences = []
    try:
        deadline = time.monotonic() + 120
        while len(mon.trained_seqs["cloud"]) < 10:
            if time.monotonic() > deadline:
                raise SystemExit("the cloud did not train 10 batches in 120 s")
            time.sleep(0.1)
        for _ in range(args.freezes):
            t0 = time.monotonic()
            graph.pause("cloud_node")
            time.sleep(1.2)
            graph.resume("cloud_node")
            time.sleep(1.3)
            edge = [t for t in mon.edge_times if t0 - 0.5 <= t <= t0 + 2.5]
            gap, j = longest_gap(edge)
            silences.append({"silence_s": round(gap, 3), "from_s": round(edge[j] - t0, 3)})
    finally:
        graph.stop()
        monitor.close()
    stalls = [s for s in silences if s["silence_s"] > 0.3]
    report = {"env": {k: os.environ.get(k) for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")},
              "freezes": len(silences), "stalls_over_0.3s": stalls,
              "max_silence_s": max(s["silence_s"] for s in silences), "silences": silences}
    print_table([{"freezes": len(silences), "stalls_over_0.3s": len(stalls), "max_silence_s": report["max_silence_s"]}])
    write_json(args.json, report)


if __name__ == "__main__":
    main()
