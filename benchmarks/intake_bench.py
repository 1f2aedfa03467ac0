r"""Intake bench: what the edge node pays to take in camera frames (issue 14).

Two measurements, per executor the edge node may run (``ros_common.make_executor``):

- **stream**: the package's ``camera_sim`` publishes ``--frames`` labelled frames at ``--camera-hz`` to the
  package's ``edge_node`` (no cloud, no link: the edge trains and stores its batches), both as processes, as in the
  link bench's hierarchical mode (its node parameters).  The edge's CPU time from the camera's start to its last
  frame (plus ``--settle-s``) is read per thread from /proc: the main thread is the executor, the ``intake``
  thread takes every frame and label (``ros_common.Intake``; an older tree's executor took them itself), ``dds.*``
  threads are Fast DDS, the rest is the trainer and the sender.  CPU time is what a cgroup quota charges:
  ``intake core`` (main + intake + DDS CPU per frame x ``--camera-hz``) is the share of a core that taking in the
  camera takes from what a quota-limited edge trains with.
- **callback**: ``on_image`` then ``on_label`` called directly on an edge node in this process, without DDS
  or the executor, on frames made as ``camera_sim`` makes them, past a full training buffer (most frames
  dropped, as at 400 Hz); CPU per frame of this thread.

Run it under the bench lock; ``PYTHONPATH=DIR`` runs an export of an earlier commit for the "before" figures
(the JSON records it):

    flock /tmp/bench.lock .venv/bin/python benchmarks/intake_bench.py --camera-hz 400 --frames 2048 \
        --executors single events --json out.json --plot DIR
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from linkbench.nodes import node_overrides  # noqa: E402  the link bench's node parameters

CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict:
    """Return {(tid, name): CPU seconds} of a process's threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[(int(tid), name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_split(pid: int, before: dict, after: dict) -> dict:
    """CPU seconds between two :func:`thread_cpu` readings: main thread, intake thread, Fast DDS threads, the rest."""
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    main = sum(v for (tid, _), v in used.items() if tid == pid)
    intake = sum(v for (tid, name), v in used.items() if tid != pid and name == "intake")
    dds = sum(v for (tid, name), v in used.items() if tid != pid and name.startswith("dds."))
    return {"main": main, "intake": intake, "dds": dds, "other": sum(used.values()) - main - intake - dds,
            "total": sum(used.values())}


def bench_config(args) -> SimpleNamespace:
    return SimpleNamespace(arch="vgg16", split_point=args.position, width=0.25, bits=4, budget_bits=4096, seed=0,
                           data="fashion-mnist", camera_hz=args.camera_hz, samples=args.frames // 2,
                           batch_size=32, coding="zstd", cloud_threads=1)


