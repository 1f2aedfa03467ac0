"""The launch files' logic without a ``launch`` wheel (PyPI has none).

Each file is imported with small stand-ins for the ``launch`` / ``launch_ros`` classes it uses, which record what they
are given; a small resolver walks the description as ``ros2 launch`` would and turns each Node into the ROS arguments
launch_ros would start it with.  The parameters a node ends up with are then computed by rclpy itself (a node created
with those arguments), for the launch files and for the pip runner (``Graph.command``) alike.
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from hiertrain_ros.cli.launch import graph_nodes, parse_overrides
from hiertrain_ros.runner import GRAPHS, Graph

PACKAGE = Path(__file__).resolve().parents[1]  # laid out as share/hiertrain_ros: launch/, config/
PARAMS = PACKAGE / "config" / "edge_cloud.yaml"


# -- stand-ins --------------------------------------------------------------------------------------
def perform(value, context) -> str:
    """Text, a substitution, or a list of them (concatenated), as launch's perform_substitutions."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "".join(perform(v, context) for v in value)
    return value.perform(context)


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        if self.name not in context:
            raise KeyError(f"launch configuration {self.name!r} is not set")
        return context[self.name]


class PathJoinSubstitution:
    def __init__(self, parts):
        self.parts = parts

    def perform(self, context):
        return str(Path(*(perform(p, context) for p in self.parts)))


class FindPackageShare:
    def __init__(self, package):
        self.package = package

    def perform(self, context):
        assert self.package == "hiertrain_ros", self.package
        return str(PACKAGE)


class IfCondition:
    def __init__(self, predicate):
        self.predicate = predicate

    def evaluate(self, context) -> bool:
        value = perform(self.predicate, context).lower()
        if value not in ("true", "false", "1", "0"):
            raise ValueError(f"IfCondition needs true/false/1/0, got {value!r}")
        return value in ("true", "1")


class Action:
    def __init__(self, condition=None):
        self.condition = condition


class DeclareLaunchArgument(Action):
    def __init__(self, name, default_value=None, description=""):
        super().__init__()
        self.name, self.default_value = name, default_value


class IncludeLaunchDescription(Action):
    def __init__(self, source, launch_arguments=()):
        super().__init__()
        self.source, self.launch_arguments = source, list(launch_arguments)


class ExecuteProcess(Action):
    def __init__(self, cmd, output="log"):
        super().__init__()
        self.cmd = cmd


class TimerAction(Action):
    def __init__(self, period, actions):
        super().__init__()
        self.period, self.actions = period, actions


class OpaqueFunction(Action):
    def __init__(self, function, condition=None):
        super().__init__(condition)
        self.function = function


class Node(Action):
    def __init__(self, package, executable, name, parameters=(), remappings=(), ros_arguments=(), condition=None):
        super().__init__(condition)
        self.package, self.executable, self.name = package, executable, name
        self.parameters, self.remappings = list(parameters), list(remappings)
        self.ros_arguments = list(ros_arguments)


class LaunchDescription:
    def __init__(self, entities):
        self.entities = list(entities)


STAND_INS = {
    "launch": {"LaunchDescription": LaunchDescription},
    "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "ExecuteProcess": ExecuteProcess,
                       "IncludeLaunchDescription": IncludeLaunchDescription, "OpaqueFunction": OpaqueFunction,
                       "TimerAction": TimerAction},
    "launch.conditions": {"IfCondition": IfCondition},
    "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration,
                             "PathJoinSubstitution": PathJoinSubstitution},
    "launch_ros.actions": {"Node": Node},
    "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
}


@pytest.fixture
def stand_ins(monkeypatch):
    for name, attributes in STAND_INS.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "hiertrain_ros.launch_params", raising=False)  # re-import on the stand-ins


# -- the resolver: what `ros2 launch hiertrain_ros FILE NAME:=VALUE ...` would start -------------------
def ros2_launch(file: str, tmp_path: Path, **arguments) -> dict:
    """{node name: (executable, ROS arguments)} plus the processes, for the launch file ``file``."""
    started = {"nodes": {}, "processes": []}
    _visit(_load(PACKAGE / "launch" / file), dict(arguments), started, tmp_path)
    return started


