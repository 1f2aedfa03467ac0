"""Fallback node.

One output prediction topic, served while the cloud's heartbeat is fresh by the better of the edge's and the cloud's
answer (judged on the labels), and by the edge's early exit otherwise; publishes the link status and the paths'
prequential accuracy.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from hiertrain_interfaces.msg import AdaptationMetrics, Heartbeat, Label, LinkStatus, Prediction
from rclpy.node import Node
from rclpy.event_handler import SubscriptionEventCallbacks

from .core.config import FallbackConfig
from .core.fallback import NOT_OFFLOADED, FallbackArbiter
from .core.metrics import PATHS
from .ros_common import (LATCHED_QOS, RECORD_QOS, TOPICS, MessageAuth, Rejections, declare_config, diagnostic,
                         heartbeat_qos, resolve_robot_id, run_node, stamp_ns)

REASONS = ("sole", "calibrated", "recent_accuracy")  # Prediction.REASON_*, in order


class FallbackNode(Node):
    def __init__(self, name: str = "fallback_node"):
        super().__init__(name)
        self.config = cfg = declare_config(self, FallbackConfig)
        self.arbiter = FallbackArbiter(cfg.heartbeat_timeout_s, cfg.cloud_grace_s,
                                       robot_id=resolve_robot_id(self, cfg.robot_id), policy=cfg.arbiter,
                                       recent_window=cfg.recent_window, calibration_bins=cfg.calibration_bins,
                                       calibration_horizon=cfg.calibration_horizon,
                                       calibration_min=cfg.calibration_min, calibration_z=cfg.calibration_z,
                                       override_guard=cfg.override_guard, history=cfg.metrics_history,
                                       serve=self._with_reason)
        self.rejections = Rejections(self)
        self.auth = MessageAuth(self, cfg.auth_key_file, self.get_fully_qualified_name(), self.rejections)
        self.served = {Prediction.SOURCE_EDGE: 0, Prediction.SOURCE_CLOUD: 0}
        self._alive = None

        self.output_pub = self.create_publisher(Prediction, TOPICS["prediction"], RECORD_QOS)
        self.status_pub = self.create_publisher(LinkStatus, TOPICS["link_status"], LATCHED_QOS)
        self.metrics_pub = self.create_publisher(AdaptationMetrics, TOPICS["adaptation"], RECORD_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # The deadline event wakes us the moment a heartbeat period is missed; the poll timer
        # catches the rest (and a cloud that never came).
        events = SubscriptionEventCallbacks(deadline=lambda _event: self.poll())
        self.create_subscription(Heartbeat, TOPICS["heartbeat"], self.on_heartbeat,
                                 heartbeat_qos(cfg.heartbeat_timeout_s), event_callbacks=events)
        self.create_subscription(Prediction, TOPICS["edge_prediction"], self.on_edge, RECORD_QOS)
        self.cloud_sub = self.create_subscription(Prediction, TOPICS["cloud_prediction"], self.on_cloud, RECORD_QOS)
        self.create_subscription(Label, TOPICS["labels"], self.on_label, RECORD_QOS)
        self.create_timer(1.0 / cfg.poll_hz, self.poll)
        self.create_timer(1.0, self.publish_status)
        self.create_timer(1.0 / cfg.metrics_hz, self.publish_metrics)

    def on_config_changed(self) -> None:
        self.arbiter.grace = self.config.cloud_grace_s
        self.arbiter.policy = self.config.arbiter

    @staticmethod
    def _with_reason(msg: Prediction, reason: int) -> Prediction:
        msg.reason = reason
        return msg

    def on_label(self, msg: Label) -> None:
        if not self.auth.check("labels", msg):
            return
        stamp = stamp_ns(msg.header.stamp)
        if msg.class_id < 0 or stamp <= 0:
            self.rejections("label", f"class_id {msg.class_id} at stamp {stamp}: needs a class >= 0 and a frame stamp")
            return
        self.arbiter.on_label(stamp, msg.class_id, msg.segment)

    def on_heartbeat(self, msg: Heartbeat) -> None:
        if not self.auth.check("heartbeat", msg):  # a forged heartbeat must not keep a dead cloud alive
            return
        # A cloud whose answers cannot reach us yet (its prediction publisher not matched: a
        # restarted cloud still being discovered) is not up: waiting for its answers would only
        # delay the edge's by the grace period.
        if self.cloud_sub.get_publisher_count() == 0:
            return
        self.arbiter.heartbeat()
        if not self._alive:
            self.poll()

    def on_edge(self, msg: Prediction) -> None:
        # An answer the edge did not offload goes out now: no cloud answer will come for it.
        self._publish(self.arbiter.on_edge(stamp_ns(msg.header.stamp), msg, msg.class_id, msg.confidence,
                                           offloaded=msg.reason != NOT_OFFLOADED))

    def on_cloud(self, msg: Prediction) -> None:
        self._publish(self.arbiter.on_cloud(stamp_ns(msg.header.stamp), msg, msg.robot_id, msg.class_id,
                                            msg.confidence))

    def poll(self) -> None:
        due, alive = self.arbiter.poll()
        self._publish(due)
        if alive != self._alive:
            self._alive = alive
            up = ("cloud is up: serving the cloud's answers" if self.config.arbiter == "cloud_first"
                  else "cloud is up: serving the likelier right of the edge's and the cloud's answers")
            self.get_logger().info(up if alive else "cloud heartbeat lost: serving the edge's early exit")
            self.publish_status()

    def _publish(self, predictions) -> None:
        for p in predictions:
            self.output_pub.publish(p)
            self.served[p.source] += 1

    def publish_status(self) -> None:
        alive = self.arbiter.cloud_alive()
        age = self.arbiter.heartbeat_age()
        msg = LinkStatus(cloud_alive=alive, heartbeat_age=min(age, 1e9), outages=self.arbiter.outages,
                         serving=Prediction.SOURCE_CLOUD if alive else Prediction.SOURCE_EDGE)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)

    def publish_metrics(self) -> None:
        """Publish the paths' prequential accuracy (topic).

        On /diagnostics also the whole run's accuracy and the output's recovery after the last change.
        """
        now = self.arbiter.adaptation()
        current, recent = now["segment_accuracy"], now["recent_accuracy"]
        msg = AdaptationMetrics(robot_id=self.arbiter.robot_id, segment=now["segment"], paths=list(PATHS),
                                prequential_accuracy=[_nan(current[p][0]) for p in PATHS],
                                recent_accuracy=[_nan(recent[p]) for p in PATHS],
                                frames=[current[p][1] for p in PATHS])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.metrics_pub.publish(msg)
        last = now["recovery"][-1]["frames"] if now["recovery"] else None
        values = {"segment": now["segment"], "policy": self.config.arbiter,
                  "recovery_frames_last_change": "" if last is None else last}
        values.update({f"served_{name}": n for name, n in zip(REASONS, now["reasons"])})
        values["served_not_offloaded"] = self.arbiter.not_offloaded  # edge answers kept on the edge (in sole)
        values.update({f"overrides_{k}": _fmt(v) if isinstance(v, float) else v for k, v in now["overrides"].items()})
        values.update({f"rejected_{k}": n for k, n in self.rejections.counts.items()})
        for p in PATHS:
            values[f"{p}_prequential"] = _fmt(now["accuracy"][p][0])
            values[f"{p}_scored"] = now["accuracy"][p][1]
            values[f"{p}_prequential_segment"] = _fmt(current[p][0])
            values[f"{p}_recent"] = _fmt(recent[p])
        self.diagnostics_pub.publish(diagnostic(self, "adaptation", values))

    def close(self) -> None:
        pass


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def main(args=None) -> None:
    run_node(FallbackNode, args)


if __name__ == "__main__":
    main()
