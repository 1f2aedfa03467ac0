"""One side of one baseline mode of the link bench, run as its own process inside a namespace.

``python -m linkbench.worker ROLE CONFIG_JSON RESULT_JSON`` (with ``benchmarks/`` on the
path) and ROLE ``edge``, ``cloud`` or ``measure``.  The hierarchical mode is not here: it
runs the package's own nodes (``nodes.py``).  Training is the core trainers'
(FullCloudTrainer, SplitEdgeTrainer/SplitCloudTrainer); this module only moves their
payloads over real rclpy publishers/subscribers and times them.

Flow control: the cloud acknowledges each batch the moment its subscription
receives it (not after training), and the edge keeps at most ``window`` batches
un-acknowledged on the wire.  That keeps the shaped link busy while bounding the
shaper's queue (and so the delay of DDS's own discovery and heartbeat traffic).
The full-cloud edge hands payloads to a sender thread and never waits for the
cloud; split learning waits for each batch's gradient.  All times are
``time.monotonic()``, one clock for every process on the host.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hiertrain_ros.core.archs import SplitSpec

MODES = ("fullcloud-raw", "fullcloud-jpeg", "split", "edge-only")  # the baselines
FEATURES_TOPIC = "linkbench/batches"
ACKS_TOPIC = "linkbench/acks"
GRADIENTS_TOPIC = "linkbench/gradients"


@dataclass(frozen=True, kw_only=True)
class WorkerConfig(SplitSpec):
    mode: str
    samples: int = 256
    batch_size: int = 32
    seed: int = 0
    window: int = 2            # un-acknowledged batches allowed on the wire
    jpeg_quality: int = 90
    coding: str = "zstd"       # split: the edge's lossless coding of the feature codes (core.coding)
    threads: int = 1           # torch intra-op threads of this process
    data: str = "fashion-mnist"
    ifname: str = ""           # this side's veth (edge: tx counters are read from it)
    ready_timeout_s: float = 60.0
    done_timeout_s: float = 600.0

    @property
    def n_batches(self) -> int:
        return -(-self.samples // self.batch_size)


def _spec(cfg: WorkerConfig) -> SplitSpec:
    return cfg.model_spec()


def _optim(cfg: WorkerConfig):
    from hiertrain_ros.core.training import paper_optim

    return paper_optim(cfg.arch, cfg.n_batches)


def _counters(ifname: str) -> dict[str, int]:
    if not ifname:
        return {}
    base = Path("/sys/class/net") / ifname / "statistics"
    return {n: int((base / n).read_text()) for n in ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")}


def _qos(cfg: WorkerConfig):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    # Deep enough that no batch of the run is ever overwritten before it is acknowledged.
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=cfg.n_batches + 8,
                      reliability=ReliabilityPolicy.RELIABLE)


def _start_node(name: str):
    """Return a node spun by the package's harness on a background thread; the main thread trains."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from hiertrain_ros.ros_common import Spinner

    # No rclpy signal handlers: SIGTERM/SIGINT from the bench must end the worker at once,
    # even while it waits on a queue.
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    return Spinner(rclpy.create_node(name))


def _stop_node(spinner) -> None:
    import rclpy

    spinner.close()
    rclpy.try_shutdown()


_RESULT_PATH: Path | None = None


def _emit(result: dict) -> dict:
    """Write the result before any ROS teardown, so a crash while closing cannot lose a measurement."""
    result = {**result, "pid": os.getpid(), "complete": True}
    if _RESULT_PATH is not None:
        _RESULT_PATH.write_text(json.dumps(result))
    return result


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


# ---- edge ----------------------------------------------------------------------------------------

