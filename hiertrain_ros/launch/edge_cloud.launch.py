"""The whole graph on one machine: edge.launch.py (camera simulator, edge, fallback)
plus cloud.launch.py, sharing one params file.

  ros2 launch hiertrain_ros edge_cloud.launch.py [params_file:=...] [camera_topic:=/my/camera]
      [model:=vgg16] [split_point:=3] [use_camera_sim:=false]
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "params_file": PathJoinSubstitution([FindPackageShare("hiertrain_ros"), "config", "edge_cloud.yaml"]),
    "camera_topic": "/camera/image_raw",
    "model": "vgg16",
    "split_point": "3",
    "use_camera_sim": "true",
}


def generate_launch_description():
    forwarded = {name: LaunchConfiguration(name) for name in ARGUMENTS}
    launch_dir = PathJoinSubstitution([FindPackageShare("hiertrain_ros"), "launch"])
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default) for name, default in ARGUMENTS.items()],
        IncludeLaunchDescription(PathJoinSubstitution([launch_dir, "edge.launch.py"]),
                                 launch_arguments=forwarded.items()),
        IncludeLaunchDescription(PathJoinSubstitution([launch_dir, "cloud.launch.py"]),
                                 launch_arguments={k: forwarded[k] for k in ("params_file", "model",
                                                                             "split_point")}.items()),
    ])
