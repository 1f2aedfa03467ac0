"""``hiertrain launch``: start a node graph from the params file, the pip user's ``ros2 launch``."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("launch", help="start the edge/cloud/fallback graph as processes (Ctrl-C stops it)")
    p.add_argument("graph", choices=("edge_cloud", "edge", "cloud"))
    p.add_argument("--params-file", default=None, help="ROS params YAML (default: config/edge_cloud.yaml)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: run until Ctrl-C)")
    p.add_argument("--set", action="append", default=[], metavar="[NODE.]NAME=VALUE",
                   help="override a parameter, e.g. --set split_point=4 or --set camera_sim.rate_hz=30")
    p.add_argument("--camera-topic", default=None, metavar="TOPIC",
                   help="edge graphs: the camera topic of the edge node (and of the simulator, if it runs)")
    p.add_argument("--no-camera-sim", dest="camera_sim", action="store_false",
                   help="edge graphs: no camera simulator (a real camera publishes the frames)")
    p.add_argument("--log-dir", default=None, help="write each node's output to DIR/NODE.log")
    p.add_argument("--json", default=None, help="write the final report to this file")
    p.add_argument("--answers-json", default=None, metavar="FILE",
                   help="write every held-out frame's true class and each path's answer (class, confidence, exit, "
                        "reason, source, latency ms) to this file")
    p.add_argument("--link", default=None, metavar="3g|4g|BITS_PER_S[,RATE@SECONDS...]",
                   help="edge_cloud only, needs root: run the cloud node in a network namespace of its own, "
                        "behind an emulated uplink of this speed (docs/linkbench.md has the set-up); a schedule "
                        "such as 4g@0,3g@60,1e6@120 changes the rate while running")
    p.add_argument("--edge-cpu-quota", type=float, default=None, metavar="F",
                   help="with --link: confine the edge node to F of one core (cgroup-v1 CPU quota), a weak robot "
                        "(docs/linkbench.md)")
    p.add_argument("--outage", action="append", default=[], metavar="START:SECONDS",
                   help="with --link: cut the link START s after the start, for SECONDS (repeatable)")
    p.add_argument("--tcp-port", type=int, default=0, metavar="PORT",
                   help="edge_cloud only: the internet transport. The cloud node is Fast DDS's discovery server "
                        "over TCP on this port, and the robot's nodes dial out to it (config/fastdds_tcp_*.xml; "
                        "docs/security.md)")
    p.add_argument("--tls-dir", default=None, metavar="DIR",
                   help="with --tcp-port: the TLS certificates (scripts/make_tls_certs.sh DIR); default: a throwaway "
                        "set made for this run")
    p.set_defaults(func=run)


# Inside the namespaces DDS must use UDP only: /dev/shm is shared, so shared memory would bypass the link.
# config/fastdds_link.xml does that, with UDP send buffers larger than the link's queue (see there).
LINK_ENV = {"FASTDDS_BUILTIN_TRANSPORTS": None, "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
            "FASTRTPS_DEFAULT_PROFILES_FILE": None}
LINK_PROFILE = "fastdds_link.xml"
TCP_PROFILES = {"cloud": "fastdds_tcp_cloud.xml", "robot": "fastdds_tcp_robot.xml"}
LARGEST_MESSAGE_BYTES = 256 * 1024  # the tbf queue holds two of these (a 64-frame training batch is 131 kB)


def largest_message_bytes(params_file, overrides: dict) -> int:
    """Return the largest message the edge sends over the link: a training batch, or a move's weight sync.

    The emulated link's queue holds two, so that no message is ever dropped at the shaper: over UDP, DDS repairs
    a dropped 64 KiB datagram whole, and repairs that overflow the queue again starve the link.
    """
    from ..core.config import EdgeConfig
    from ..core.repartition import move_bytes_bound
    from ..runner import graph_param

    def param(name, default):
        return graph_param(params_file, overrides, "edge_node", name, default)

    policy = param("split_policy", "fixed")
    if policy == "fixed":
        return LARGEST_MESSAGE_BYTES
    cfg = EdgeConfig(arch=str(param("model", "vgg16")), width=float(param("width", 0.25)),
                     num_classes=int(param("num_classes", 10)), split_point=int(param("split_point", 3)),
                     bits=int(param("bits", 4)), split_policy=policy,
                     split_schedule=str(param("split_schedule", "")),
                     split_candidates=str(param("split_candidates", "")))
    points = {cfg.split_point} | {point for point, _ in cfg.split_arms()}  # the edge node's own choice of arms
    bound = move_bytes_bound(cfg.arch, cfg.width, cfg.num_classes, points)
    return max(LARGEST_MESSAGE_BYTES, bound)


def _tls_dir(given: str | None) -> str:
    """Return the TLS certificates' folder: ``given``, checked, or a throwaway set made now."""
    names = ("ca.crt", "cloud.crt", "cloud.key", "robot.crt", "robot.key", "dh.pem")
    if given:
        missing = [n for n in names if not (Path(given) / n).is_file()]
        if missing:
            raise ValueError(f"--tls-dir {given} lacks {', '.join(missing)} (scripts/make_tls_certs.sh makes them)")
        return str(Path(given).resolve())
    script = Path(__file__).resolve().parents[3] / "scripts" / "make_tls_certs.sh"
    if not script.exists():
        raise ValueError("--tcp-port needs --tls-dir here (scripts/make_tls_certs.sh in the source makes one)")
    out = tempfile.mkdtemp(prefix="hiertrain-tls-")
    subprocess.run(["bash", str(script), out], check=True, capture_output=True)
    return out


