"""Camera simulator (the embedded default): dataset frames as rgb8 images plus stamped labels.

Every ``holdout_every``-th frame is a test-set image published without a label, so
accuracy can be measured on frames the system never trained on; its true class goes
to an evaluation topic that no node of the system reads.
"""

from __future__ import annotations

import numpy as np
from hiertrain_interfaces.msg import Label
from rclpy.node import Node
from sensor_msgs.msg import Image

from . import conversions
from .core.config import CameraConfig
from .core.data import load_dataset
from .ros_common import CAMERA_QOS, RECORD_QOS, TOPICS, declare_config, run_node


def resize_nearest(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    rows = np.arange(height) * frame.shape[0] // height
    cols = np.arange(width) * frame.shape[1] // width
    return frame[rows][:, cols]


class CameraSim(Node):
    def __init__(self, name: str = "camera_sim"):
        super().__init__(name)
        self.config = cfg = declare_config(self, CameraConfig)
        self.train = load_dataset(cfg.data, "train")
        self.test = load_dataset(cfg.data, "test")
        rng = np.random.default_rng(cfg.seed)
        self.train_order = rng.permutation(len(self.train))
        self.test_order = rng.permutation(len(self.test))
        self.sent = self.held_out = 0
        self.image_pub = self.create_publisher(Image, TOPICS["image"], CAMERA_QOS)
        self.label_pub = self.create_publisher(Label, TOPICS["labels"], RECORD_QOS)
        self.truth_pub = self.create_publisher(Label, TOPICS["truth"], RECORD_QOS)
        self.timer = self.create_timer(1.0 / cfg.rate_hz, self.tick)
        self.get_logger().info(f"publishing {cfg.data} at {cfg.rate_hz} Hz, {cfg.width_px}x{cfg.height_px} rgb8, "
                               f"every {cfg.holdout_every}th frame held out")

    def on_config_changed(self) -> None:
        self.timer.cancel()
        self.timer = self.create_timer(1.0 / self.config.rate_hz, self.tick)

    def tick(self) -> None:
        cfg = self.config
        if cfg.max_frames and self.sent >= cfg.max_frames:
            self.timer.cancel()
            self.get_logger().info(f"done: {self.sent} frames, {self.held_out} held out")
            return
        held_out = (self.sent + 1) % cfg.holdout_every == 0
        if held_out:
            i = self.test_order[self.held_out % len(self.test)]
            frame, label = self.test.images[i], int(self.test.labels[i])
            self.held_out += 1
        else:
            i = self.train_order[(self.sent - self.held_out) % len(self.train)]
            frame, label = self.train.images[i], int(self.train.labels[i])
        stamp = self.get_clock().now().to_msg()
        self.image_pub.publish(conversions.image_msg(resize_nearest(frame, cfg.height_px, cfg.width_px), stamp))
        if held_out:
            self.truth_pub.publish(conversions.label_msg(stamp, label))
        else:
            self.label_pub.publish(conversions.label_msg(stamp, label))
        self.sent += 1

    def close(self) -> None:
        pass


def main(args=None) -> None:
    run_node(CameraSim, args)


if __name__ == "__main__":
    main()