class WindowedSender:
    """Publishes batches in order, at most ``window`` un-acknowledged at a time, from its own thread."""

    def __init__(self, node, cfg: WorkerConfig):
        from hiertrain_interfaces.msg import FeatureBatch
        from std_msgs.msg import UInt64

        self.pub = node.create_publisher(FeatureBatch, FEATURES_TOPIC, _qos(cfg))
        self.ack_sub = node.create_subscription(UInt64, ACKS_TOPIC, self._on_ack, _qos(cfg))
        self.window = max(1, cfg.window)
        self.cond = threading.Condition()
        self.pending: list = []
        self.sent = 0
        self.acked: set[int] = set()
        self.cloud_ready = False
        self.send_times: dict[int, float] = {}
        self.ack_times: dict[int, float] = {}
        self.payload_bytes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_ack(self, msg) -> None:
        with self.cond:
            if msg.data == 0:
                self.cloud_ready = True
            elif msg.data not in self.acked:
                self.acked.add(msg.data)
                self.ack_times[msg.data] = time.monotonic()
            self.cond.notify_all()

    def ready(self) -> bool:
        return self.cloud_ready and self.pub.get_subscription_count() > 0

    def submit(self, seq: int, msg) -> None:
        with self.cond:
            self.pending.append((seq, msg))
            self.cond.notify_all()

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.pending and self.sent - len(self.acked) < self.window)
                seq, msg = self.pending.pop(0)
                self.sent += 1
            self.send_times[seq] = time.monotonic()
            self.payload_bytes += len(msg.data)
            self.pub.publish(msg)

    def wait_acked(self, count: int, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.acked) >= count, timeout):
                raise TimeoutError(f"only {len(self.acked)} of {count} batches acknowledged after {timeout:g} s")


def _frame_batches(cfg: WorkerConfig):
    """(uint8 frames, labels) per batch, the same samples and order in every mode."""
    import numpy as np

    from hiertrain_ros.core.data import load_dataset

    frames = load_dataset(cfg.data).subset(cfg.samples)
    if len(frames) < cfg.samples:
        raise ValueError(f"{cfg.data} has only {len(frames)} samples, asked for {cfg.samples}")
    order = np.random.default_rng(cfg.seed).permutation(len(frames))
    return [(frames.images[order[s:s + cfg.batch_size]], frames.labels[order[s:s + cfg.batch_size]])
            for s in range(0, len(order), cfg.batch_size)], frames.num_classes


