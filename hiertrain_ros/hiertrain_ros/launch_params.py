"""What the launch files share.

The params file is the truth, and a launch argument overrides one of its values only when the user gives it
(nav2_bringup's pattern).  ``ros2 launch`` only: this module imports ``launch``, which has no wheel on PyPI.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

DEFAULT_PARAMS_FILE = PathJoinSubstitution([FindPackageShare("hiertrain_ros"), "config", "edge_cloud.yaml"])
# Launch arguments that, when given, override the params file's value for every node, as
# ``hiertrain launch --set NAME=VALUE`` does.
OVERRIDES = ("model", "split_point", "auth_key_file")
# What a launch file that includes others passes on to them.
SHARED = ("params_file", *OVERRIDES, "enclave")


def declare_params() -> list:
    """params_file, the OVERRIDES (empty unless given) and the SROS2 enclave prefix."""
    return [DeclareLaunchArgument("params_file", default_value=DEFAULT_PARAMS_FILE,
                                  description="ROS params YAML for every node"),
            *(DeclareLaunchArgument(name, default_value="", description=f"overrides the params file's {name}")
              for name in OVERRIDES),
            DeclareLaunchArgument("enclave", default_value="",
                                  description="SROS2: each node runs in the enclave ENCLAVE/<node name> (e.g. "
                                              "/hiertrain; docs/security.md); empty: none")]


def configured_node(**node_kwargs) -> OpaqueFunction:
    """Return a Node with ``params_file`` plus the OVERRIDES the user gave, decided at launch time.

    The overrides are typed by YAML rules, as ``-p NAME:=VALUE`` is.  With ``enclave:=PREFIX`` the node gets
    ``--enclave PREFIX/<name>`` (the enclaves of config/sros2/policy.xml).
    """
    def build(context):
        given = {name: LaunchConfiguration(name) for name in OVERRIDES if LaunchConfiguration(name).perform(context)}
        params = [LaunchConfiguration("params_file")] + ([given] if given else [])
        enclave = LaunchConfiguration("enclave").perform(context).rstrip("/")
        extra = {"ros_arguments": ["--enclave", f"{enclave}/{node_kwargs['name']}"]} if enclave else {}
        return [Node(parameters=params, **node_kwargs, **extra)]

    return OpaqueFunction(function=build)
