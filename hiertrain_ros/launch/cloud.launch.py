"""Server side of a two-machine setup: the cloud node only (it never subscribes to images)."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    params_file = LaunchConfiguration("params_file")
    model = {"model": LaunchConfiguration("model"),
             "split_point": ParameterValue(LaunchConfiguration("split_point"), value_type=int)}
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution(
            [FindPackageShare("hiertrain_ros"), "config", "edge_cloud.yaml"])),
        DeclareLaunchArgument("model", default_value="vgg16"),
        DeclareLaunchArgument("split_point", default_value="3"),
        Node(package="hiertrain_ros", executable="cloud_node", name="cloud_node", parameters=[params_file, model]),
    ])
