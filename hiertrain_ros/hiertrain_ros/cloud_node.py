"""Cloud node.

Trains the cloud part on received features, answers inference batches, publishes a 10 Hz heartbeat that acknowledges the
training batches it received. One cloud serves several edges: batches are told apart by (robot_id, seq), and each goes
to the trainer of the split it was made at.

Answers come from a copy of the model in their own thread, so they never wait for a
training step; the copy follows the trained weights every ``serve_refresh_s``.  With
``serve_refresh_s`` 0 the training thread answers, before each step: slower answers,
but the same weights answer the same frames on every run (what a replay needs).
"""

from __future__ import annotations

import contextlib
import time

from builtin_interfaces.msg import Time
from hiertrain_interfaces.msg import FeatureBatch, Heartbeat, Prediction, TrainingMetrics, WeightSync

from . import conversions
from .core.buffers import FairQueue
from .core.config import CloudConfig
from .core.link import BatchLedger
from .core.progressive import progressive_cloud
from .core.replay import LatentReplay, ReplayPacer
from .core.repartition import MovableSide
from .core.splits import Split, TrainerRouter
from .core.training import CloudTrainer, ServingCopy
from .ros_common import (RECORD_QOS, RELIABLE_QOS, TOPICS, MessageAuth, heartbeat_qos, run_node,
                         seconds_since)
from .trainer_node import TrainerNode