def run_stream(args, executor: str, log_dir: Path | None) -> dict:
    import rclpy

    from hiertrain_ros.ros_common import Spinner
    from hiertrain_ros.runner import Graph, Monitor

    overrides = node_overrides(bench_config(args), 1.1e6)
    overrides["edge_node"]["executor"] = executor  # an older tree's node ignores it (single)
    overrides["camera_sim"]["max_frames"] = args.frames  # the link bench's camera streams until stopped
    scratch = tempfile.TemporaryDirectory(prefix="intake-")
    logs = log_dir / executor if log_dir else Path(scratch.name)
    graph = Graph(("edge_node", "camera_sim"), overrides=overrides, env={"ROS_DOMAIN_ID": str(args.domain)},
                  log_dir=logs)
    camera_log = logs / "camera_sim.log"
    camera_from = camera_log.stat().st_size if camera_log.exists() else 0
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=args.domain)
    monitor = Monitor(context=context)
    spinner = Spinner(monitor, context=context)
    try:
        graph.start("edge_node")
        pid = graph.procs["edge_node"].pid
        deadline = time.monotonic() + 120
        while monitor.status.get("edge_node", {}).get("frames") != "0":  # configured, active, publishing status
            if time.monotonic() > deadline or graph.procs["edge_node"].poll() is not None:
                raise RuntimeError("the edge node did not come up (see --log-dir)")
            time.sleep(0.1)
        time.sleep(2.0)  # past start-up work
        cpu0, t0 = thread_cpu(pid), time.monotonic()
        graph.start("camera_sim")
        # Until the camera has sent its last frame (it may fall behind its rate on a busy machine), then settle.
        deadline = time.monotonic() + 3 * args.frames / args.camera_hz + 60
        while "done:" not in (text := camera_log.read_bytes()[camera_from:].decode(errors="replace")):
            if time.monotonic() > deadline or graph.procs["camera_sim"].poll() is not None:
                raise RuntimeError("the camera did not finish (see --log-dir)")
            time.sleep(0.05)
        time.sleep(args.settle_s)
        cpu1, t1 = thread_cpu(pid), time.monotonic()
        time.sleep(2.5)  # a status (1 Hz) from after the window: its frame count is final (none come after)
        status = dict(monitor.status.get("edge_node", {}))
    finally:
        codes = graph.stop()
        spinner.close()
        rclpy.try_shutdown(context=context)
        scratch.cleanup()
    cpu = cpu_split(pid, cpu0, cpu1)
    received = int(status.get("frames", 0))
    return {"executor": executor, "frames_published": args.frames, "frames_received": received,
            "camera_hz_achieved": camera_rate(text), "wall_s": t1 - t0, "cpu_s": cpu, "edge_steps": status.get("steps"),
            "dropped_train_buffer": status.get("dropped_train_buffer"), "exit_codes": codes,
            "main_us_per_frame": 1e6 * cpu["main"] / max(1, received),
            "intake_us_per_frame": 1e6 * cpu["intake"] / max(1, received),
            "process_us_per_frame": 1e6 * (cpu["main"] + cpu["intake"] + cpu["dds"]) / max(1, received),
            # what taking in the camera costs, as a share of one core, at the camera's rate
            "intake_core": (cpu["main"] + cpu["intake"] + cpu["dds"]) / max(1, received) * args.camera_hz}


def camera_rate(log: str) -> float | None:
    """Return the frames per second camera_sim achieved, from its log's first and last lines' stamps."""
    start = re.search(r"\[(\d+\.\d+)\] \[camera_sim\]: publishing", log)
    done = re.search(r"\[(\d+\.\d+)\] \[camera_sim\]: done: (\d+) frames", log)
    if not (start and done):
        return None
    return int(done.group(2)) / max(1e-6, float(done.group(1)) - float(start.group(1)))