def parse_outages(items: list[str]) -> list[tuple[float, float]]:
    """``["20:5", "40:30"]`` -> sorted, non-overlapping (start, seconds) pairs."""
    outages = []
    for item in items:
        try:
            start, seconds = (float(v) for v in item.split(":"))
        except ValueError:
            raise ValueError(f"--outage expects START:SECONDS, got {item!r}") from None
        if not (start >= 0 and seconds > 0):
            raise ValueError(f"--outage needs START >= 0 and SECONDS > 0, got {item!r}")
        outages.append((start, seconds))
    outages.sort()
    for (a, da), (b, _) in zip(outages, outages[1:]):
        if a + da > b:
            raise ValueError(f"--outage windows overlap: {a:g}:{da:g} and the one at {b:g}")
    return outages


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


def graph_nodes(graph: str, camera_topic: str | None = None, camera_sim: bool = True) -> tuple[tuple, dict]:
    """Return the nodes of ``graph`` and their remaps, as edge.launch.py's camera_topic and use_camera_sim."""
    from ..ros_common import TOPICS
    from ..runner import GRAPHS

    nodes = GRAPHS[graph]
    if "edge_node" not in nodes and (camera_topic or not camera_sim):
        raise ValueError(f"--camera-topic and --no-camera-sim need a graph with the edge node, not {graph}")
    nodes = tuple(n for n in nodes if camera_sim or n != "camera_sim")
    remaps = {n: {TOPICS["image"]: camera_topic} for n in ("camera_sim", "edge_node") if n in nodes}
    return nodes, remaps if camera_topic else {}