class CloudNode(TrainerNode):
    role = "cloud"

    def __init__(self, name: str = "cloud_node"):
        super().__init__(name, CloudConfig)

    def configure(self) -> None:
        cfg = self.config
        self.ledger = BatchLedger()
        self.router = TrainerRouter()
        self.router.add(self.trainer.route, self.trainer)
        # One robot's flood (or a bigger robot's batches) cannot crowd out the others: the queues are shared per
        # robot, by samples (issue 15).
        def per_robot() -> FairQueue:
            return FairQueue(cfg.queue_size, key=lambda p: p.robot_id, cost=lambda p: p.num_samples,
                             quantum=cfg.max_batch_samples)

        self.infer_queue, self.train_queue = per_robot(), per_robot()
        self.latent = (LatentReplay(cfg.latent_replay_mb * 1e6, staleness=cfg.latent_staleness,
                                    max_age=cfg.latent_max_age, half_life=cfg.latent_half_life, seed=cfg.seed)
                       if cfg.latent_replay_mb else None)
        self.replay_pacer = ReplayPacer(cfg.replay_idle_hz if self.latent is not None else 0.0)
        self.replay_steps = 0
        self.predictions = 0
        self.serving: ServingCopy | None = None  # made in warm_up(), after the checkpoint is restored
        self.auth = MessageAuth(self, cfg.auth_key_file, self.get_fully_qualified_name(), self.rejections)
        self._move = None  # a move of the split an edge asked for, made once the batches before it are trained
        self._moved = None  # the answer to the last move made, sent again if the edge asks again

        self.prediction_pub = self.publisher(Prediction, TOPICS["cloud_prediction"], RECORD_QOS)
        self.metrics_pub = self.publisher(TrainingMetrics, TOPICS["cloud_metrics"], RECORD_QOS)
        self.heartbeat_pub = self.publisher(Heartbeat, TOPICS["heartbeat"], heartbeat_qos(2.0 / cfg.heartbeat_hz))
        if cfg.movable:
            self.weights_pub = self.publisher(WeightSync, TOPICS["weights_to_edge"], RELIABLE_QOS)

    def activate(self) -> None:
        self.features_sub = self.timed_subscription(FeatureBatch, TOPICS["features"], self.on_features, RELIABLE_QOS)
        if self.config.movable:
            self.subscription(WeightSync, TOPICS["weights_to_cloud"], self.on_weights, RELIABLE_QOS)
        # No heartbeat while inactive: to the edge a paused cloud is an unreachable one (it stores).
        self.timer(1.0 / self.config.heartbeat_hz, self.publish_heartbeat)

    def deactivate(self) -> None:
        # The edge's fallback has answered these frames by now; training batches wait to be trained.
        self.infer_queue.take(len(self.infer_queue))

    def release(self) -> None:
        self.serving = self.infer_queue = self.train_queue = None

    def loops(self) -> list[tuple]:
        if self.serving is None:  # the training thread answers too
            return super().loops()
        # Answers have their own thread; train_nice can put training behind them when the CPU is short.
        return [(self.work_once, "cloud worker", 0.0, self.config.train_nice),
                (self._answer_pending, "cloud server", 0.0)]

    def make_trainer(self, spec, optim):
        cfg = self.config
        # The edge's candidates, where this cloud is told them too: it keeps them ready from the start.
        candidates = [Split(*arm) for arm in cfg.split_arms()] if cfg.knows_splits else []
        side = MovableSide("cloud", spec, seed=cfg.seed, candidates=candidates) if cfg.movable else None
        cloud = side.model if side else progressive_cloud(spec, seed=cfg.seed, exits=cfg.exits,
                                                          placement=cfg.exit_placement, head=cfg.exit_head)
        trainer = CloudTrainer(cloud, spec, optim, c_thr=cfg.confidence_threshold, measure=cfg.confidence_measure,
                               exit_weights=cfg.exit_weights)
        if side:
            trainer.make_movable(side)
        return trainer

    def on_config_changed(self) -> None:
        if self.trainer is not None:
            self.trainer.set_answering(self.config.confidence_threshold, self.config.confidence_measure)

    def input_shape(self) -> tuple:
        return self.trainer.model.feature_shape

    def warm_up(self) -> None:
        super().warm_up()
        if self.config.serve_refresh_s > 0:
            self.serving = ServingCopy(self.trainer.model, self.config.serve_refresh_s)

    def extra_state(self) -> dict:
        return self.ledger.state()

    def restore_extra(self, state: dict) -> None:
        self.ledger.restore(state)

    def on_features(self, msg: FeatureBatch, received: float | None = None) -> None:
        """Take a feature batch, received (by the middleware) at ``received`` s on the system clock."""
        if not self.auth.check("features", msg):
            return
        try:
            payload, purpose = conversions.payload_from_msg(msg, self.config.max_batch_samples)
            self.router.trainer_for(payload).check(payload, train=purpose == conversions.PURPOSE_TRAIN)
        except ValueError as exc:
            self.rejections("features", exc)
            return
        if purpose == conversions.PURPOSE_INFER:
            self.infer_queue.put(payload)
        elif self.ledger.admit(payload.robot_id, payload.seq, received or time.time()):
            evicted = self.train_queue.add(payload)
            if evicted is not None:  # unacknowledged: its edge resends it
                self.ledger.evicted(evicted.robot_id, evicted.seq)

    def on_weights(self, msg: WeightSync) -> None:
        """Take an edge's request to move the split; the worker makes it once every batch queued before is trained."""
        if not self.auth.check("weights", msg) or msg.kind != WeightSync.KIND_MOVE:
            return
        if self._moved is not None and msg.move_id == self._moved.move_id and msg.robot_id == self._moved.robot_id:
            self.weights_pub.publish(self.auth.sign("weights", self._moved))  # our answer was lost: again
            return
        moves = self._moved.move_id if self._moved is not None else 0
        robots = set(self.ledger.last_seqs()) - {msg.robot_id}
        if msg.move_id != moves + 1 or robots or msg.from_split != self.trainer.spec.split_point:
            self.rejections("weights", ValueError(
                f"move {msg.move_id} of {msg.robot_id!r} from split {msg.from_split} refused: this cloud is at split "
                f"{self.trainer.spec.split_point} after {moves} moves" + (
                    f" and also trains robots {sorted(robots)} (a moving split serves one edge)" if robots else "")))
            return
        self._move = msg

    def _make_move(self) -> None:
        msg, self._move = self._move, None
        to = Split(msg.split_point, msg.bits)
        try:
            with self._lock:
                state = self.trainer.move(to, msg.move_id, bytes(msg.state))
                self.router = TrainerRouter()
                self.router.add(self.trainer.route, self.trainer)
                if self.serving is not None:
                    self.serving = ServingCopy(self.trainer.model, self.config.serve_refresh_s)
        except ValueError as exc:
            self.rejections("weights", exc)
            return
        reply = WeightSync(robot_id=msg.robot_id, move_id=msg.move_id, kind=WeightSync.KIND_MOVED,
                           from_split=msg.from_split, split_point=to.split_point, bits=to.bits, state=state)
        reply.header.stamp = self.get_clock().now().to_msg()
        self._moved = reply
        self.weights_pub.publish(self.auth.sign("weights", reply))
        self.get_logger().info(f"split moved to {to.split_point} at {to.bits} bits (move {msg.move_id})")

    def work_once(self) -> None:
        if self.serving is None:
            self._answer_pending()  # every pending answer before the next training step
        else:
            self.train_queue.wait(0.02)
        batch = self.train_queue.draw(1)
        for payload in batch or ():
            self._train(payload)
        if self._move is not None and not batch and len(self.train_queue) == 0:
            self._make_move()
        trained = bool(batch) or (self.replay_pacer.due() and self._replay_idle())
        if trained and self.serving is not None:
            self.serving.follow(self.trainer.model)

    def _replay_for(self, payload, trainer) -> list:
        """Earlier batches to train on with ``payload``: ``latent_ratio`` of the step's samples."""
        if self.latent is None:
            return []
        ratio = self.config.latent_ratio
        return self.latent.sample(round(payload.num_samples * ratio / (1 - ratio)), trainer.route.accepts)

    def _replay_idle(self) -> bool:
        replay = self.latent.sample(1, self.trainer.route.accepts)
        if not replay:
            return False
        with self._lock:
            result = self.trainer.replay_step(replay)
            step = self.trainer.step
        self.replay_pacer.took()
        self.replay_steps += 1
        self.last_loss = result.loss
        self.checkpoint_due(step)
        return True

    def _answer_pending(self) -> None:
        self.infer_queue.wait(0.02)
        for payload in self.infer_queue.take(self.config.queue_size):
            self._infer(payload)

    def _infer(self, payload) -> None:
        # One serving copy, of the one route's trainer: a second route needs a copy of its own.
        try:
            with self._lock if self.serving is None else contextlib.nullcontext():
                classes, confidence, exits = self.router.trainer_for(payload).predict_exits(payload, self.serving)
        except (ValueError, RuntimeError) as exc:  # made before the split moved: the edge has answered it
            self.rejections("features", exc)
            return
        for (sec, nanosec), c, p, e in zip(payload.frame_stamps, classes, confidence, exits):
            stamp = Time(sec=sec, nanosec=nanosec)
            self.prediction_pub.publish(conversions.prediction_msg(
                stamp, "", c, p, Prediction.SOURCE_CLOUD, seconds_since(self, stamp), payload.robot_id,
                exit_index=e))
        self.predictions += len(classes)

    def _train(self, payload) -> None:
        robot, seq = payload.robot_id, payload.seq
        if self.ledger.is_trained(robot, seq):  # a resend queued before the first copy was trained
            self.ledger.duplicate(robot, seq)
            return
        trainer = self.router.trainer_for(payload)
        with self._lock:
            result = trainer.train_step(payload, self._replay_for(payload, trainer))
            step = trainer.step
        self.ledger.trained(robot, seq)
        if self.latent is not None:
            self.latent.add(payload)
        self.last_loss = result.loss
        if step % self.config.metrics_every == 0:
            metrics = TrainingMetrics(role="cloud", step=step, seq=seq, robot_id=robot, loss=result.loss,
                                      accuracy=result.correct / result.samples, samples=result.samples)
            metrics.header.stamp = self.get_clock().now().to_msg()
            self.metrics_pub.publish(metrics)
        self.checkpoint_due(step)

    def publish_heartbeat(self) -> None:
        # Alive means able to serve: not before an edge's feature stream is matched.
        if self.features_sub.get_publisher_count() == 0:
            return
        self.heartbeat_pub.publish(self.auth.sign("heartbeat", conversions.heartbeat_msg(
            self.get_clock().now().to_msg(), self.trainer.step, self._last_seq(), self.ledger.acks(), time.time())))

    def _last_seq(self) -> int:
        return max(self.ledger.last_seqs().values(), default=0)

    def status(self) -> dict:
        return {**super().status(), "last_seq": self._last_seq(), "robots": len(self.ledger.last_seqs()),
                "train_queue": len(self.train_queue), "infer_queue": len(self.infer_queue),
                "dropped_train": self.train_queue.dropped, "dropped_infer": self.infer_queue.dropped,
                "duplicates": self.ledger.duplicates, "predictions": self.predictions,
                "latent_batches": len(self.latent or ()),
                "latent_stale_evicted": getattr(self.latent, "evicted_stale", 0),
                "replay_steps": self.replay_steps, "split_point": self.trainer.spec.split_point,
                "moves": self._moved.move_id if self._moved is not None else 0, **self._ready_status()}

    def _ready_status(self) -> dict:
        movable = self.trainer.movable
        if movable is None:
            return {}
        return {"kept_ready": ",".join(str(s.split_point) for s in movable.shadows(self.trainer.spec.split_point)),
                "ready_handed_over": movable.handed_over}


def main(args=None) -> None:
    run_node(CloudNode, args)


if __name__ == "__main__":
    main()
