"""hiertrain_ros: hierarchical edge/cloud training with early exits, on ROS 2."""

__version__ = "0.1.0"
