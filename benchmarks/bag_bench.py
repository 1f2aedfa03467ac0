"""Bag benchmark (not a test): player throughput with --max, recorder drops at 30 Hz 640x480.

  python benchmarks/bag_bench.py [--frames-small 2000] [--frames-large 150] [--record-s 5]
      [--json out/bag_bench.json]

Set ROS_DOMAIN_ID first; discovery stays on this host.  Every number is
measured on this machine, with the player/recorder as a subprocess (``hiertrain bag ...``)
and a counting rclpy subscriber/publisher in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HIERTRAIN = [sys.executable, "-c", "import sys; from hiertrain_ros.cli import main; sys.exit(main())"]


def counting_node(topics_types):
    from rclpy.node import Node

    from hiertrain_ros.bag_nodes import message_class, play_qos
    from hiertrain_ros.ros_common import BEST_EFFORT_RECORD_QOS, PLAY_QOS

    node = Node("bag_bench_counter")
    counts: Counter = Counter()
    first_last: dict = {}
    for topic, msgtype in topics_types.items():
        qos = play_qos(msgtype)
        if qos is not PLAY_QOS:
            qos = BEST_EFFORT_RECORD_QOS

        def on(_raw, t=topic):
            counts[t] += 1
            now = time.monotonic()
            first_last.setdefault("first", now)
            first_last["last"] = now

        node.create_subscription(message_class(msgtype), topic, on, qos, raw=True)
    return node, counts, first_last


def bench_play(bag: Path, label: str, tmp: Path) -> dict:
    from hiertrain_ros import bag_files
    from hiertrain_ros.ros_common import Spinner

    info = bag_files.bag_info(bag)
    node, counts, first_last = counting_node({t["topic"]: t["type"] for t in info["topics"]})
    spinner = Spinner(node)
    out = tmp / f"play-{label}.json"
    try:
        proc = subprocess.run(HIERTRAIN + ["bag", "play", str(bag), "--max", "--wait-subscribers", "30",
                                           "--json", str(out)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout + proc.stderr)
        time.sleep(1.0)  # stragglers
    finally:
        spinner.close()
    played = json.loads(out.read_text())
    frame = next(t for t in info["topics"] if t["topic"] == bag_files.TOPIC_IMAGE)
    received = sum(counts.values())
    window = first_last.get("last", 0) - first_last.get("first", 0)
    return {"case": f"play --max {label}", "messages": played["messages"],
            "published_msgs_per_s": played["messages_per_s"],
            "frames_per_s": played["published"].get(bag_files.TOPIC_IMAGE, 0) / played["elapsed_s"],
            "received": received, "received_frames": counts.get(bag_files.TOPIC_IMAGE, 0),
            "frames_in_bag": frame["count"],
            "received_msgs_per_s": received / window if window > 0 else None}


def bench_record(frames: int, tmp: Path, label: str, transport: dict) -> dict:
    """Measure a 30 Hz 640x480 rgb8 camera (best effort, like a driver) recorded by ``hiertrain bag record``.

    ``transport`` is the DDS environment both processes get (``{}``: Fast DDS's defaults under LOCALHOST).
    """
    from hiertrain_ros import bag_files

    chosen = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
    env = {k: v for k, v in os.environ.items() if k not in chosen}
    env.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", **transport})
    # The camera side of this test is a separate process too, so its transport can differ.
    out = tmp / f"rec-{label}"
    recorder = subprocess.Popen(HIERTRAIN + ["bag", "record", "--topics", "/bench/camera", "--out", str(out)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    camera = subprocess.Popen([sys.executable, __file__, "--camera", str(frames)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cam_out, _ = camera.communicate(timeout=600)
    time.sleep(1.0)
    recorder.send_signal(signal.SIGINT)
    rec_out, _ = recorder.communicate(timeout=60)
    if camera.returncode != 0 or recorder.returncode != 0:
        raise RuntimeError(cam_out + rec_out)
    stats = json.loads(cam_out.strip().splitlines()[-1])
    got = sum(t["count"] for t in bag_files.bag_info(out)["topics"])
    return {"case": "camera with " + label, "published": stats["published"], "recorded": got,
            "drops": stats["published"] - got, "publish_rate_hz": stats["rate_hz"],
            "bag_mb": sum(f.stat().st_size for f in out.iterdir()) / 1e6}


def camera(frames: int) -> None:
    """Child process: wait for the recorder, then publish ``frames`` frames at 30 Hz."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_camera")
    pub = node.create_publisher(Image, "/bench/camera", qos_profile_sensor_data)
    deadline = time.monotonic() + 60
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
    import array
    msg.data = array.array("B", bytes(range(256)) * (640 * 480 * 3 // 256))
    t0 = time.monotonic()
    for i in range(frames):
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1, i
        pub.publish(msg)
        time.sleep(max(0.0, t0 + (i + 1) / 30 - time.monotonic()))
    elapsed = time.monotonic() - t0
    node.destroy_node()
    rclpy.shutdown()
    print(json.dumps({"published": frames, "rate_hz": frames / elapsed}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-small", type=int, default=2000)
    parser.add_argument("--frames-large", type=int, default=150)
    parser.add_argument("--record-frames", type=int, default=150, help="frames at 30 Hz for the recorder test")
    parser.add_argument("--json", default="out/bag_bench.json")
    parser.add_argument("--camera", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.camera is not None:
        camera(args.camera)
        return
    import rclpy

    from hiertrain_ros import bag_files
    from hiertrain_ros.ros_common import large_data_env, use_large_data_transport
    from hiertrain_ros.cli.common import print_table, write_json

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    use_large_data_transport()  # this process's counting subscriber and the player: the package's transport
    rclpy.init()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bag-bench-") as tmp:
        tmp = Path(tmp)
        small, large = tmp / "small", tmp / "large"
        t = time.monotonic()
        bag_files.make_bag(small, subset=args.frames_small, rate_hz=30.0)
        make_small = time.monotonic() - t
        t = time.monotonic()
        bag_files.make_bag(large, subset=args.frames_large, rate_hz=30.0, width=640, height=480)
        make_large = time.monotonic() - t
        rows.append(bench_play(small, "32x32", tmp))
        rows.append(bench_play(large, "640x480", tmp))
        rclpy.shutdown()
        rec = [bench_record(args.record_frames, tmp, "the package's transport (localhost UDP, 4 MiB buffers)",
                            large_data_env({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})),
               bench_record(args.record_frames, tmp, "Fast DDS defaults (shared memory 512 KiB + UDP)", {})]
    result = {
        "conditions": {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                       "load_avg_1m": os.getloadavg()[0], "python": platform.python_version(),
                       "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
                       "storage": "mcap", "frames_small": args.frames_small, "frames_large": args.frames_large},
        "make_s": {"32x32": make_small, "640x480": make_large},
        "play": rows, "record": rec}
    print("\nplayer, --max (2 messages per frame: image + label/truth):")
    print_table(rows, ["case", "messages", "published_msgs_per_s", "frames_per_s", "received", "received_frames",
                       "frames_in_bag"])
    print("\nrecorder, 30 Hz 640x480 rgb8 best-effort camera:")
    print_table(rec, ["case", "published", "recorded", "drops", "publish_rate_hz", "bag_mb"])
    print(f"\nmake: {args.frames_small} frames 32x32 in {make_small:.2f} s, "
          f"{args.frames_large} frames 640x480 in {make_large:.2f} s")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