def run(args) -> int:
    import os
    import sys
    import time

    from ..core.runtime import parse_link_schedule
    from ..linkbench.netns import LinkUnavailable
    from ..ros_common import config_file
    from .common import print_adaptation, print_table, write_json

    tls_dir = None
    try:
        overrides = parse_overrides(args.set)
        nodes, remaps = graph_nodes(args.graph, args.camera_topic, args.camera_sim)
        outages = parse_outages(args.outage)
        if outages and not args.link:
            raise ValueError("--outage needs --link")
        if args.edge_cpu_quota is not None and not args.link:
            raise ValueError("--edge-cpu-quota needs --link")
        for given, option in ((args.link, "--link"), (args.tcp_port, "--tcp-port")):
            if given and args.graph != "edge_cloud":
                raise ValueError(f"{option} needs the edge_cloud graph (an edge side and a cloud side)")
        if args.tcp_port and not 0 < args.tcp_port < 65536:
            raise ValueError(f"--tcp-port must be in 1..65535, got {args.tcp_port}")
        if args.tls_dir and not args.tcp_port:
            raise ValueError("--tls-dir needs --tcp-port")
        tls_dir = _tls_dir(args.tls_dir) if args.tcp_port else None
        schedule = parse_link_schedule(args.link) if args.link else []
        largest = largest_message_bytes(args.params_file, overrides) if args.link else LARGEST_MESSAGE_BYTES
        link = _open_link(schedule, largest, args.edge_cpu_quota) if args.link else None
    except (ValueError, LinkUnavailable) as exc:
        if tls_dir and not args.tls_dir:
            shutil.rmtree(tls_dir, ignore_errors=True)
        print(f"hiertrain launch: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, LinkUnavailable) else 2
    from ..ros_common import StopFlag

    stop = StopFlag()
    try:
        wrap = {}
        if link is not None:
            # This process (the monitor) and the edge-side nodes live in the edge namespace, and
            # every node inherits the DDS settings from this process's environment.
            link.enter("edge")
            for key, value in LINK_ENV.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config_file(LINK_PROFILE))
            wrap = {"cloud_node": link.exec_prefix("cloud")}
            counters0 = link.counters("edge")
        if args.tcp_port:
            # The robot's nodes and this monitor are the discovery server's clients; the cloud node is the server.
            address = link.addr["cloud"] if link is not None else "127.0.0.1"
            for key in ("FASTDDS_BUILTIN_TRANSPORTS", "FASTRTPS_DEFAULT_PROFILES_FILE"):
                os.environ.pop(key, None)
            os.environ.update({"HIERTRAIN_CLOUD_ADDRESS": address, "HIERTRAIN_CLOUD_PORT": str(args.tcp_port),
                               "HIERTRAIN_TLS_DIR": tls_dir,
                               "FASTDDS_DEFAULT_PROFILES_FILE": str(config_file(TCP_PROFILES["robot"])),
                               "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT"})  # the profile decides
            wrap["cloud_node"] = [*wrap.get("cloud_node", ()), "env",
                                  f"FASTDDS_DEFAULT_PROFILES_FILE={config_file(TCP_PROFILES['cloud'])}"]
        from ..runner import Graph, MonitorThread

        graph = Graph(nodes, args.params_file, overrides, log_dir=args.log_dir, wrap=wrap, remaps=remaps)
        monitor = MonitorThread()
        print(f"hiertrain launch {args.graph}: {', '.join(graph.nodes)} with {graph.params_file}"
              + (f", cloud behind a {link.rate_bps:.4g} bit/s link" if link else "")
              + (f", over TCP+TLS to the discovery server at {os.environ['HIERTRAIN_CLOUD_ADDRESS']}:{args.tcp_port}"
                 f" (certificates in {tls_dir})" if args.tcp_port else ""), flush=True)
        graph.start()
        if link is not None and "edge_node" in graph.procs:
            link.confine_edge(graph.procs["edge_node"].pid)  # no-op without a quota
        start = time.monotonic()
        cuts = OutageSchedule(link, outages, start)
        rates = RateSchedule(link, schedule, start, largest)
        try:
            while not stop.is_set() and (not args.duration or time.monotonic() - start < args.duration):
                time.sleep(0.05)
                cuts.tick(time.monotonic())
                rates.tick(time.monotonic())
                dead = [n for n, ok in graph.alive().items() if not ok]
                if dead:
                    print(f"node(s) exited: {', '.join(dead)}", flush=True)
                    break
        finally:
            cuts.finish(time.monotonic())
            codes = graph.stop()
            report = monitor.node.report()
            if args.answers_json:
                write_json(args.answers_json, monitor.node.answers())
            monitor.close()
        report["exit_codes"] = codes
        report["duration_s"] = time.monotonic() - start
        report["started_after_monitor_s"] = start - monitor.node.started  # the schedule's 0 on the report's clock
        if link is not None:
            report["link"] = _link_report(link, counters0, report["duration_s"], cuts.done, rates.applied)
    finally:
        if link is not None:
            link.close()
        if tls_dir and not args.tls_dir:
            shutil.rmtree(tls_dir, ignore_errors=True)  # the throwaway certificates and keys
    _print_report(report, print_table)
    print_adaptation(report["adaptation"])
    write_json(args.json, report)
    return 0 if all(c in (0, -2, 130) for c in codes.values()) else 1


