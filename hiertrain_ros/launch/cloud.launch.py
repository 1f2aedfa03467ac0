"""Server side of a two-machine setup: the cloud node only (it never subscribes to images).

ros2 launch hiertrain_ros cloud.launch.py [params_file:=...] [model:=...] [split_point:=...]
"""

from launch import LaunchDescription

from hiertrain_ros.launch_params import configured_node, declare_params


def generate_launch_description():
    return LaunchDescription([
        *declare_params(),
        configured_node(package="hiertrain_ros", executable="cloud_node", name="cloud_node"),
    ])
