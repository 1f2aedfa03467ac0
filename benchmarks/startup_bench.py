r"""Start-up benchmark (not a test): time to ready and memory of the edge and cloud nodes.

Starts each node alone as a real process (its own ROS domain, localhost discovery) from one or
more source trees, and measures from process start to the node's ``features (...)`` log line
(model built, checkpoint resumed, warmed up: the node is serving), and from /proc at that moment
its memory, VmRSS (resident now) and VmHWM (peak resident so far), and the CPU seconds it used
(user + system: on a loaded machine the wall time mostly measures the other processes).  Trees and repetitions are
interleaved so that a change in the machine's load hits every tree alike; the 1-minute load
average is recorded around each run.

    .venv/bin/python benchmarks/startup_bench.py --tree before=/tmp/h2_before --tree after=. \\
        [--widths 0.25 1.0] [--reps 3] [--json docs/startup_bench.json]

A "before" tree is any checkout of the package, e.g. ``git archive main hiertrain_ros | tar -x -C DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hiertrain_ros.ros_common import large_data_env

READY = re.compile(rb": features \(")


def _proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def start_once(tree: Path, node: str, width: float, domain: int, timeout_s: float) -> dict:
    """One start of ``node`` from ``tree``: seconds to ready and memory then."""
    overlay = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    overlay.write(f"/**:\n  ros__parameters:\n    width: {width}\n")
    overlay.close()
    env = {**os.environ, "PYTHONPATH": str(tree / "hiertrain_ros"), "ROS_DOMAIN_ID": str(domain),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"}
    env.update(large_data_env(env))
    cmd = [sys.executable, "-m", f"hiertrain_ros.{node}", "--ros-args",
           "--params-file", str(tree / "hiertrain_ros" / "config" / "edge_cloud.yaml"), "--params-file", overlay.name]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
    out = b""
    try:
        while not READY.search(out):
            if time.perf_counter() - t0 > timeout_s or proc.poll() is not None:
                raise RuntimeError(f"{node} from {tree} not ready: {out.decode(errors='replace')[-2000:]}")
            if select.select([proc.stdout], [], [], 0.5)[0]:
                out += os.read(proc.stdout.fileno(), 65536)
        ready_s = time.perf_counter() - t0
        rss, peak, cpu = _proc_kib(proc.pid, "VmRSS"), _proc_kib(proc.pid, "VmHWM"), _cpu_s(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(overlay.name)
    return {"ready_s": ready_s, "cpu_s": cpu, "rss_mib": rss / 1024, "peak_rss_mib": peak / 1024, "load_1min": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=DIR",
                        help="a source tree holding hiertrain_ros/ (repeat: before=..., after=...)")
    parser.add_argument("--nodes", nargs="+", default=["edge_node", "cloud_node"])
    parser.add_argument("--widths", nargs="+", type=float, default=[0.25, 1.0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for one node to be ready")
    parser.add_argument("--json", default="docs/startup_bench.json")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    runs: dict = {}
    domain = 150 + os.getpid() % 50
    for rep in range(args.reps):
        for width in args.widths:
            for node in args.nodes:
                for name, tree in trees.items():
                    r = start_once(Path(tree).resolve(), node, width, domain, args.timeout)
                    runs.setdefault((name, node, width), []).append(r)
                    print(f"rep {rep} {name:>8} {node:<10} width {width:g}: {r['ready_s']:.2f} s "
                          f"({r['cpu_s']:.2f} s CPU), "
                          f"RSS {r['rss_mib']:.0f} MiB (peak {r['peak_rss_mib']:.0f}), load {r['load_1min']:.2f}",
                          flush=True)
    rows = []
    for (name, node, width), rs in runs.items():
        rows.append({"tree": name, "node": node, "width": width,
                     "ready_s_median": statistics.median(r["ready_s"] for r in rs),
                     "ready_s_min": min(r["ready_s"] for r in rs), "ready_s_max": max(r["ready_s"] for r in rs),
                     "cpu_s_median": statistics.median(r["cpu_s"] for r in rs),
                     "rss_mib_median": statistics.median(r["rss_mib"] for r in rs),
                     "peak_rss_mib_median": statistics.median(r["peak_rss_mib"] for r in rs),
                     "load_1min_mean": statistics.fmean(r["load_1min"] for r in rs), "runs": rs})
    rows.sort(key=lambda r: (r["node"], r["width"], list(trees).index(r["tree"])))
    print(f"\n{'node':<10} {'width':>5} {'tree':>8} {'ready s (median, min-max)':>26} {'CPU s':>6} "
          f"{'RSS MiB':>8} {'peak MiB':>8} {'load':>5}")
    for r in rows:
        print(f"{r['node']:<10} {r['width']:>5g} {r['tree']:>8} {r['ready_s_median']:>10.2f} "
              f"({r['ready_s_min']:.2f}-{r['ready_s_max']:.2f}){'':>4} {r['cpu_s_median']:>6.2f} "
              f"{r['rss_mib_median']:>8.0f} "
              f"{r['peak_rss_mib_median']:>8.0f} {r['load_1min_mean']:>5.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"trees": trees, "reps": args.reps, "cpus": os.cpu_count(),
                                           "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