def run_edge(cfg: WorkerConfig) -> dict:
    import numpy as np
    import torch

    from hiertrain_ros.core.data import frames_to_tensor

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    raw, _ = _frame_batches(cfg)
    tensors = [(frames_to_tensor(f), torch.from_numpy(np.asarray(y, dtype=np.int64))) for f, y in raw]
    spec, optim = _spec(cfg), _optim(cfg)
    warm = (torch.randn(cfg.batch_size, 3, 32, 32), torch.randint(0, cfg.num_classes, (cfg.batch_size,)))
    compute: list[float] = []
    result: dict = {"role": "edge", "mode": cfg.mode}

    if cfg.mode == "edge-only":
        from hiertrain_ros.core.models import build_model
        from hiertrain_ros.core.training import FullCloudTrainer

        trainer = FullCloudTrainer(build_model(cfg.arch, num_classes=cfg.num_classes, width=cfg.width), optim,
                                   f"{cfg.arch}-w{cfg.width:g}-edge-only")
        trainer.train_step(*warm)
        t0 = time.monotonic()
        losses = []
        for images, labels in tensors:
            s = time.monotonic()
            losses.append(trainer.train_step(images, labels).loss)
            compute.append(time.monotonic() - s)
        t1 = time.monotonic()
        return _emit({**result, "t_start": t0, "t_end": t1, "compute_s": compute, "losses": losses})

    from hiertrain_ros import conversions
    from builtin_interfaces.msg import Time

    spinner = _start_node("linkbench_edge")
    node = spinner.node
    try:
        if cfg.mode == "split":
            from hiertrain_interfaces.msg import FeatureBatch
            from std_msgs.msg import UInt64

            from hiertrain_ros.core.models import build_split
            from hiertrain_ros.core.splitlearning import SplitEdgeTrainer

            edge_model, _ = build_split(spec, seed=cfg.seed)
            trainer = SplitEdgeTrainer(edge_model, spec, optim, coding=cfg.coding)
            pub = node.create_publisher(FeatureBatch, FEATURES_TOPIC, _qos(cfg))
            grads: "queue.Queue" = queue.Queue()
            ready = threading.Event()
            node.create_subscription(FeatureBatch, GRADIENTS_TOPIC,
                                     lambda m: grads.put((time.monotonic(), m)), _qos(cfg))
            node.create_subscription(UInt64, ACKS_TOPIC, lambda m: ready.set() if m.data == 0 else None, _qos(cfg))
            feats, _ = trainer.forward(*warm)
            feats.sum().backward()  # warm-up of the backward kernels; its gradients are discarded
            trainer.optimizer.zero_grad(set_to_none=True)
            _wait(lambda: ready.is_set() and pub.get_subscription_count() > 0, cfg.ready_timeout_s, "the cloud")
            counters0, t0 = _counters(cfg.ifname), time.monotonic()
            fwd, bwd, wait, payload_bytes = [], [], [], 0
            for images, labels in tensors:
                s = time.monotonic()
                features, payload = trainer.forward(images, labels)
                msg = conversions.feature_msg(payload, Time(), conversions.PURPOSE_TRAIN)
                fwd.append(time.monotonic() - s)
                payload_bytes += len(payload.data)
                s = time.monotonic()
                pub.publish(msg)
                got, gmsg = grads.get(timeout=cfg.done_timeout_s)
                wait.append(got - s)
                s = time.monotonic()
                grad_payload, _ = conversions.payload_from_msg(gmsg)
                trainer.backward(features, grad_payload)
                bwd.append(time.monotonic() - s)
            t1 = time.monotonic()
            counters1 = _counters(cfg.ifname)
            compute = [a + b for a, b in zip(fwd, bwd)]
            result.update(forward_s=fwd, backward_s=bwd, round_trip_s=wait)
        else:
            sender = WindowedSender(node, cfg)
            _wait(sender.ready, cfg.ready_timeout_s, "the cloud")
            counters0, t0 = _counters(cfg.ifname), time.monotonic()
            from .messages import jpeg_payload, raw_payload

            for seq, (frames, ylab) in enumerate(raw, start=1):
                s = time.monotonic()
                if cfg.mode == "fullcloud-raw":
                    payload = raw_payload(frames, ylab, seq)
                else:
                    payload = jpeg_payload(frames, ylab, seq, cfg.jpeg_quality)
                msg = conversions.feature_msg(payload, Time(), conversions.PURPOSE_TRAIN)
                compute.append(time.monotonic() - s)
                sender.submit(payload.seq, msg)
            t_edge_done = time.monotonic()
            sender.wait_acked(len(tensors), cfg.done_timeout_s)
            t1 = time.monotonic()
            counters1 = _counters(cfg.ifname)
            payload_bytes = sender.payload_bytes
            result.update(t_edge_done=t_edge_done, send_times=sender.send_times, ack_times=sender.ack_times)
        result.update(t_start=t0, t_end=t1, compute_s=compute, payload_bytes=payload_bytes,
                      counters_start=counters0, counters_end=counters1)
        return _emit(result)
    finally:
        _stop_node(spinner)


# ---- cloud ---------------------------------------------------------------------------------------