def _load(path: Path) -> LaunchDescription:
    spec = importlib.util.spec_from_file_location(path.name.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def _visit(entity, context: dict, started: dict, tmp_path: Path) -> None:
    if isinstance(entity, LaunchDescription):
        for child in entity.entities:
            _visit(child, context, started, tmp_path)
    elif entity.condition is not None and not entity.condition.evaluate(context):
        return
    elif isinstance(entity, DeclareLaunchArgument):
        if entity.name not in context:
            if entity.default_value is None:
                raise ValueError(f"required launch argument {entity.name} not given")
            context[entity.name] = perform(entity.default_value, context)
    elif isinstance(entity, IncludeLaunchDescription):
        given = {perform(k, context): perform(v, context) for k, v in entity.launch_arguments}
        _visit(_load(Path(perform(entity.source, context))), {**context, **given}, started, tmp_path)
    elif isinstance(entity, OpaqueFunction):
        for action in entity.function(context) or ():
            _visit(action, context, started, tmp_path)
    elif isinstance(entity, TimerAction):
        float(perform(entity.period, context))
        for action in entity.actions:
            _visit(action, context, started, tmp_path)
    elif isinstance(entity, ExecuteProcess):
        started["processes"].append([perform(part, context) for part in entity.cmd])
    elif isinstance(entity, Node):
        assert entity.package == "hiertrain_ros" and entity.name not in started["nodes"]
        started["nodes"][entity.name] = (entity.executable, _node_ros_args(entity, context, tmp_path))
    else:
        raise TypeError(f"no stand-in for {entity!r}")


def _node_ros_args(node: Node, context: dict, tmp_path: Path) -> list[str]:
    """As launch_ros's Node.

    A substitution is a params file path; a dict's substitution values are typed by YAML rules and written to a file
    under the node's name; then the remaps.
    """
    args = [perform(a, context) for a in node.ros_arguments]
    for i, params in enumerate(node.parameters):
        if isinstance(params, dict):
            values = {k: v if isinstance(v, (bool, int, float)) else yaml.safe_load(perform(v, context))
                      for k, v in params.items()}
            path = tmp_path / f"launch_params_{node.name}_{i}.yaml"
            path.write_text(yaml.safe_dump({f"/{node.name}": {"ros__parameters": values}}))
        else:
            path = perform(params, context)
        args += ["--params-file", str(path)]
    for source, target in node.remappings:
        args += ["-r", f"{perform(source, context)}:={perform(target, context)}"]
    return args + ["-r", f"__node:={node.name}"]


# -- what a node gets, computed by rclpy -------------------------------------------------------------
def node_parameters(name: str, ros_args: list[str]) -> dict:
    """Return the parameters rclpy gives node ``name`` started with ``ros_args``.

    These are rcl's YAML parsing and rclpy's precedence of /** and node entries, the real ones.
    """
    import rclpy
    from rclpy.node import Node as RclNode

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        node = RclNode(name, context=context, cli_args=["--ros-args", *ros_args], use_global_arguments=False,
                       start_parameter_services=False, allow_undeclared_parameters=True,
                       automatically_declare_parameters_from_overrides=True)
        try:
            return {k: p.value for k, p in node.get_parameters_by_prefix("").items() if k != "use_sim_time"}
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def runner_args(graph: Graph, name: str) -> tuple[str, list[str]]:
    """Return (executable, ROS arguments) of a node as the pip runner starts it."""
    cmd = graph.command(name)
    assert cmd[1:3] == ["-m", f"hiertrain_ros.{name}"], cmd  # the module behind the console script
    return name, cmd[cmd.index("--ros-args") + 1:]


@pytest.fixture
def resnet_yaml(tmp_path) -> Path:
    config = yaml.safe_load(PARAMS.read_text())
    assert config["/**"]["ros__parameters"]["model"] == "vgg16"
    config["/**"]["ros__parameters"]["model"] = "resnet18"
    path = tmp_path / "resnet.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# -- tests ------------------------------------------------------------------------------------------
def test_the_params_file_decides_the_model_when_no_argument_is_given(stand_ins, ros_env, tmp_path, resnet_yaml):
    edge_cloud = ros2_launch("edge_cloud.launch.py", tmp_path, params_file=str(resnet_yaml))["nodes"]
    replay = ros2_launch("replay.launch.py", tmp_path, bag="/data/bag", params_file=str(resnet_yaml))["nodes"]
    graph = Graph(GRAPHS["edge_cloud"], resnet_yaml)
    for name in ("edge_node", "cloud_node"):
        for executable, args in (edge_cloud[name], replay[name], runner_args(graph, name)):
            assert executable == name
            params = node_parameters(name, args)
            assert (params["model"], params["split_point"]) == ("resnet18", 3), (name, args)


def test_a_given_launch_argument_overrides_the_params_file(stand_ins, ros_env, tmp_path, resnet_yaml):
    for file in ("edge_cloud.launch.py", "edge.launch.py", "cloud.launch.py"):
        nodes = ros2_launch(file, tmp_path, params_file=str(resnet_yaml), model="vgg16", split_point="4")["nodes"]
        for name in {"edge_node", "cloud_node"} & set(nodes):
            params = node_parameters(name, nodes[name][1])
            assert (params["model"], params["split_point"]) == ("vgg16", 4), (file, name)
            assert params["width"] == 0.25  # the rest still from the params file


@pytest.mark.parametrize("given", [{}, {"model": "resnet18", "split_point": "2"}])
def test_launch_file_and_pip_runner_give_every_node_the_same_parameters(stand_ins, ros_env, tmp_path, given):
    launched = ros2_launch("edge_cloud.launch.py", tmp_path, **given)["nodes"]
    graph = Graph(GRAPHS["edge_cloud"], PARAMS, parse_overrides([f"{k}={v}" for k, v in given.items()]))
    assert set(launched) == set(graph.nodes)
    for name in graph.nodes:
        executable, args = launched[name]
        from_launch = node_parameters(name, args)
        assert from_launch == node_parameters(name, runner_args(graph, name)[1]), name
        assert executable == name
        assert from_launch["model"] == given.get("model", "vgg16")
        # the node's own section of the params file counts too (camera_sim has one, cloud_node another)
        assert set(yaml.safe_load(PARAMS.read_text())[name]["ros__parameters"]) <= set(from_launch)


def _remaps(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "-r" and not args[i + 1].startswith("__node:=")]


def test_camera_topic_and_no_simulator_match_between_launch_file_and_runner(stand_ins, tmp_path):
    launched = ros2_launch("edge.launch.py", tmp_path, camera_topic="/robot/cam", use_camera_sim="false")["nodes"]
    nodes, remaps = graph_nodes("edge", "/robot/cam", camera_sim=False)
    assert set(launched) == set(nodes) == {"edge_node", "fallback_node"}
    graph = Graph(nodes, PARAMS, remaps=remaps)
    for name in nodes:
        assert _remaps(launched[name][1]) == _remaps(runner_args(graph, name)[1])
    assert _remaps(launched["edge_node"][1]) == ["camera/image_raw:=/robot/cam"]
    with_sim = ros2_launch("edge.launch.py", tmp_path, camera_topic="/robot/cam")["nodes"]
    nodes, remaps = graph_nodes("edge", "/robot/cam")
    assert set(with_sim) == set(nodes) and _remaps(with_sim["camera_sim"][1]) == ["camera/image_raw:=/robot/cam"]
    assert _remaps(Graph(nodes, PARAMS, remaps=remaps).command("camera_sim")) == ["camera/image_raw:=/robot/cam"]
    with pytest.raises(ValueError, match="edge node"):
        graph_nodes("cloud", "/robot/cam")


def test_replay_launch_plays_the_bag_into_edge_and_cloud_without_the_simulator(stand_ins, tmp_path):
    started = ros2_launch("replay.launch.py", tmp_path, bag="/data/bag", camera_topic="/robot/cam")
    assert set(started["nodes"]) == {"edge_node", "cloud_node", "fallback_node"}
    assert started["processes"] == [["ros2", "bag", "play", "/data/bag", "--rate", "1.0",
                                     "--remap", "/camera/image_raw:=/robot/cam"]]
    with pytest.raises(ValueError, match="bag"):
        ros2_launch("replay.launch.py", tmp_path)


def test_the_enclave_argument_puts_each_node_in_its_sros2_enclave(stand_ins, tmp_path):
    import xml.etree.ElementTree as ET

    policy = ET.parse(PACKAGE / "config" / "sros2" / "policy.xml").getroot()
    enclaves = {e.get("path") for e in policy.iter("enclave")}
    for file in ("edge_cloud.launch.py", "replay.launch.py"):
        extra = {"bag": "/data/bag"} if file.startswith("replay") else {}
        nodes = ros2_launch(file, tmp_path, enclave="/hiertrain", **extra)["nodes"]
        for name, (_, args) in nodes.items():
            assert args[:2] == ["--enclave", f"/hiertrain/{name}"] and args[1] in enclaves, (file, name, args)
        plain = ros2_launch(file, tmp_path, **extra)["nodes"]
        assert not [name for name, (_, args) in plain.items() if "--enclave" in args]
