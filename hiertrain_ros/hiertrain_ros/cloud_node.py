"""Cloud node: trains the cloud part on received features, answers inference batches,
publishes a 10 Hz heartbeat that acknowledges the training batches it received.

Answers come from a copy of the model in their own thread, so they never wait for a
training step; the copy follows the trained weights every ``serve_refresh_s``.  With
``serve_refresh_s`` 0 the training thread answers, before each step: slower answers,
but the same weights answer the same frames on every run (what a replay needs)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict, deque

from builtin_interfaces.msg import Time
from hiertrain_interfaces.msg import FeatureBatch, Heartbeat, Prediction, TrainingMetrics

from . import conversions
from .core.buffers import DropOldestQueue
from .core.config import CloudConfig
from .core.models import build_cloud
from .core.training import CloudTrainer, ServingCopy
from .ros_common import RECORD_QOS, RELIABLE_QOS, TOPICS, heartbeat_qos, run_node, seconds_since
from .trainer_node import TrainerNode


class CloudNode(TrainerNode):
    role = "cloud"

    def __init__(self, name: str = "cloud_node"):
        super().__init__(name, CloudConfig)
        cfg = self.config
        self.last_seq = 0
        self._trained: OrderedDict = OrderedDict()  # recent trained seqs, so a resent batch is not trained twice
        self._queued: set = set()  # seqs in the train queue, so a resent copy does not take a second place
        self._acks: deque = deque(maxlen=256)  # repeated in every heartbeat: one lost heartbeat costs nothing
        self._ack_lock = threading.Lock()  # never held during training, so heartbeats stay on time
        self.infer_queue = DropOldestQueue(cfg.queue_size)
        self.train_queue = DropOldestQueue(cfg.queue_size)
        self.duplicates = self.predictions = 0
        self.serving: ServingCopy | None = None  # made in warm_up(), after the checkpoint is restored
        self._server = threading.Thread(target=self._serve, name="cloud-server", daemon=True)

        self.prediction_pub = self.create_publisher(Prediction, TOPICS["cloud_prediction"], RECORD_QOS)
        self.metrics_pub = self.create_publisher(TrainingMetrics, TOPICS["cloud_metrics"], RECORD_QOS)
        self.heartbeat_pub = self.create_publisher(Heartbeat, TOPICS["heartbeat"],
                                                   heartbeat_qos(2.0 / cfg.heartbeat_hz))
        self.features_sub = self.create_subscription(FeatureBatch, TOPICS["features"], self.on_features,
                                                     RELIABLE_QOS)
        self.create_timer(1.0 / cfg.heartbeat_hz, self.publish_heartbeat)
        self.start()
        if self.serving is not None:
            self._server.start()

    def make_trainer(self, spec, optim):
        return CloudTrainer(build_cloud(spec, seed=self.config.seed), spec, optim)

    def input_shape(self) -> tuple:
        return self.trainer.model.feature_shape

    def warm_up(self) -> None:
        super().warm_up()
        if self.config.serve_refresh_s > 0:
            self.serving = ServingCopy(self.trainer.model, self.config.serve_refresh_s)

    def extra_state(self) -> dict:
        return {"last_seq": self.last_seq, "trained_seqs": list(self._trained)}

    def restore_extra(self, state: dict) -> None:
        self.last_seq = int(state.get("last_seq", 0))
        self._trained.update(dict.fromkeys(state.get("trained_seqs", ())))

    def on_features(self, msg: FeatureBatch) -> None:
        try:
            payload, purpose = conversions.payload_from_msg(msg)
            self.trainer.check(payload, train=purpose == conversions.PURPOSE_TRAIN)
        except ValueError as exc:
            self.rejections("features", exc)
            return
        if purpose == conversions.PURPOSE_INFER:
            self.infer_queue.put(payload)
        elif payload.seq in self._trained:
            self._duplicate(payload.seq)
        elif payload.seq in self._queued:
            self.duplicates += 1  # acknowledged once trained
        else:
            self._queued.add(payload.seq)
            evicted = self.train_queue.put(payload)
            if evicted is not None:  # its sender resends it, unacknowledged
                self._queued.discard(evicted.seq)

    def _work(self) -> None:
        if self.serving is not None and self.config.train_nice:
            # Training is background work: answering (the server thread), heartbeats and the
            # rest of the robot's software come first when the CPU is short (Linux: per thread).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.config.train_nice)
        super()._work()

    def work_once(self) -> None:
        if self.serving is None:
            self._answer_pending()  # every pending answer before the next training step
        else:
            self.train_queue.wait(0.02)
        for payload in self.train_queue.take(1):
            self._queued.discard(payload.seq)
            self._train(payload)
            if self.serving is not None:
                self.serving.follow(self.trainer.model)

    def _serve(self) -> None:
        self.keep_running(self._answer_pending, "cloud server")

    def _answer_pending(self) -> None:
        self.infer_queue.wait(0.02)
        for payload in self.infer_queue.take(self.config.queue_size):
            self._infer(payload)

    def _infer(self, payload) -> None:
        with self._lock if self.serving is None else contextlib.nullcontext():
            classes, confidence = self.trainer.predict(payload, self.serving)
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
        self.checkpoint_due(step)

    def _ack(self, seq: int) -> None:
        with self._ack_lock:
            self._acks.append(seq)

    def _duplicate(self, seq: int) -> None:
        """A resent batch already trained: not again, but acknowledge it again."""
        self.duplicates += 1
        self._ack(seq)

    def publish_heartbeat(self) -> None:
        # Alive means able to serve: not before an edge's feature stream is matched.
        if self.features_sub.get_publisher_count() == 0:
            return
        with self._ack_lock:
            acked = list(self._acks)
        msg = Heartbeat(steps=self.trainer.step, last_seq=self.last_seq, acked=acked)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.heartbeat_pub.publish(msg)

    def close(self) -> None:
        super().close()
        if self._server.is_alive():
            self._server.join(timeout=2.0)

    def status(self) -> dict:
        return {**super().status(), "last_seq": self.last_seq,
                "train_queue": len(self.train_queue), "infer_queue": len(self.infer_queue),
                "dropped_train": self.train_queue.dropped, "dropped_infer": self.infer_queue.dropped,
                "duplicates": self.duplicates, "predictions": self.predictions}


def main(args=None) -> None:
    run_node(CloudNode, args)


if __name__ == "__main__":
    main()
