"""Replay a recording into the graph.

It runs edge.launch.py without the camera simulator, plus cloud.launch.py, plus ``ros2 bag play`` of the bag
(camera frames and stamped labels, e.g. one written by ``hiertrain bag make`` or ``ros2 bag record``).

  ros2 launch hiertrain_ros replay.launch.py bag:=/path/to/bag [rate:=1.0] [delay:=5.0]
      [params_file:=...] [camera_topic:=/camera/image_raw] [model:=...] [split_point:=...]

The bag's /camera/image_raw is played on camera_topic.  This plays with the bag's timing
(like a live camera), so a slow machine may drop frames; for a deterministic, drop-free
offline run use ``hiertrain replay BAG`` (lockstep).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, TimerAction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from hiertrain_ros.launch_params import SHARED, declare_params


def generate_launch_description():
    params = {name: LaunchConfiguration(name) for name in SHARED}
    launch_dir = PathJoinSubstitution([FindPackageShare("hiertrain_ros"), "launch"])
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"),
             "--remap", ["/camera/image_raw:=", LaunchConfiguration("camera_topic")]],
        output="screen")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("delay", default_value="5.0",
                              description="seconds to let the nodes start before playing"),
        *declare_params(),
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw"),
        IncludeLaunchDescription(PathJoinSubstitution([launch_dir, "edge.launch.py"]),
                                 launch_arguments={**params, "camera_topic": LaunchConfiguration("camera_topic"),
                                                   "use_camera_sim": "false"}.items()),
        IncludeLaunchDescription(PathJoinSubstitution([launch_dir, "cloud.launch.py"]),
                                 launch_arguments=params.items()),
        TimerAction(period=LaunchConfiguration("delay"), actions=[play]),
    ])