class OutageSchedule:
    """Takes the link down and up again at the planned times.

    ``done`` holds each cut as (down, up) in seconds after ``t0``.
    """

    def __init__(self, link, windows: list[tuple[float, float]], t0: float):
        self.link, self.t0 = link, t0
        self.pending = [(t0 + a, t0 + a + d) for a, d in windows]
        self.down_since: float | None = None
        self.done: list[tuple[float, float]] = []

    def tick(self, now: float) -> None:
        if self.down_since is None and self.pending and now >= self.pending[0][0]:
            self.link.set_link(False)
            self.down_since = now
        elif self.down_since is not None and now >= self.pending[0][1]:
            self.finish(now)

    def finish(self, now: float) -> None:
        """Restore a cut link (also when the run stops during an outage)."""
        if self.down_since is not None:
            self.link.set_link(True)
            self.done.append((self.down_since - self.t0, now - self.t0))
            self.down_since = None
            self.pending.pop(0)


class RateSchedule:
    """Changes the link's rate at the planned times; ``applied`` holds (seconds after ``t0``, bits/s)."""

    def __init__(self, link, schedule: list[tuple[float, float]], t0: float, largest: int = LARGEST_MESSAGE_BYTES):
        self.link, self.t0, self.largest = link, t0, largest
        self.pending = [(t0 + start, rate) for start, rate in schedule[1:]]
        self.applied = [(0.0, schedule[0][1])] if schedule else []

    def tick(self, now: float) -> None:
        from ..linkbench.netns import tbf_limit_bytes

        while self.pending and now >= self.pending[0][0]:
            _, rate = self.pending.pop(0)
            self.link.set_rate(rate, tbf_limit_bytes(rate, self.largest, 1))  # the queue follows the rate
            self.applied.append((now - self.t0, rate))


def _open_link(schedule: list[tuple[float, float]], largest: int, edge_cpu_quota: float | None = None):
    from ..linkbench.netns import LinkEmulator, tbf_limit_bytes

    rate = schedule[0][1]
    return LinkEmulator(rate, queue_bytes=tbf_limit_bytes(rate, largest, 1),
                        edge_cpu_quota=edge_cpu_quota).open()


def mean_rate_while_up(applied: list, outages: list, duration_s: float) -> float:
    """Time-weighted rate (bits/s) of the schedule ``applied``, over the time the link was up."""
    bits = up = 0.0
    ends = [t for t, _ in applied[1:]] + [duration_s]
    for (start, rate), end in zip(applied, ends):
        seconds = end - start - sum(max(0.0, min(end, b) - max(start, a)) for a, b in outages)
        bits, up = bits + rate * seconds, up + seconds
    return bits / up if up > 0 else applied[-1][1]


def _link_report(link, counters0: dict, duration_s: float, outages: list, applied: list) -> dict:
    sent = link.counters("edge")["tx_bytes"] - counters0["tx_bytes"]
    up_s = duration_s - sum(b - a for a, b in outages)
    rate = mean_rate_while_up(applied, outages, duration_s)
    return {"rate_bps": rate, "rate_schedule": applied, "uplink_bytes": sent, "uplink_bps_while_up": sent * 8 / up_s,
            "utilisation_while_up": sent * 8 / up_s / rate, "outages_s": outages, "qdisc": link.qdisc_stats()}


def _print_report(report: dict, print_table) -> None:
    print("\nHeld-out accuracy (frames never trained on):")
    print_table([{"path": k, "accuracy": report[f"{k}_accuracy"], "frames": report[f"{k}_evaluated"]}
                 for k in ("edge", "cloud", "output")])
    print("\nMessage counts:")
    print_table([{"topic": k, "count": v} for k, v in sorted(report["counts"].items())])
    for key in ("cloud", "edge"):
        if f"{key}_loss_first" in report:
            print(f"{key} loss: {report[f'{key}_loss_first']:.3f} -> {report[f'{key}_loss_last']:.3f}")
    print(f"output served by cloud: {report['output_from_cloud']}, by edge: {report['output_from_edge']}; "
          f"longest silence of the output topic: {report['max_output_gap_s']:.3f} s")
    if "link" in report:
        link = report["link"]
        print(f"uplink: {link['uplink_bps_while_up'] / 1e3:.1f} kbit/s while up "
              f"({link['utilisation_while_up']:.2f} of {link['rate_bps'] / 1e3:.0f} kbit/s), "
              f"outages at {[(round(a, 1), round(b, 1)) for a, b in link['outages_s']]} s")
