"""Robot side of a two-machine setup: edge node and fallback (plus the camera simulator
unless use_camera_sim:=false).  Run cloud.launch.py on the server with the same params
file and ROS_DOMAIN_ID."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    params_file = LaunchConfiguration("params_file")
    model = {"model": LaunchConfiguration("model"),
             "split_point": ParameterValue(LaunchConfiguration("split_point"), value_type=int)}
    camera = [("camera/image_raw", LaunchConfiguration("camera_topic"))]
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution(
            [FindPackageShare("hiertrain_ros"), "config", "edge_cloud.yaml"])),
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw"),
        DeclareLaunchArgument("model", default_value="vgg16"),
        DeclareLaunchArgument("split_point", default_value="3"),
        DeclareLaunchArgument("use_camera_sim", default_value="true"),
        Node(package="hiertrain_ros", executable="camera_sim", name="camera_sim", parameters=[params_file],
             remappings=camera, condition=IfCondition(LaunchConfiguration("use_camera_sim"))),
        Node(package="hiertrain_ros", executable="edge_node", name="edge_node", parameters=[params_file, model],
             remappings=camera),
        Node(package="hiertrain_ros", executable="fallback_node", name="fallback_node", parameters=[params_file]),
    ])
