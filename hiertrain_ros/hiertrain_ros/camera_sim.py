"""Camera simulator (the embedded default): dataset frames as rgb8 images plus stamped labels.

Every ``holdout_every``-th frame is a test-set image published without a label, so
accuracy can be measured on frames the system never trained on; its true class goes
to an evaluation topic that no node of the system reads.  With a ``scenario`` the stream
changes (classes, domain) segment by segment; labels and truth say which segment.
"""

from __future__ import annotations

from hiertrain_interfaces.msg import Label
from rclpy.node import Node
from sensor_msgs.msg import Image

from . import conversions
from .core.config import CameraConfig
from .core.data import load_dataset
from .core.frames import resize_nearest
from .core.scenarios import load_scenario, plain, stream
from .ros_common import CAMERA_QOS, RECORD_QOS, TOPICS, MessageAuth, Rejections, declare_config, run_node


class CameraSim(Node):
    def __init__(self, name: str = "camera_sim"):
        super().__init__(name)
        self.config = cfg = declare_config(self, CameraConfig)
        self.scenario = load_scenario(cfg.scenario) if cfg.scenario else plain()
        if self.scenario.uses_torch:
            import torch  # only now: without torchvision transforms the camera stays light

            torch.set_num_threads(1)  # one 32x32 frame per tick: worker threads would only contend
        self.frames = stream(self.scenario, load_dataset(cfg.data, "train"), load_dataset(cfg.data, "test"),
                             cfg.holdout_every, cfg.seed)
        self.sent = self.held_out = 0
        self.auth = MessageAuth(self, cfg.auth_key_file, self.get_name(), Rejections(self))
        self.image_pub = self.create_publisher(Image, TOPICS["image"], CAMERA_QOS)
        self.label_pub = self.create_publisher(Label, TOPICS["labels"], RECORD_QOS)
        self.truth_pub = self.create_publisher(Label, TOPICS["truth"], RECORD_QOS)
        self.timer = self.create_timer(1.0 / cfg.rate_hz, self.tick)
        self.get_logger().info(f"publishing {cfg.data} at {cfg.rate_hz} Hz, {cfg.width_px}x{cfg.height_px} rgb8, "
                               f"every {cfg.holdout_every}th frame held out"
                               + (f", scenario {cfg.scenario} ({len(self.scenario.segments)} segments, "
                                  f"{self.scenario.frames} frames)" if cfg.scenario else ""))

    def on_config_changed(self) -> None:
        self.timer.cancel()
        self.timer = self.create_timer(1.0 / self.config.rate_hz, self.tick)

    def tick(self) -> None:
        cfg = self.config
        item = None if cfg.max_frames and self.sent >= cfg.max_frames else next(self.frames, None)
        if item is None:
            self.timer.cancel()
            self.get_logger().info(f"done: {self.sent} frames, {self.held_out} held out")
            return
        stamp = self.get_clock().now().to_msg()
        self.image_pub.publish(conversions.image_msg(resize_nearest(item.frame, cfg.height_px, cfg.width_px), stamp))
        label = conversions.label_msg(stamp, item.label, item.segment)
        if item.held_out:
            self.truth_pub.publish(label)
        else:
            self.label_pub.publish(self.auth.sign("labels", label))
        self.held_out += item.held_out
        self.sent += 1

    def close(self) -> None:
        pass


def main(args=None) -> None:
    run_node(CameraSim, args)


if __name__ == "__main__":
    main()
