"""Start the node graph as processes from one params file, and watch the output topics.

For pip users, who have no ros2 launch wheel; the monitor reports accuracy and counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from hiertrain_interfaces.msg import (AdaptationMetrics, FeatureBatch, Heartbeat, Label, LinkStatus, Prediction,
                                      TrainingMetrics)
from rclpy.node import Node

from .core.fallback import NOT_OFFLOADED
from .core.metrics import summarize
from .ros_common import (LATCHED_QOS, RECORD_QOS, RELIABLE_QOS, TOPICS, config_file, heartbeat_qos, large_data_env,
                         Spinner, stamp_ns)

GRAPHS = {
    "edge_cloud": ("camera_sim", "edge_node", "cloud_node", "fallback_node"),
    "edge": ("camera_sim", "edge_node", "fallback_node"),
    "cloud": ("cloud_node",),
}


def default_params_file() -> Path:
    try:
        return config_file("edge_cloud.yaml")
    except FileNotFoundError:
        raise FileNotFoundError("config/edge_cloud.yaml not found; pass --params-file") from None


def longest_gap(times) -> tuple[float, int]:
    """Return the longest silence between consecutive sorted ``times``: (seconds, index of the time before it).

    (0.0, 0) for fewer than two times.
    """
    return max(((b - a, i) for i, (a, b) in enumerate(zip(times, times[1:]))), default=(0.0, 0))


def graph_param(params_file: Path | None, overrides: dict, node: str, name: str, default=None):
    """Return the value ``node`` gets for parameter ``name``: an override, else the params file's.

    ``overrides`` is ``{node or "*": {name: value}}``; ``params_file`` None is the package's default file.
    """
    for scope in (node, "*"):
        if name in overrides.get(scope, {}):
            return overrides[scope][name]
    sections = yaml.safe_load(Path(params_file or default_params_file()).read_text()) or {}
    for scope in (node, "/**"):
        values = (sections.get(scope) or {}).get("ros__parameters") or {}
        if name in values:
            return values[name]
    return default


class Graph:
    """The nodes of one graph as child processes sharing a params file."""

    def __init__(self, nodes, params_file: Path | None = None, overrides: dict | None = None,
                 env: dict | None = None, log_dir: Path | None = None, wrap: dict | None = None,
                 remaps: dict | None = None):
        """``env`` adds to this process's environment.

        ``wrap`` maps a node to the command that runs it (e.g. ``ip netns exec NS``); ``remaps`` maps a node to its
        {topic: new name}.
        """
        self.nodes = tuple(nodes)
        self.params_file = Path(params_file) if params_file else default_params_file()
        self.overrides = overrides or {}
        self.remaps = remaps or {}
        env = {**os.environ, **(env or {})}
        self.env = {**env, **large_data_env(env)}
        self.wrap = wrap or {}
        self.log_dir = Path(log_dir) if log_dir else None
        self.procs: dict[str, subprocess.Popen] = {}
        self._overlays = tempfile.TemporaryDirectory(prefix="hiertrain-")

    def param(self, node: str, name: str, default=None):
        """Return the value ``node`` gets for parameter ``name``: an override, else the params file's."""
        return graph_param(self.params_file, self.overrides, node, name, default)

    def command(self, name: str) -> list[str]:
        cmd = [sys.executable, "-m", f"hiertrain_ros.{name}", "--ros-args", "--params-file", str(self.params_file)]
        overrides = {**self.overrides.get("*", {}), **self.overrides.get(name, {})}
        if overrides:
            # A node-specific file given later wins over both the node's and the /** entries
            # of the main file (a plain -p would lose to the node's own entries).
            overlay = Path(self._overlays.name) / f"{name}.yaml"
            overlay.write_text(yaml.safe_dump({name: {"ros__parameters": overrides}}))
            cmd += ["--params-file", str(overlay)]
        for topic, renamed in self.remaps.get(name, {}).items():
            cmd += ["-r", f"{topic}:={renamed}"]
        return list(self.wrap.get(name, ())) + cmd + ["-r", f"__node:={name}"]

    def start(self, name: str | None = None) -> None:
        for node in (name,) if name else self.nodes:
            if not self.log_dir:
                self.procs[node] = subprocess.Popen(self.command(node), env=self.env)
                continue
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_dir / f"{node}.log", "ab") as out:  # the child keeps its own handle
                self.procs[node] = subprocess.Popen(self.command(node), env=self.env, stdout=out,
                                                    stderr=subprocess.STDOUT)

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=15)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process (and its DDS participant) goes silent without dying."""
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.procs.items()}

    def stop(self, timeout: float = 15.0) -> dict[str, int]:
        return stop_processes(self.procs, timeout)


def stop_processes(procs: dict, timeout: float) -> dict:
    """SIGINT to every process of ``procs``, then their exit codes.

    One still running after ``timeout`` s (all together) is killed.  Empties ``procs``.
    """
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    codes = {}
    deadline = time.monotonic() + timeout
    for key, proc in procs.items():
        try:
            codes[key] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[key] = proc.wait()
    procs.clear()
    return codes


QUEUE_KEYS = ("infer_queue", "buffer_fill", "outbox", "outbox_spilled", "unacked", "train_queue")


class Monitor(Node):
    """Joins held-out truth with predictions; counts every topic of the graph."""

    def __init__(self, name: str = "hiertrain_monitor", metrics_window: int = 50, **node_kwargs):
        super().__init__(name, **node_kwargs)
        self.truth: dict[int, int] = {}
        self.segments: dict[int, int] = {}  # held-out frame stamp -> its scenario segment
        self.labels: dict[int, tuple[int, int]] = {}  # labelled frame stamp -> (class, segment)
        self.metrics_window = metrics_window  # labelled (held-out) frames per point of the adaptation metrics
        # stamp -> (class, source, latency, confidence, reason, exit_index) per path
        self.predictions: dict[str, dict[int, tuple]] = {"edge": {}, "cloud": {}, "output": {}}
        # Timing lists hold when the *sender* published (DDS source timestamp), on this
        # process's monotonic clock: what a node did, not when this monitor got round to it.
        self._wall_minus_mono = time.time() - time.monotonic()
        self.started = time.monotonic()
        self.output_times: list[tuple[float, int]] = []  # (publish time, source)
        self.edge_times: list[float] = []  # publish times of the edge's answers
        self.answered_at: dict[str, dict[int, float]] = {"edge": {}, "output": {}}  # frame stamp -> publish time
        # Answer latency per path: frame stamp -> the answer's source timestamp minus the frame's stamp (ns), both
        # on the wall clock the nodes share (network namespaces keep it), so no node's own report of its delay.
        self.latency_ns: dict[str, dict[int, int]] = {"edge": {}, "cloud": {}, "output": {}}
        self.counts: Counter = Counter()
        self.feature_bytes = 0
        self.infer_bytes = 0  # of feature_bytes, the inference batches' (what offloading answers costs the link)
        self.cloud_losses: list[float] = []
        self.edge_losses: list[float] = []
        self.trained_seqs: dict[str, list[int]] = {"edge": [], "cloud": []}  # feature batches, in order
        self.edge_batch_times: dict[int, float] = {}  # when the edge trained (and produced) each batch
        self.cloud_batch_times: dict[int, float] = {}  # when the cloud trained each batch (the last time)
        self.batch_split: dict[int, int] = {}  # training batch -> the split it was made at (its features)
        self.cloud_batch_accuracy: dict[int, float] = {}  # training accuracy of the cloud's exit on each batch
        self.link: LinkStatus | None = None
        self.live_adaptation: AdaptationMetrics | None = None  # the fallback's latest
        self.status: dict[str, dict[str, str]] = {}  # latest /diagnostics values per node
        self.status_times: dict[str, float] = {}  # when each node published its latest status
        self.peaks: Counter = Counter()  # high-water marks of the nodes' queues
        self.heartbeat_times: list[float] = []
        self.cloud_acked: dict[int, float] = {}  # batch -> when the cloud first acknowledged it (= trained)
        self.link_changes: list[tuple[float, bool]] = []  # (publish time, cloud alive)
        self._lock = threading.Lock()
        self.create_subscription(Label, TOPICS["truth"], self._on_truth, RECORD_QOS)
        self.create_subscription(Label, TOPICS["labels"], self._on_label, RECORD_QOS)
        for key, topic in (("edge", "edge_prediction"), ("cloud", "cloud_prediction"), ("output", "prediction")):
            self.create_subscription(Prediction, TOPICS[topic], lambda m, info, k=key: self._on_prediction(k, m, info),
                                     RECORD_QOS)
        self.create_subscription(FeatureBatch, TOPICS["features"], self._on_features, RELIABLE_QOS)
        for role in ("cloud", "edge"):
            self.create_subscription(TrainingMetrics, TOPICS[f"{role}_metrics"],
                                     lambda m, info, r=role: self._on_metrics(r, m, info), RECORD_QOS)
        self.create_subscription(LinkStatus, TOPICS["link_status"], self._on_link, LATCHED_QOS)
        self.create_subscription(AdaptationMetrics, TOPICS["adaptation"],
                                 lambda m: setattr(self, "live_adaptation", m), RECORD_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.create_subscription(Heartbeat, TOPICS["heartbeat"], self._on_heartbeat, heartbeat_qos(1.0))

    def _sent(self, info) -> float:
        """Return the message's source timestamp on this process's monotonic clock."""
        return info["source_timestamp"] * 1e-9 - self._wall_minus_mono

    def _on_truth(self, msg: Label) -> None:
        with self._lock:
            self.truth[stamp_ns(msg.header.stamp)] = msg.class_id
            self.segments[stamp_ns(msg.header.stamp)] = msg.segment
            self.counts["held_out_frames"] += 1

    def _on_label(self, msg: Label) -> None:
        with self._lock:
            self.labels[stamp_ns(msg.header.stamp)] = (msg.class_id, msg.segment)
            self.counts["labels"] += 1

    def _on_prediction(self, key: str, msg: Prediction, info) -> None:
        with self._lock:
            self.predictions[key][stamp_ns(msg.header.stamp)] = (msg.class_id, msg.source, msg.latency,
                                                                    msg.confidence, msg.reason, msg.exit_index)
            self.counts[f"{key}_predictions"] += 1
            if key == "output":
                self.output_times.append((self._sent(info), msg.source))
            elif key == "edge":
                self.edge_times.append(self._sent(info))
            if key in self.answered_at:
                self.answered_at[key][stamp_ns(msg.header.stamp)] = self._sent(info)
            self.latency_ns[key][stamp_ns(msg.header.stamp)] = info["source_timestamp"] - stamp_ns(msg.header.stamp)

    def _on_features(self, msg: FeatureBatch) -> None:
        with self._lock:
            self.counts["feature_batches"] += 1
            self.counts["infer_batches" if msg.purpose == FeatureBatch.PURPOSE_INFER else "train_batches"] += 1
            self.feature_bytes += len(msg.data)
            if msg.purpose == FeatureBatch.PURPOSE_INFER:
                self.infer_bytes += len(msg.data)
            if msg.purpose == FeatureBatch.PURPOSE_TRAIN:
                self.batch_split[msg.seq] = msg.split_point

    def _on_metrics(self, role: str, msg: TrainingMetrics, info) -> None:
        with self._lock:
            (self.cloud_losses if role == "cloud" else self.edge_losses).append(float(msg.loss))
            self.trained_seqs[role].append(msg.seq)
            (self.edge_batch_times if role == "edge" else self.cloud_batch_times)[msg.seq] = self._sent(info)
            if role == "cloud":
                self.cloud_batch_accuracy[msg.seq] = float(msg.accuracy)
            self.counts[f"{role}_metrics"] += 1

    def _on_heartbeat(self, msg: Heartbeat, info) -> None:
        with self._lock:
            sent = self._sent(info)
            self.heartbeat_times.append(sent)
            for seq in msg.acked:
                self.cloud_acked.setdefault(seq, sent)

    def trained_by_cloud(self) -> set:
        """Batches the cloud trained.

        From its metrics, and from its acknowledgements, which its heartbeat repeats (a metrics sample published just
        before an outage can be lost to a reader that the lease unmatched; the acknowledgement comes again).
        """
        with self._lock:
            return set(self.trained_seqs["cloud"]) | set(self.cloud_acked)

    def batch_report(self) -> dict:
        """Training batches produced by the edge and trained by the cloud.

        The age of any the cloud has not trained yet (normally the last few, still on their way).
        """
        trained = self.trained_by_cloud()
        now = time.monotonic()
        with self._lock:
            twice = sum(1 for n in Counter(self.trained_seqs["cloud"]).values() if n > 1)
            untrained = sorted(round(now - t, 3) for seq, t in self.edge_batch_times.items() if seq not in trained)
        return {"edge": len(self.edge_batch_times), "cloud": len(trained), "cloud_trained_twice": twice,
                "not_trained_by_cloud_age_s": untrained, "at_edge_status": self._batches_at_status("edge_node")}

    def _batches_at_status(self, node: str) -> dict | None:
        """Batches the edge had made and the cloud had trained when ``node`` published its latest status.

        The edge's counts (outbox, unacknowledged, dropped) are from that status, up to a second before the end of a
        run; these counts are from the same moment (each batch's time is when its node published it), so the two can
        be set against each other.
        """
        with self._lock:
            if node not in self.status_times:
                return None
            t = self.status_times[node]
            # When the cloud's acknowledgement was sent (the edge's unacknowledged count goes by those), else when
            # it trained the batch.
            trained = {**self.cloud_batch_times, **self.cloud_acked}
            return {"made": sum(1 for u in self.edge_batch_times.values() if u <= t),
                    "trained": sum(1 for seq, u in trained.items() if u <= t and seq in self.edge_batch_times)}

    def batch_timeline(self) -> list:
        """Per training batch the edge made: [seq, edge time, cloud time or None, split, cloud accuracy or None].

        Times in seconds after this monitor started; the cloud's is when it trained the batch (the last time).
        """
        with self._lock:
            return [[seq, round(t - self.started, 4),
                     round(self.cloud_batch_times[seq] - self.started, 4) if seq in self.cloud_batch_times else None,
                     self.batch_split.get(seq), self.cloud_batch_accuracy.get(seq)]
                    for seq, t in sorted(self.edge_batch_times.items())]

    def _on_diagnostics(self, msg: DiagnosticArray, info) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            self.status[status.hardware_id] = values
            self.status_times[status.hardware_id] = self._sent(info)
            for key in QUEUE_KEYS:
                if key in values:
                    name = f"{status.hardware_id}.{key}"
                    self.peaks[name] = max(self.peaks[name], int(values[key]))

    def _on_link(self, msg: LinkStatus, info) -> None:
        if self.link is None or self.link.cloud_alive != msg.cloud_alive:
            self.link_changes.append((self._sent(info), msg.cloud_alive))
        self.link = msg

    def accuracy(self, key: str) -> tuple[float | None, int]:
        with self._lock:
            hits = [(self.predictions[key][s][0] == y) for s, y in self.truth.items() if s in self.predictions[key]]
        return (sum(hits) / len(hits) if hits else None), len(hits)

    def answer_latency(self) -> dict:
        """Answer latency (ms, frame stamp to the answer's publication) per path, p50/p99/max.

        ``output_kept`` and ``output_offloaded`` split the output's by the edge's decision on the frame (a frame the
        edge kept has ``reason`` NOT_OFFLOADED on the edge's topic: progressive answering, issue 12).
        """
        with self._lock:
            latency = {k: dict(v) for k, v in self.latency_ns.items()}
            kept = {s for s, p in self.predictions["edge"].items() if p[4] == NOT_OFFLOADED}
            edge_seen = set(self.predictions["edge"])
        latency["output_kept"] = {s: v for s, v in latency["output"].items() if s in kept}
        latency["output_offloaded"] = {s: v for s, v in latency["output"].items() if s in edge_seen - kept}
        out = {}
        for key, values in latency.items():
            ms = np.asarray(sorted(values.values()), dtype=float) / 1e6
            out[key] = ({"n": len(ms), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                         "max": float(ms[-1])} if len(ms) else {"n": 0})
        return out

    def answers(self) -> list[dict]:
        """Per held-out frame, in stamp order: its stamp, true class and each path's answer.

        An answer is [class, confidence, exit_index, reason, source, latency ms] (see ``latency_ns``), or None.
        With a camera that plays a fixed number of frames, the i-th entry is the i-th held-out frame of the stream
        in every run, so runs can be compared frame by frame (benchmarks/progressive_link_bench.py).
        """
        with self._lock:
            truth = sorted(self.truth.items())
            paths = {k: dict(v) for k, v in self.predictions.items()}
            latency = {k: dict(v) for k, v in self.latency_ns.items()}

        def answer(key, stamp):
            p = paths[key].get(stamp)
            return None if p is None else [p[0], round(float(p[3]), 4), p[5], p[4], p[1],
                                           round(latency[key][stamp] / 1e6, 3)]
        return [{"stamp_ns": s, "truth": y, **{k: answer(k, s) for k in ("edge", "cloud", "output")}}
                for s, y in truth]

    def adaptation(self) -> dict:
        """Prequential (labels), held-out (truth), forgetting, recovery: core.metrics.summarize."""
        with self._lock:
            labels = dict(self.labels)
            truth = {s: (c, self.segments.get(s, 0)) for s, c in self.truth.items()}
            answers = {k: dict(v) for k, v in self.predictions.items()}
        return summarize(labels, answers, truth, self.metrics_window)

    def report(self) -> dict:
        result = {"counts": dict(self.counts), "feature_bytes": self.feature_bytes, "infer_bytes": self.infer_bytes,
                  "adaptation": self.adaptation(), "answer_latency_ms": self.answer_latency()}
        for key in ("edge", "cloud", "output"):
            acc, n = self.accuracy(key)
            result[f"{key}_accuracy"] = acc
            result[f"{key}_evaluated"] = n
        for key, losses in (("cloud", self.cloud_losses), ("edge", self.edge_losses)):
            if losses:
                k = max(1, len(losses) // 10)
                result[f"{key}_loss_first"] = sum(losses[:k]) / k
                result[f"{key}_loss_last"] = sum(losses[-k:]) / k
        with self._lock:
            served = Counter(source for _, source in self.output_times)
            times = sorted(t for t, _ in self.output_times)
            edge_times = sorted(self.edge_times)
        # Silences longer than the fallback's 0.3 s promise: (seconds after this monitor started,
        # length), the first 50; the edge's own answers tell a stalled edge from a stalled fallback.
        for key, t in (("output", times), ("edge", edge_times)):
            gaps = [(a, b - a) for a, b in zip(t, t[1:])]
            result[f"max_{key}_gap_s"] = max((g for _, g in gaps), default=0.0)
            result[f"{key}_gaps_over_0.3s"] = [(round(a - self.started, 3), round(g, 3))
                                               for a, g in gaps if g > 0.3][:50]
        result["output_from_edge"] = served.get(Prediction.SOURCE_EDGE, 0)
        result["output_from_cloud"] = served.get(Prediction.SOURCE_CLOUD, 0)
        result["batches"] = self.batch_report()
        result["batch_timeline"] = self.batch_timeline()
        result["node_status"] = dict(self.status)
        result["queue_peaks"] = dict(self.peaks)
        return result


class MonitorThread(Spinner):
    """A Monitor spun by the harness in this process, which owns rclpy's default context for it."""

    def __init__(self):
        if not rclpy.ok():
            rclpy.init()
        super().__init__(Monitor())

    def close(self) -> None:
        super().close()
        rclpy.try_shutdown()
