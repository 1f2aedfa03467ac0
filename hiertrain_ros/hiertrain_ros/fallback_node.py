"""Fallback node: one output prediction topic, served by the cloud while its heartbeat is
fresh and by the edge's early exit otherwise; publishes the link status."""

from __future__ import annotations

from hiertrain_interfaces.msg import Heartbeat, LinkStatus, Prediction
from rclpy.node import Node
from rclpy.event_handler import SubscriptionEventCallbacks

from .core.config import FallbackConfig
from .core.fallback import FallbackArbiter
from .ros_common import LATCHED_QOS, RECORD_QOS, TOPICS, declare_config, heartbeat_qos, run_node, stamp_ns


class FallbackNode(Node):
    def __init__(self, name: str = "fallback_node"):
        super().__init__(name)
        self.config = cfg = declare_config(self, FallbackConfig)
        self.arbiter = FallbackArbiter(cfg.heartbeat_timeout_s, cfg.cloud_grace_s)
        self.served = {Prediction.SOURCE_EDGE: 0, Prediction.SOURCE_CLOUD: 0}
        self._alive = None

        self.output_pub = self.create_publisher(Prediction, TOPICS["prediction"], RECORD_QOS)
        self.status_pub = self.create_publisher(LinkStatus, TOPICS["link_status"], LATCHED_QOS)
        # The deadline event wakes us the moment a heartbeat period is missed; the poll timer
        # catches the rest (and a cloud that never came).
        events = SubscriptionEventCallbacks(deadline=lambda _event: self.poll())
        self.create_subscription(Heartbeat, TOPICS["heartbeat"], self.on_heartbeat,
                                 heartbeat_qos(cfg.heartbeat_timeout_s), event_callbacks=events)
        self.create_subscription(Prediction, TOPICS["edge_prediction"], self.on_edge, RECORD_QOS)
        self.cloud_sub = self.create_subscription(Prediction, TOPICS["cloud_prediction"], self.on_cloud, RECORD_QOS)
        self.create_timer(1.0 / cfg.poll_hz, self.poll)
        self.create_timer(1.0, self.publish_status)

    def on_config_changed(self) -> None:
        self.arbiter.grace = self.config.cloud_grace_s

    def on_heartbeat(self, _msg: Heartbeat) -> None:
        # A cloud whose answers cannot reach us yet (its prediction publisher not matched: a
        # restarted cloud still being discovered) is not up: waiting for its answers would only
        # delay the edge's by the grace period.
        if self.cloud_sub.get_publisher_count() == 0:
            return
        self.arbiter.heartbeat()
        if not self._alive:
            self.poll()

    def on_edge(self, msg: Prediction) -> None:
        self._publish(self.arbiter.on_edge(stamp_ns(msg.header.stamp), msg))

    def on_cloud(self, msg: Prediction) -> None:
        self._publish(self.arbiter.on_cloud(stamp_ns(msg.header.stamp), msg))

    def poll(self) -> None:
        due, alive = self.arbiter.poll()
        self._publish(due)
        if alive != self._alive:
            self._alive = alive
            self.get_logger().info("cloud is up: serving cloud predictions" if alive
                                   else "cloud heartbeat lost: serving the edge's early exit")
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

    def close(self) -> None:
        pass


def main(args=None) -> None:
    run_node(FallbackNode, args)


if __name__ == "__main__":
    main()