def run_callback(args) -> dict:
    """CPU per frame of on_image + on_label, called directly (no DDS, no executor)."""
    import numpy as np
    import rclpy
    import yaml
    from builtin_interfaces.msg import Time

    from hiertrain_ros import conversions
    from hiertrain_ros.edge_node import EdgeNode
    from hiertrain_ros.runner import default_params_file

    params = node_overrides(bench_config(args), 1.1e6)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"edge_node": {"ros__parameters": {**params["*"], **params["edge_node"]}}}, f)
    rclpy.init(domain_id=args.domain, args=["intake_bench", "--ros-args", "--params-file",
                                            str(default_params_file()), "--params-file", f.name])
    node = EdgeNode()  # the default context: the node class takes no other
    os.unlink(f.name)
    node._stop.set()  # the worker threads end: this thread alone, the publishers still active
    for thread in node._threads:
        thread.join(5.0)
    rng = np.random.default_rng(0)
    n = args.callback_frames
    messages = []
    for i in range(n):
        stamp = Time(sec=1000 + i // 1000, nanosec=(i % 1000) * 1_000_000)
        frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        messages.append((conversions.image_msg(frame, stamp), conversions.label_msg(stamp, i % 10)))
    start = time.thread_time()
    for image, label in messages:
        node.on_image(image)
        node.on_label(label)
    cpu = time.thread_time() - start
    buffer = node.train_buffer
    draws, start = 0, time.thread_time()
    while buffer.draw(32) is not None:
        draws += 1
    draw_cpu = time.thread_time() - start
    result = {"frames": n, "us_per_frame": 1e6 * cpu / n, "dropped_train_buffer": buffer.dropped,
              "batches_drawn": draws, "us_per_batch_drawn": 1e6 * draw_cpu / max(1, draws)}
    node.destroy_node()
    rclpy.try_shutdown()
    return result


def source() -> str:
    """Which tree the nodes run: PYTHONPATH if set (an export of an earlier commit), else this checkout's commit."""
    if os.environ.get("PYTHONPATH"):
        return f"PYTHONPATH={os.environ['PYTHONPATH']}"
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def plot(report: dict, folder: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["stream"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [r["executor"] for r in rows]
    bottom = [0.0] * len(rows)
    for part, colour in (("main", "tab:blue"), ("intake", "tab:green"), ("dds", "tab:orange")):
        values = [1e6 * r["cpu_s"][part] / max(1, r["frames_received"]) for r in rows]
        ax.bar(names, values, bottom=bottom, color=colour, label=f"{part} thread(s)")
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("edge CPU per frame taken in (µs)")
    ax.set_title(f"edge intake at {report['camera_hz']:g} Hz ({report['source']})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    path = Path(folder) / "intake.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return str(path)


def main(argv=None) -> int:
    from hiertrain_ros.cli.common import print_table, write_json

    parser = argparse.ArgumentParser(prog="intake_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--camera-hz", type=float, default=400.0)
    parser.add_argument("--frames", type=int, default=2048, help="frames the camera publishes per stream run")
    parser.add_argument("--position", type=int, default=3, help="the edge's split point (VGG-16 width 0.25)")
    parser.add_argument("--executors", nargs="+", default=["single", "events"], help="edge executors to stream to")
    parser.add_argument("--callback-frames", type=int, default=4000)
    parser.add_argument("--settle-s", type=float, default=1.0, help="measured on after the camera's last frame")
    parser.add_argument("--domain", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", 0) or 77))
    parser.add_argument("--log-dir", default=None)
    parser.add_argument("--json", required=True)
    parser.add_argument("--plot", default=None, help="write intake.png into this folder")
    args = parser.parse_args(argv)
    log_dir = Path(args.log_dir) if args.log_dir else None
    report = {"source": source(), "camera_hz": args.camera_hz, "frames": args.frames, "position": args.position,
              "loadavg_before": Path("/proc/loadavg").read_text().split()[:3], "cpu": os.cpu_count(),
              "callback": run_callback(args),
              "stream": [run_stream(args, executor, log_dir) for executor in args.executors]}
    print(f"# edge intake, camera {args.camera_hz:g} Hz, {args.frames} frames; nodes from {report['source']}; "
          f"load average before {' '.join(report['loadavg_before'])}")
    cb = report["callback"]
    print(f"callback (on_image + on_label, no DDS): {cb['us_per_frame']:.1f} us CPU per frame; "
          f"drawing a batch of 32: {cb['us_per_batch_drawn']:.0f} us")
    print_table([{"executor": r["executor"], "frames in": f"{r['frames_received']}/{r['frames_published']}",
                  "camera Hz": round(r["camera_hz_achieved"] or 0),
                  "main us/frame": round(r["main_us_per_frame"], 1),
                  "intake us/frame": round(r["intake_us_per_frame"], 1),
                  "dds us/frame": round(1e6 * r["cpu_s"]["dds"] / max(1, r["frames_received"]), 1),
                  "intake core": round(r["intake_core"], 3),
                  "trainer+sender s": round(r["cpu_s"]["other"], 2), "wall s": round(r["wall_s"], 2)}
                 for r in report["stream"]])
    write_json(args.json, report)
    if args.plot:
        print(f"plot: {plot(report, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
