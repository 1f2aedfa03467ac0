"""The whole graph on one machine.

It is edge.launch.py (camera simulator, edge, fallback) plus cloud.launch.py, sharing one params file.

  ros2 launch hiertrain_ros edge_cloud.launch.py [params_file:=...] [camera_topic:=/my/camera]
      [use_camera_sim:=false] [model:=...] [split_point:=...]

model and split_point override the params file only when given.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from hiertrain_ros.launch_params import SHARED, declare_params


def generate_launch_description():
    params = {name: LaunchConfiguration(name) for name in SHARED}
    camera = {name: LaunchConfiguration(name) for name in ("camera_topic", "use_camera_sim")}
    launch_dir = PathJoinSubstitution([FindPackageShare("hiertrain_ros"), "launch"])
    return LaunchDescription([
        *declare_params(),
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw"),
        DeclareLaunchArgument("use_camera_sim", default_value="true"),
        IncludeLaunchDescription(PathJoinSubstitution([launch_dir, "edge.launch.py"]),
                                 launch_arguments={**params, **camera}.items()),
        IncludeLaunchDescription(PathJoinSubstitution([launch_dir, "cloud.launch.py"]),
                                 launch_arguments=params.items()),
    ])
