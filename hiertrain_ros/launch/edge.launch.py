"""Robot side of a two-machine setup.

Edge node and fallback (plus the camera simulator unless use_camera_sim:=false).  Run cloud.launch.py on the server with
the same params file and ROS_DOMAIN_ID.

  ros2 launch hiertrain_ros edge.launch.py [params_file:=...] [camera_topic:=/my/camera]
      [use_camera_sim:=false] [model:=...] [split_point:=...]
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration

from hiertrain_ros.launch_params import configured_node, declare_params


def generate_launch_description():
    camera = [("camera/image_raw", LaunchConfiguration("camera_topic"))]
    return LaunchDescription([
        *declare_params(),
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw"),
        DeclareLaunchArgument("use_camera_sim", default_value="true"),
        configured_node(package="hiertrain_ros", executable="camera_sim", name="camera_sim", remappings=camera,
                        condition=IfCondition(LaunchConfiguration("use_camera_sim"))),
        configured_node(package="hiertrain_ros", executable="edge_node", name="edge_node", remappings=camera),
        configured_node(package="hiertrain_ros", executable="fallback_node", name="fallback_node"),
    ])