def run_cloud(cfg: WorkerConfig) -> dict:
    import numpy as np
    import torch
    from hiertrain_interfaces.msg import FeatureBatch
    from rclpy.duration import Duration
    from std_msgs.msg import UInt64

    from hiertrain_ros import conversions
    from hiertrain_ros.core.data import frames_to_tensor
    from .messages import jpeg_frames, raw_frames

    torch.set_num_threads(cfg.threads)
    spec, optim = _spec(cfg), _optim(cfg)
    if cfg.mode == "split":
        from hiertrain_ros.core.models import build_split
        from hiertrain_ros.core.splitlearning import SplitCloudTrainer

        _, cloud_model = build_split(spec, seed=cfg.seed)
        trainer = SplitCloudTrainer(cloud_model, spec, optim)
    else:
        from hiertrain_ros.core.models import build_model
        from hiertrain_ros.core.training import FullCloudTrainer

        trainer = FullCloudTrainer(build_model(cfg.arch, num_classes=cfg.num_classes, width=cfg.width), optim,
                                   f"{cfg.arch}-w{cfg.width:g}-full")
        trainer.train_step(torch.randn(cfg.batch_size, 3, 32, 32),
                           torch.randint(0, cfg.num_classes, (cfg.batch_size,)))

    def decode(msg):
        if cfg.mode == "fullcloud-jpeg":
            images = frames_to_tensor(jpeg_frames(tuple(msg.shape), bytes(msg.data), msg.model_hash))
            return images, torch.from_numpy(np.asarray(msg.labels, dtype=np.int64))
        payload, _ = conversions.payload_from_msg(msg)
        if cfg.mode == "fullcloud-raw":
            return frames_to_tensor(raw_frames(payload)), torch.from_numpy(payload.labels.astype(np.int64))
        return (payload,)  # split learning

    spinner = _start_node("linkbench_cloud")
    node = spinner.node
    inbox: "queue.Queue" = queue.Queue()
    ack_pub = node.create_publisher(UInt64, ACKS_TOPIC, _qos(cfg))
    grad_pub = node.create_publisher(FeatureBatch, GRADIENTS_TOPIC, _qos(cfg)) if cfg.mode == "split" else None

    def on_batch(msg):
        inbox.put((time.monotonic(), msg))
        if cfg.mode != "split":  # split learning's gradient is its acknowledgement
            ack_pub.publish(UInt64(data=int(msg.seq)))

    sub = node.create_subscription(FeatureBatch, FEATURES_TOPIC, on_batch, _qos(cfg))
    try:
        # "Ready" (ack 0) is repeated until the first batch shows the edge heard it.
        _wait(lambda: sub.get_publisher_count() > 0, cfg.ready_timeout_s, "the edge")
        first = None
        while first is None:
            ack_pub.publish(UInt64(data=0))
            try:
                first = inbox.get(timeout=0.1)
            except queue.Empty:
                pass
        received, compute, losses, item = [], [], [], first
        t_first_step = time.monotonic()
        for i in range(cfg.n_batches):
            if i:
                item = inbox.get(timeout=cfg.done_timeout_s)
            got, msg = item
            received.append(got)
            s = time.monotonic()
            out = trainer.train_step(*decode(msg))
            if cfg.mode == "split":
                out, grad = out
                grad_pub.publish(conversions.feature_msg(grad, msg.header.stamp, conversions.PURPOSE_TRAIN))
            compute.append(time.monotonic() - s)
            losses.append(out.loss)
        t_end = time.monotonic()
        for pub in (ack_pub, grad_pub):
            if pub is not None:
                pub.wait_for_all_acked(Duration(seconds=30))
        return _emit({"role": "cloud", "mode": cfg.mode, "t_first_step": t_first_step, "t_end": t_end,
                      "received": received, "compute_s": compute, "losses": losses})
    finally:
        _stop_node(spinner)


# ---- forward times under the edge's CPU quota ------------------------------------------------------

def run_measure(cfg: WorkerConfig, reps: int = 6) -> dict:
    """Seconds per batch of the edge part's and the whole model's training-mode forward pass, and ``alpha``.

    The whole model's backward time over its forward time (Eq. 2-3).

    Timed as the mean of ``reps`` back-to-back passes, not a median of single ones: under a
    CFS quota a single short pass can finish inside one period's allowance and look unthrottled.
    """
    import torch

    from hiertrain_ros.core.models import build_model, split_model

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    full = build_model(cfg.arch, num_classes=cfg.num_classes, width=cfg.width)
    edge, _ = split_model(full, _spec(cfg))
    x = torch.randn(cfg.batch_size, 3, 32, 32)
    out = {}
    for name, module in (("edge", edge), ("full", full)):
        module.train()
        with torch.no_grad():
            for _ in range(2):
                module(x)
            s = time.monotonic()
            for _ in range(reps):
                module(x)
            out[name] = (time.monotonic() - s) / reps
    for _ in range(2):
        full(x).sum().backward()
    s = time.monotonic()
    for _ in range(reps):
        full(x).sum().backward()
    out["alpha"] = max(0.0, (time.monotonic() - s) / reps / out["full"] - 1.0)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in ("edge", "cloud", "measure"):
        print("usage: python -m linkbench.worker edge|cloud|measure CONFIG_JSON RESULT_JSON",
              file=sys.stderr)
        return 2
    global _RESULT_PATH
    role, config, out = argv
    cfg = WorkerConfig(**json.loads(config))
    _RESULT_PATH = Path(out)
    result = {"edge": run_edge, "cloud": run_cloud, "measure": run_measure}[role](cfg)
    if role == "measure":
        _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
