"""colcon.

Both packages build from the PyPI wheels (colcon and the ament/rosidl build tools come from requirements.txt) in a
workspace of their own, and a node and the pip runner run from its install space with nothing but the install's setup
script: no source tree on any path.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from waiting import wait_for

pytestmark = [pytest.mark.system, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra) -> dict:
    """Return this environment less anything pointing at the source tree, the venv's tools first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def _sourced(install: Path, *cmd) -> list:
    """``cmd`` as a user runs it after ``source install/setup.bash``."""
    return ["bash", "-c", f'source "{install}/setup.bash" && exec "$@"', "bash", *map(str, cmd)]


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    workspace = tmp_path_factory.mktemp("colcon_ws")
    for package in ("hiertrain_interfaces", "hiertrain_ros"):
        shutil.copytree(ROOT / package, workspace / "src" / package,
                        ignore=shutil.ignore_patterns("build", "__pycache__", "*.egg-info", ".pytest_cache"))
    # The wheels' prefix (the venv) is the underlay, as /opt/ros/<distro> is for apt users.
    proc = subprocess.run(["colcon", "build"], cwd=workspace, env=_env(AMENT_PREFIX_PATH=sys.prefix),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workspace / "install"


def test_the_install_space_is_what_runs(install, tmp_path):
    share = install / "hiertrain_ros" / "share" / "hiertrain_ros"
    probe = ("import hiertrain_interfaces.msg, hiertrain_ros\n"
             "from hiertrain_ros.ros_common import config_file\n"
             "print(hiertrain_ros.__file__, hiertrain_interfaces.msg.__file__,"
             " config_file('edge_cloud.yaml'), config_file('fastdds_large_data.xml'))")
    proc = subprocess.run(_sourced(install, "python", "-c", probe), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    module, messages, params, profile = map(Path, proc.stdout.split())
    assert module.is_relative_to(install / "hiertrain_ros") and messages.is_relative_to(install)
    assert (params, profile) == (share / "config" / "edge_cloud.yaml", share / "config" / "fastdds_large_data.xml")
    assert (share / "launch" / "edge_cloud.launch.py").is_file()


def test_a_node_runs_from_the_install_space_until_it_publishes(install, ros_env, tmp_path):
    from hiertrain_ros.runner import MonitorThread

    share = install / "hiertrain_ros" / "share" / "hiertrain_ros"
    # What `ros2 run hiertrain_ros camera_sim --ros-args --params-file ...` starts.
    node = subprocess.Popen(_sourced(install, install / "hiertrain_ros" / "lib" / "hiertrain_ros" / "camera_sim",
                                     "--ros-args", "--params-file", share / "config" / "edge_cloud.yaml"),
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monitor = MonitorThread()
    try:
        wait_for(lambda: monitor.node.counts["labels"] >= 5 and monitor.node.counts["held_out_frames"] >= 1, 120,
                 "labels and held-out truth from camera_sim")
    finally:
        monitor.close()
        node.send_signal(signal.SIGINT)
        out, _ = node.communicate(timeout=30)
    assert node.returncode == 0, out[-3000:]


def test_the_pip_runner_runs_the_graph_from_the_install_space(install, ros_env, tmp_path):
    runner = install / "hiertrain_ros" / "lib" / "hiertrain_ros" / "hiertrain"
    proc = subprocess.run(_sourced(install, runner, "launch", "edge_cloud", "--duration", "60", "--json",
                                   tmp_path / "report.json", "--log-dir", tmp_path / "logs"),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"with {install}/hiertrain_ros/share/hiertrain_ros/config/edge_cloud.yaml" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["exit_codes"] == dict.fromkeys(("camera_sim", "edge_node", "cloud_node", "fallback_node"), 0)
    assert report["counts"]["edge_predictions"] > 0 and report["counts"]["cloud_predictions"] > 0, report["counts"]
