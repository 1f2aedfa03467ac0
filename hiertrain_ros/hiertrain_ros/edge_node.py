"""Edge node.

Trains the edge part from its exits, publishes quantized features, answers every k-th frame progressively: the first
edge exit that is sure enough answers, and only the frames the offload policy names go to the cloud for its answer
(``always``: all of them).  Heavy work runs in a worker thread.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
from hiertrain_interfaces.msg import FeatureBatch, Heartbeat, Label, Prediction, TrainingMetrics, WeightSync
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import UInt64

from . import conversions
from .core.buffers import DropOldestQueue, LabelMatcher
from .core.config import EdgeConfig
from .core.data import held_frame, held_to_samples, held_to_tensor
from .core.frames import INPUT_SIZE
from .core.link import AckTracker, DiskSpill, Outbox, TokenBucket
from .core.fallback import NOT_OFFLOADED
from .core.progressive import progressive_edge
from .core.replay import ReplayPacer, make_sampler
from .core.hierschedule import profile_layers
from .core.l2s import LinkRateMeter, OnlineSplit, profile_arms
from .core.models import payload_bits_per_sample
from .core.privacy import allowed_splits, privacy_by_position
from .core.repartition import EdgeMove, MovableSide, move_bytes
from .core.splits import ScheduledSplit, Split, SplitContext
from .core.training import EdgeTrainer
from .ros_common import (CAMERA_QOS, RECORD_QOS, RELIABLE_QOS, TOPICS, MessageAuth, heartbeat_qos, resolve_robot_id,
                         run_node, seconds_since, stamp_ns)
from .trainer_node import TrainerNode


class EdgeNode(TrainerNode):
    role = "edge"
    # A camera's frames and labels do not pass through the executor (fast_subscription, ros_common.Intake), so the
    # SingleThreadedExecutor serves the rest; rclpy's EventsExecutor (executor: events) is experimental in rclpy and
    # absent before Jazzy: an option, not the default.
    executor_kind = "single"

    def __init__(self, name: str = "edge_node"):
        super().__init__(name, EdgeConfig)

    @property
    def intake_interval_s(self) -> float:
        return self.config.intake_interval_s

    def configure(self) -> None:
        cfg = self.config
        self.robot_id = resolve_robot_id(self, cfg.robot_id)
        self.matcher = LabelMatcher(cfg.pending_size)
        # Frames are held as they came and converted only in the batches drawn (held_to_samples): at a camera
        # faster than the edge trains, most are dropped unused (issue 14).
        self.train_buffer = make_sampler(cfg.buffer_size, cfg.replay, cfg.replay_memory_mb, cfg.replay_ratio,
                                         cfg.seed, prepare=held_to_samples)
        self.replay_pacer = ReplayPacer(cfg.replay_idle_hz)
        self.infer_queue = DropOldestQueue(cfg.queue_size)
        self.spill = self._spill()
        self.outbox = Outbox(cfg.outbox_bits, cfg.outbox_age_s, cfg.infer_age_s, spill=self.spill,
                             memory_bits=cfg.outbox_memory_bits)
        if self.spill is not None:  # what an earlier run left unacknowledged goes first
            ours = (self.trainer.model_hash, self.robot_id)
            self.outbox.take_over(self.spill.recover(keep=lambda m: (m.model_hash, m.robot_id) == ours))
            if self.outbox.recovered or self.spill.torn or self.spill.foreign:
                self.get_logger().warning(
                    f"{cfg.spill_dir}: {self.outbox.recovered} unacknowledged batches of an earlier run will be sent; "
                    f"removed {self.spill.torn} torn files and {self.spill.foreign} of another model or robot")
        self.unacked = AckTracker(cfg.unacked_max, cfg.resend_after_s)
        self.bucket = self._bucket()
        self.frames = self.consumed = self.features_sent = 0
        self.offloaded = self.kept = 0  # inference frames whose features went to the cloud / stayed here
        self.exit_answers = [0] * cfg.exits  # inference frames answered per edge exit (unsure ones: the last)
        # The camera callback and the worker both count; not the trainer's lock, which the callback
        # would then wait on for a whole training step (issue 15).
        self._consumed_lock = threading.Lock()
        self._last_heartbeat = None
        self.auth = MessageAuth(self, cfg.auth_key_file, self.robot_id or self.get_name(), self.rejections)
        # A moving split: the policy chooses before each training step, EdgeMove carries the move out.  LinUCB-E's
        # is made in warm_up(), from a profile of this machine.
        self.split_policy = ScheduledSplit(cfg.split_schedule, cfg.bits) if cfg.split_policy == "schedule" else None
        self._batch_cost: dict[int, float] = {}  # seq -> edge seconds per sample of the step that made it
        self._sent_at: dict[int, float] = {}  # seq -> when first sent
        self._last_ack = 0.0
        self.link_meter = LinkRateMeter()
        self.split_arms = self._private_splits()
        self.mover = EdgeMove(resend_s=cfg.resend_after_s, drain_timeout_s=cfg.move_drain_timeout_s)
        self._move_lock = threading.Lock()  # the worker asks, the executor takes the answer
        self.move_discarded = 0  # training batches not sent when a move began: made for the old split

        self.feature_pub = self.publisher(FeatureBatch, TOPICS["features"], RELIABLE_QOS)
        self.prediction_pub = self.publisher(Prediction, TOPICS["edge_prediction"], RECORD_QOS)
        self.metrics_pub = self.publisher(TrainingMetrics, TOPICS["edge_metrics"], RECORD_QOS)
        self.consumed_pub = self.publisher(UInt64, TOPICS["consumed"], RELIABLE_QOS)
        if cfg.movable:
            self.weights_pub = self.publisher(WeightSync, TOPICS["weights_to_cloud"], RELIABLE_QOS)

    def activate(self) -> None:
        # A camera's every frame and label: taken by the intake thread, not the executor (issue 14)
        self.fast_subscription(Image, TOPICS["image"], self.on_image, CAMERA_QOS)
        self.fast_subscription(Label, TOPICS["labels"], self.on_label, RECORD_QOS)
        self.timed_subscription(Heartbeat, TOPICS["heartbeat"], self.on_heartbeat,
                                heartbeat_qos(self.config.heartbeat_timeout_s))
        if self.config.movable:
            self.subscription(WeightSync, TOPICS["weights_to_edge"], self.on_weights, RELIABLE_QOS)

    def deactivate(self) -> None:
        # Answers to frames from before the pause would come too late; the labelled frames
        # still teach, and the outbox's training batches still go (or expire by age).
        self.infer_queue.take(len(self.infer_queue))

    def release(self) -> None:
        self.matcher = self.train_buffer = self.infer_queue = self.outbox = self.unacked = self.spill = None

    def loops(self) -> list[tuple]:
        # Sending has a thread of its own: a slow link or a backlog after an outage must
        # never hold up the early exit's answers.
        return [*super().loops(), (self._send, "edge sender", 0.005)]

    def _spill(self) -> DiskSpill | None:
        if not self.config.spill_dir:
            return None
        # Named by sequence number: the files an earlier run left are sent again in the order they were made.
        return DiskSpill(self.config.spill_dir, serialize_message, lambda data: deserialize_message(data, FeatureBatch),
                         name_of=lambda msg: f"{msg.seq:020d}")

    def make_trainer(self, spec, optim):
        cfg = self.config
        side = MovableSide("edge", spec, seed=cfg.seed) if cfg.movable else None
        edge = side.model if side else progressive_edge(spec, seed=cfg.seed, exits=cfg.exits,
                                                        placement=cfg.exit_placement, head=cfg.exit_head)
        trainer = EdgeTrainer(edge, spec, optim, coding=cfg.coding, offload=cfg.offload_policy,
                              c_thr=cfg.confidence_threshold, measure=cfg.confidence_measure,
                              exit_weights=cfg.exit_weights)
        if side:
            trainer.make_movable(side)
        return trainer

    def input_shape(self) -> tuple:
        return (3, INPUT_SIZE, INPUT_SIZE)

    def warm_up(self) -> None:
        super().warm_up()
        cfg = self.config
        if cfg.split_policy == "linucb":  # measure this machine: the edge's time per sample at each candidate
            arms = self.split_arms
            start = time.monotonic()
            profile = profile_layers(cfg.arch, width=cfg.width, num_classes=cfg.num_classes,
                                     batch_size=cfg.batch_size, repeats=2)
            front, cloud_share = profile_arms(profile, arms)
            specs = {a: replace(cfg.model_spec(), split_point=a.split_point, bits=a.bits) for a in arms}
            bits = {a: payload_bits_per_sample(spec, spec.feature_shape, cfg.batch_size) for a, spec in specs.items()}
            # What a move costs: the batches in flight drain, and the layers that come to the cloud cross the
            # uplink (those going to the edge come down, taken as fast).
            layers = move_bytes(cfg.arch, cfg.width, cfg.num_classes)
            self.split_policy = OnlineSplit(
                arms, front, cloud_share, bits, cfg.link_budget_bps or 10e6, round_steps=cfg.split_round_steps,
                drain_bits={a: cfg.unacked_max * cfg.batch_size * bits[a] for a in arms},
                move_bits=lambda a, b: 8.0 * layers(a.split_point, b.split_point) if b.split_point < a.split_point
                else 0.0, horizon_s=cfg.split_horizon_s)
            self.get_logger().info(f"profiled in {time.monotonic() - start:.1f} s: edge ms per sample " + ", ".join(
                f"{a.split_point}: {1e3 * front[a]:.2f}" for a in arms))

    def _bucket(self) -> TokenBucket:
        # A burst of 0.1 s of budget: after an idle spell (an outage) the link's queue never holds
        # much more than that in front of a live answer (with 1 s the output topic stalled).
        # A larger batch still goes, alone, once the bucket is full.
        return TokenBucket(self.config.link_budget_bps, 0.1 * self.config.link_budget_bps)

    def on_config_changed(self) -> None:
        self.bucket = self._bucket()
        cfg = self.config
        if self.trainer is not None:
            self.trainer.set_answering(cfg.offload_policy, cfg.confidence_threshold, cfg.confidence_measure)

    # -- executor callbacks: validate and enqueue only ------------------------------------------
    def on_image(self, msg: Image) -> None:
        try:
            frame = conversions.frame_from_msg(msg, self.config.max_frame_side)
        except ValueError as exc:
            self.rejections("image", exc)
            return
        sample = held_frame(frame)  # no conversion yet: most frames of a fast camera are dropped unused
        stamp = stamp_ns(msg.header.stamp)
        self.frames += 1
        if self.frames % self.config.predict_every == 0:
            self.infer_queue.put((msg.header, sample))
        matched = self.matcher.add_frame(stamp, sample)
        if matched is not None:
            self.train_buffer.add(matched)
        self._count_consumed(self.frames % self.config.predict_every != 0)

    def on_label(self, msg: Label) -> None:
        if not self.auth.check("labels", msg):
            return
        try:
            stamp, label = conversions.label_from_msg(msg, self.config.num_classes)
        except ValueError as exc:
            self.rejections("label", exc)
            return
        matched = self.matcher.add_label(stamp, label)
        if matched is not None:
            self.train_buffer.add(matched)

    def on_heartbeat(self, msg: Heartbeat, received: float | None = None) -> None:
        """Take the cloud's heartbeat, received (by the middleware) at ``received`` s on the system clock."""
        if not self.auth.check("heartbeat", msg):
            return
        self._last_heartbeat = self.get_clock().now()
        try:
            acked = self.unacked.ack(conversions.acks_for(msg, self.robot_id))
        except ValueError as exc:
            self.rejections("heartbeat", exc)
            return
        for batch in acked:
            self.outbox.acknowledged(batch)  # its file, if it waited on disk
        if acked:
            # When it came, on the clock of _sent_at; how long the cloud held each batch, where it says
            heard = time.monotonic() - max(time.time() - received, 0.0) if received else time.monotonic()
            self._measure_offloaded(acked, heard, conversions.held_for(msg, self.robot_id))

    def _private_splits(self) -> list[Split]:
        """Return the splits the policy may use: those at or above privacy_floor (all of them without a floor).

        LinUCB-E's candidates below the floor are left out; a fixed or scheduled split below it is an error.
        """
        cfg = self.config
        splits = [Split(p, b) for p, b in cfg.split_arms()] or [Split(cfg.split_point, cfg.bits)]
        if not cfg.privacy_floor:
            return splits
        try:
            profile = json.loads(Path(cfg.privacy_profile).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"privacy_profile {cfg.privacy_profile!r} cannot be read: {exc}") from None
        privacy = privacy_by_position(profile, cfg.model_spec())
        kept = allowed_splits(splits, privacy, cfg.privacy_floor, choose=cfg.split_policy == "linucb")
        if privacy.get(cfg.split_point, -1.0) < cfg.privacy_floor:  # what it sends before its first move
            raise ValueError(f"split_point {cfg.split_point} is below privacy_floor {cfg.privacy_floor:g} or not in "
                             f"the profile: "
                             f"start at one of {[s.split_point for s in kept]}")
        self.get_logger().info(f"privacy floor {cfg.privacy_floor:g}: split points {[s.split_point for s in kept]} "
                               "allowed")
        return kept

    def _measure_offloaded(self, acked, now: float, held: dict[int, float]) -> None:
        """Measure the link rate from batches acknowledged at ``now``; teach LinUCB-E the offloaded stage's time.

        The batches' service time is from when the first was sent, or the previous acknowledgement if later, to
        now: while the link is kept busy it is the link and the cloud's time for them, which the sender sees.
        While the link idles (the edge is the slow stage) that is their latency, not the offloaded stage's time:
        where the cloud says how long it held them, their time on the link is taken instead.
        The link rate: see :class:`LinkRateMeter`; ``held`` is how long the cloud held each (by seq).
        """
        busy = len(self.unacked) > 0 or self.outbox.holds_bulk()  # the meter's own view where the cloud says
        with self._move_lock:
            sent_at = [self._sent_at.pop(m.seq, now) for m in acked]
            service = max(now - max(min(sent_at), self._last_ack), 1e-3)
            self._last_ack = now
            samples = sum(len(m.labels) for m in acked)
            bits = sum(8 * len(m.data) for m in acked)
            last_held = min(held[m.seq] for m in acked) if all(m.seq in held for m in acked) else None
            rate, floor = self.link_meter.acknowledged(now, bits, min(sent_at), busy, last_held)
            if rate and self.link_meter.lone:
                service = bits / rate
            for m in acked:
                front = self._batch_cost.pop(m.seq, None)
                if front is not None:
                    self.split_policy.measured(Split(m.split_point, m.bits), front, service / samples, rate,
                                               rate_is_floor=floor)

    def on_weights(self, msg: WeightSync) -> None:
        """Take the cloud's answer to a move: the layers it hands over; train at the new split from now."""
        if not self.auth.check("weights", msg) or msg.kind != WeightSync.KIND_MOVED or msg.robot_id != self.robot_id:
            return
        with self._move_lock:
            pending = self.mover.request_
            if pending is None or msg.move_id != pending.move_id:
                return  # the answer to a request sent again, after the first answer was taken
            try:
                with self._lock:
                    self.trainer.move(pending.to, pending.move_id, bytes(msg.state))
            except ValueError as exc:
                self.rejections("weights", exc)
                return
            self.mover.answered(msg.move_id, time.monotonic())
        self.get_logger().info(f"split moved to {pending.to.split_point} at {pending.to.bits} bits "
                               f"(move {pending.move_id}, training paused {1e3 * self.mover.pauses[-1]:.0f} ms)")

    def _moving(self) -> bool:
        """Drive a move of the split; True while one is under way (no training, no offloading meanwhile).

        A move starts when the policy chooses another split, waits until the cloud has acknowledged every
        training batch (all trained at the old split), then asks the cloud (core.repartition.EdgeMove).
        """
        if self.split_policy is None:
            return False
        now = time.monotonic()
        with self._move_lock:
            if not self.mover.busy:
                with self._lock:
                    current, step = self.trainer.split, self.trainer.step
                if not self.mover.want(self.split_policy.choose(SplitContext(step=step)), current, now):
                    return False
                # Batches not sent yet are at the old split: after the move nobody could train them.
                discarded = self.outbox.discard_bulk()
                self.move_discarded += discarded
                why = getattr(self.split_policy, "reason", "")
                self.get_logger().info(f"moving the split from {current.split_point} to "
                                       f"{self.mover.target.split_point}{f' ({why})' if why else ''}: {discarded} "
                                       "training batches not sent dropped, draining those sent")
            drained = len(self.unacked) == 0 and not self.outbox.holds_bulk()
            with self._lock:
                request = self.mover.request(drained, now,
                                             lambda to: self.trainer.movable.export(to, self.trainer.optimizer))
                current = self.trainer.split
            if request is not None:
                msg = WeightSync(robot_id=self.robot_id, move_id=request.move_id, kind=WeightSync.KIND_MOVE,
                                 from_split=current.split_point, split_point=request.to.split_point,
                                 bits=request.to.bits, state=request.state)
                msg.header.stamp = self.get_clock().now().to_msg()
                self.weights_pub.publish(self.auth.sign("weights", msg))
            return self.mover.busy

    def cloud_alive(self) -> bool:
        if self._last_heartbeat is None:
            return False
        age = (self.get_clock().now() - self._last_heartbeat).nanoseconds / 1e9
        return age <= self.config.heartbeat_timeout_s

    def _count_consumed(self, done: bool, n: int = 1) -> None:
        if done:
            with self._consumed_lock:
                self.consumed += n
                self.consumed_pub.publish(UInt64(data=self.consumed))

    # -- worker thread ----------------------------------------------------------------------------
    def work_once(self) -> None:
        self.infer_queue.wait(0.02)
        moving = self._moving()
        items = self.infer_queue.take(self.config.infer_batch)
        if items:
            self._infer(items, moving)
        if moving:
            return
        batch = self.train_buffer.draw(self.config.batch_size)
        if batch:
            self._train(batch)
        elif self.replay_pacer.due() and (batch := self.train_buffer.draw_replay(self.config.batch_size)):
            self._train(batch, replay_only=True)
            self.replay_pacer.took()

    def _infer(self, items, moving: bool = False) -> None:
        headers = [h for h, _ in items]
        stamps = [(h.stamp.sec, h.stamp.nanosec) for h in headers]
        with self._lock:  # while the split moves the cloud could not decode them: the edge answers alone
            answers = self.trainer.answer(held_to_tensor([s for _, s in items]), frame_stamps=tuple(stamps),
                                          offload="never" if moving else None, robot_id=self.robot_id)
        for header, c, p, exit_index, sent in zip(headers, answers.classes, answers.confidence, answers.exit_index,
                                                  answers.offloaded):
            # A frame kept here says so: the fallback serves it at once instead of waiting for the cloud.
            self.prediction_pub.publish(conversions.prediction_msg(
                header.stamp, header.frame_id, c, p, Prediction.SOURCE_EDGE, seconds_since(self, header.stamp),
                self.robot_id, exit_index=exit_index, reason=0 if sent else NOT_OFFLOADED))
            self.exit_answers[exit_index] += 1
        sent = int(answers.offloaded.sum())
        self.offloaded += sent
        self.kept += len(items) - sent
        if answers.payload is not None:
            last = [h for h, s in zip(headers, answers.offloaded) if s][-1]
            msg = conversions.feature_msg(answers.payload, last.stamp, conversions.PURPOSE_INFER)
            self.outbox.put(answers.payload.wire_bits, msg, urgent=True)
        self._count_consumed(True, len(items))

    def _train(self, items, replay_only: bool = False) -> None:
        images = torch.stack([s for s, _ in items])
        labels = torch.tensor([y for _, y in items], dtype=torch.int64)
        start = time.perf_counter()
        with self._lock:
            result, payload = self.trainer.train_step(images, labels, robot_id=self.robot_id)
            step = self.trainer.step
        if isinstance(self.split_policy, OnlineSplit) and not replay_only:
            with self._move_lock:
                self._batch_cost[payload.seq] = (time.perf_counter() - start) / len(items)
                _forget_oldest(self._batch_cost, 4 * self.config.unacked_max + 64)
        self.last_loss = result.loss
        if replay_only:  # idle compute stays on the edge: the link carries new frames (the cloud replays its own)
            self.checkpoint_due(step)
            return
        stamp = self.get_clock().now().to_msg()
        self.outbox.put(payload.wire_bits, conversions.feature_msg(payload, stamp, conversions.PURPOSE_TRAIN))
        metrics = TrainingMetrics(role="edge", step=step, seq=payload.seq, robot_id=self.robot_id, loss=result.loss,
                                  accuracy=result.correct / result.samples, samples=step * self.config.batch_size)
        metrics.header.stamp = stamp
        self.metrics_pub.publish(metrics)
        self.checkpoint_due(step)

    def _send(self) -> None:
        if not self.cloud_alive():
            self.outbox.expire()  # store: training batches wait for the cloud (within limits)
            return
        for bits, msg in self.unacked.due():
            self.outbox.put(bits, msg, resend=True)
        for msg in self.outbox.pop_sendable(self.bucket, max_bulk=min(4, self.unacked.room())):
            self.feature_pub.publish(self.auth.sign("features", msg))  # a resend is signed anew
            self.features_sent += 1
            if msg.purpose == conversions.PURPOSE_TRAIN:
                self.unacked.sent(msg.seq, len(msg.data) * 8 + 32, msg)
                with self._move_lock:
                    self._sent_at.setdefault(msg.seq, time.monotonic())
                    _forget_oldest(self._sent_at, 4 * self.config.unacked_max + 64)

    # -- status -----------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"acked_seq": self.unacked.acked_seq}

    def restore_extra(self, state: dict) -> None:
        self.unacked.acked_seq = int(state.get("acked_seq", 0))

    def status(self) -> dict:
        return {**super().status(), "robot_id": self.robot_id, "frames": self.frames, "consumed": self.consumed,
                "buffer_fill": len(self.train_buffer),
                "buffer_size": self.train_buffer.maxlen, "infer_queue": len(self.infer_queue),
                "dropped_train_buffer": self.train_buffer.dropped,
                "replayed": getattr(self.train_buffer, "replayed", 0), "dropped_infer_queue": self.infer_queue.dropped,
                "outbox": len(self.outbox), "outbox_dropped": self.outbox.dropped,
                "outbox_expired": self.outbox.expired, "infer_stale": self.outbox.stale,
                "outbox_spilled": self.outbox.spilled,
                "spill_errors": self.outbox.spill_errors, "spill_recovered": self.outbox.recovered,
                "spill_torn": getattr(self.spill, "torn", 0), "spill_foreign": getattr(self.spill, "foreign", 0),
                "features_sent": self.features_sent, "coding": self.config.coding,
                "split_point": self.trainer.spec.split_point, "bits": self.trainer.spec.bits,
                "moves": self.mover.moves, "moves_abandoned": self.mover.abandoned,
                "move_discarded": self.move_discarded,
                "move_pause_ms": ",".join(f"{1e3 * s:.0f}" for s in self.mover.pauses[-5:]),
                "link_rate_seen_bps": round(self.link_meter.rate),
                "offload_policy": self.config.offload_policy, "frames_offloaded": self.offloaded,
                "frames_kept": self.kept, "exit_answers": ",".join(map(str, self.exit_answers)),
                "encode_ms": round(1e3 * self.trainer.encode_s / max(1, self.trainer.encoded), 3),
                "unacked": len(self.unacked), "acked_seq": self.unacked.acked_seq, "resent": self.unacked.resent,
                "frames_never_labelled": self.matcher.frames_expired,
                "labels_without_frame": self.matcher.labels_expired,
                "cloud_alive": self.cloud_alive()}


def _forget_oldest(pending: dict, keep: int) -> None:
    """Bound a per-batch record: batches never acknowledged (dropped) leave it too."""
    while len(pending) > keep:
        del pending[next(iter(pending))]


def main(args=None) -> None:
    run_node(EdgeNode, args)


if __name__ == "__main__":
    main()
