"""Cloud node: trains the cloud part on received features, answers inference batches,
publishes a 10 Hz heartbeat that acknowledges the last trained batch."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from hiertrain_interfaces.msg import FeatureBatch, Heartbeat, Prediction, TrainingMetrics
from rclpy.node import Node

from . import conversions
from .core import checkpoint
from .core.buffers import DropOldestQueue
from .core.config import CloudConfig
from .core.models import build_split
from .core.training import CloudTrainer
from .ros_common import (RELIABLE_QOS, TOPICS, Rejections, declare_config, diagnostic, heartbeat_qos, run_node,
                         seconds_since)
from builtin_interfaces.msg import Time


class CloudNode(Node):
    def __init__(self, name: str = "cloud_node"):
        super().__init__(name)
        self.config = cfg = declare_config(self, CloudConfig)
        cfg.apply_threads()
        spec = cfg.spec()
        _, cloud = build_split(spec, seed=cfg.seed)
        self.trainer = CloudTrainer(cloud, spec, cfg.optim())
        self.last_seq = 0
        self._acks: deque = deque(maxlen=256)  # repeated in every heartbeat: one lost heartbeat costs nothing
        self._ack_lock = threading.Lock()  # never held during training, so heartbeats stay on time
        self._trained: OrderedDict = OrderedDict()  # recent trained seqs, so a resent batch is not trained twice
        self.checkpoint_path = Path(cfg.checkpoint_dir) / "cloud.pt" if cfg.checkpoint_dir else None
        self._resume()

        self.infer_queue = DropOldestQueue(cfg.queue_size)
        self.train_queue = DropOldestQueue(cfg.queue_size)
        self.rejections = Rejections(self)
        self.duplicates = self.predictions = 0
        self.last_loss = float("nan")
        self._lock = threading.Lock()

        self.prediction_pub = self.create_publisher(Prediction, TOPICS["cloud_prediction"], RELIABLE_QOS)
        self.metrics_pub = self.create_publisher(TrainingMetrics, TOPICS["cloud_metrics"], RELIABLE_QOS)
        self.heartbeat_pub = self.create_publisher(Heartbeat, TOPICS["heartbeat"],
                                                   heartbeat_qos(2.0 / cfg.heartbeat_hz))
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(FeatureBatch, TOPICS["features"], self.on_features, RELIABLE_QOS)
        self.create_timer(1.0 / cfg.heartbeat_hz, self.publish_heartbeat)
        self.create_timer(1.0, self.publish_diagnostics)

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="cloud-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"cloud {spec.model_id}: expects features {cloud.feature_shape}, "
                               f"{self.trainer.step} steps done")

    def on_config_changed(self) -> None:
        pass

    def _resume(self) -> None:
        if self.checkpoint_path is None:
            return
        state = checkpoint.load(self.checkpoint_path)
        if state is not None:
            self.trainer.load_state_dict(state)
            self.last_seq = int(state.get("last_seq", 0))
            self._trained.update(dict.fromkeys(state.get("trained_seqs", ())))
            self.get_logger().info(f"resumed from {self.checkpoint_path} at step {self.trainer.step}")

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            with self._lock:
                state = {**self.trainer.state_dict(), "last_seq": self.last_seq,
                         "trained_seqs": list(self._trained)}
            checkpoint.save(state, self.checkpoint_path)

    def on_features(self, msg: FeatureBatch) -> None:
        try:
            payload, purpose = conversions.payload_from_msg(msg)
            if payload.split_point != self.trainer.spec.split_point:
                raise ValueError(f"split_point {payload.split_point} != {self.trainer.spec.split_point}")
            if payload.model_id != self.trainer.model_id:
                raise ValueError(f"model_id {payload.model_id!r} is not this cloud's {self.trainer.model_id!r}")
            if tuple(payload.shape[1:]) != tuple(self.trainer.model.feature_shape):
                raise ValueError(f"feature shape {payload.shape[1:]} != {self.trainer.model.feature_shape}")
            if purpose == conversions.PURPOSE_TRAIN and not all(0 <= y < self.config.num_classes
                                                                for y in payload.labels):
                raise ValueError(f"training labels outside 0..{self.config.num_classes - 1}")
        except ValueError as exc:
            self.rejections("features", exc)
            return
        if purpose == conversions.PURPOSE_INFER:
            self.infer_queue.put(payload)
        elif payload.seq in self._trained:
            self._duplicate(payload.seq)
        else:
            self.train_queue.put(payload)

    def _work(self) -> None:
        while not self._stop.is_set():
            self.infer_queue.wait(0.02)
            try:
                for payload in self.infer_queue.take(4):
                    self._infer(payload)
                for payload in self.train_queue.take(1):
                    self._train(payload)
            except Exception as exc:
                self.get_logger().error(f"cloud worker: {exc!r}", throttle_duration_sec=2.0)

    def _infer(self, payload) -> None:
        with self._lock:
            classes, confidence = self.trainer.predict(payload)
        for (sec, nanosec), c, p in zip(payload.frame_stamps, classes, confidence):
            stamp = Time(sec=sec, nanosec=nanosec)
            self.prediction_pub.publish(conversions.prediction_msg(
                stamp, "", c, p, Prediction.SOURCE_CLOUD, seconds_since(self, stamp)))
        self.predictions += len(classes)

    def _train(self, payload) -> None:
        if payload.seq in self._trained:
            self._duplicate(payload.seq)
            return
        with self._lock:
            result = self.trainer.train_step(payload)
            step = self.trainer.step
            self._trained[payload.seq] = None
            while len(self._trained) > 4096:
                self._trained.popitem(last=False)
            self.last_seq = max(self.last_seq, payload.seq)
        self._ack(payload.seq)
        self.last_loss = result.loss
        if step % self.config.metrics_every == 0:
            metrics = TrainingMetrics(role="cloud", step=step, seq=payload.seq, loss=result.loss,
                                      accuracy=result.correct / result.samples, samples=result.samples)
            metrics.header.stamp = self.get_clock().now().to_msg()
            self.metrics_pub.publish(metrics)
        if step % self.config.checkpoint_every == 0:
            self.save_checkpoint()

    def _ack(self, seq: int) -> None:
        with self._ack_lock:
            self._acks.append(seq)

    def _duplicate(self, seq: int) -> None:
        """A resent batch already trained: not again, but acknowledge it again."""
        self.duplicates += 1
        self._ack(seq)

    def publish_heartbeat(self) -> None:
        with self._ack_lock:
            acked = list(self._acks)
        msg = Heartbeat(steps=self.trainer.step, last_seq=self.last_seq, acked=acked)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.heartbeat_pub.publish(msg)

    def status(self) -> dict:
        return {"steps": self.trainer.step, "cloud_loss": self.last_loss, "last_seq": self.last_seq,
                "train_queue": len(self.train_queue), "infer_queue": len(self.infer_queue),
                "dropped_train": self.train_queue.dropped, "dropped_infer": self.infer_queue.dropped,
                "duplicates": self.duplicates, "predictions": self.predictions,
                "rejected": self.rejections.total,
                **{f"rejected_{k}": v for k, v in self.rejections.counts.items()}}

    def publish_diagnostics(self) -> None:
        self.diagnostics_pub.publish(diagnostic(self, "training", self.status()))

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5.0)
        self.save_checkpoint()


def main(args=None) -> None:
    run_node(CloudNode, args)


if __name__ == "__main__":
    main()
