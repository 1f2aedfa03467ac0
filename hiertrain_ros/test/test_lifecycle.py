"""Managed nodes.

Edge and cloud driven through the ROS 2 lifecycle over its real services (configure, activate, deactivate, activate
again, cleanup, shutdown), and brought to active by themselves by default (autostart).
"""

import subprocess
import sys
import time

import pytest

from waiting import wait_for

pytestmark = [pytest.mark.system, pytest.mark.slow]

TRAINERS = ("edge_node", "cloud_node")


def _call(node, srv_type, service: str, request, timeout: float = 120.0):
    client = node.create_client(srv_type, service)
    try:
        assert client.wait_for_service(timeout_sec=60.0), f"{service} not offered"
        future = client.call_async(request)
        wait_for(future.done, timeout, f"the reply of {service}")
        return future.result()
    finally:
        node.destroy_client(client)


def _state(node, target: str) -> str:
    from lifecycle_msgs.srv import GetState

    return _call(node, GetState, f"/{target}/get_state", GetState.Request()).current_state.label


def _change(node, transition: int, *targets):
    """Request the transition of every target at once and wait for all of them.

    Configure builds a model (seconds each).  Returns each target's state after it.
    """
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    clients = {t: node.create_client(ChangeState, f"/{t}/change_state") for t in targets}
    try:
        futures = {}
        for target, client in clients.items():
            assert client.wait_for_service(timeout_sec=60.0), f"{target} change_state not offered"
            futures[target] = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
        wait_for(lambda: all(f.done() for f in futures.values()), 120, f"transition {transition} of {targets}")
        assert all(f.result().success for f in futures.values()), {t: f.result() for t, f in futures.items()}
    finally:
        for client in clients.values():
            node.destroy_client(client)
    return {t: _state(node, t) for t in targets}


def _set(node, target: str, **values) -> list:
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return _call(node, SetParameters, f"/{target}/set_parameters", request, timeout=10.0).results


def _flow(mon) -> dict:
    """How many messages of each kind the running nodes have published so far."""
    with mon._lock:
        return {"features": mon.counts["feature_batches"], "heartbeats": len(mon.heartbeat_times),
                "edge_predictions": mon.counts["edge_predictions"],
                "cloud_predictions": mon.counts["cloud_predictions"], "cloud_metrics": mon.counts["cloud_metrics"]}


def _lifecycle(mon, target: str):
    return mon.status.get(target, {}).get("lifecycle")


def test_managed_nodes_pause_resume_and_release(ros_env, tmp_path):
    from lifecycle_msgs.msg import Transition

    from hiertrain_ros.runner import Graph, MonitorThread

    ckpt = tmp_path / "ckpt"
    managed = {"autostart": False, "checkpoint_dir": str(ckpt), "checkpoint_every": 1_000_000}
    overrides = {"camera_sim": {"rate_hz": 100.0}, "edge_node": {**managed, "batch_size": 16},
                 "cloud_node": managed}
    graph = Graph(("camera_sim", "edge_node", "cloud_node"), overrides=overrides, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node

    def state():
        return f"(alive {graph.alive()}, flow {_flow(mon)}, diagnostics {mon.status})"

    graph.start()
    try:
        # Unconfigured: the nodes wait, say so in their diagnostics, and publish nothing.
        assert {t: _state(mon, t) for t in TRAINERS} == dict.fromkeys(TRAINERS, "unconfigured")
        wait_for(lambda: all(_lifecycle(mon, t) == "unconfigured" for t in TRAINERS), 10,
                 "diagnostics saying unconfigured", state)
        # Settings read at configure may change until then, within their bounds; live ones after.
        [result] = _set(mon, "edge_node", batch_size=0)
        assert not result.successful and "batch_size" in result.reason, result
        [result] = _set(mon, "edge_node", batch_size=8)
        assert result.successful, result.reason
        assert _change(mon, Transition.TRANSITION_CONFIGURE, *TRAINERS) == dict.fromkeys(TRAINERS, "inactive")
        assert _flow(mon) == dict.fromkeys(_flow(mon), 0), state()
        [result] = _set(mon, "edge_node", batch_size=16)
        assert not result.successful and "start-up" in result.reason, result
        [result] = _set(mon, "edge_node", predict_every=2)
        assert result.successful, result.reason

        # Active: features, heartbeats, answers of both sides and cloud training flow.
        assert _change(mon, Transition.TRANSITION_ACTIVATE, *TRAINERS) == dict.fromkeys(TRAINERS, "active")
        wait_for(lambda: all(_flow(mon).values()), 90, "every kind of message", state)
        assert mon.count_subscribers("/camera/image_raw") == 1 and mon.count_subscribers("/hiertrain/features") == 2
        assert not ckpt.exists()

        # Inactive: a checkpoint each, then silence (the camera goes on).
        assert _change(mon, Transition.TRANSITION_DEACTIVATE, *TRAINERS) == dict.fromkeys(TRAINERS, "inactive")
        assert (ckpt / "edge.pt").exists() and (ckpt / "cloud.pt").exists()
        time.sleep(0.5)  # what was on its way before the pause
        paused = _flow(mon)
        time.sleep(2.0)
        assert _flow(mon) == paused, state()
        wait_for(lambda: all(_lifecycle(mon, t) == "inactive" for t in TRAINERS), 5, "diagnostics saying inactive",
                 state)
        # Paused, the edge does not even subscribe to the camera, nor the cloud to features
        # (the monitor's own subscription remains).
        wait_for(lambda: mon.count_subscribers("/camera/image_raw") == 0
                 and mon.count_subscribers("/hiertrain/features") == 1, 5, "the paused nodes' readers gone", state)

        # Active again: everything flows again.
        assert _change(mon, Transition.TRANSITION_ACTIVATE, *TRAINERS) == dict.fromkeys(TRAINERS, "active")
        wait_for(lambda: all(now > paused[k] for k, now in _flow(mon).items()), 60, "the flow resuming", state)

        # Cleanup releases; shutdown works from unconfigured (edge) and from active (cloud, with a checkpoint).
        assert _change(mon, Transition.TRANSITION_DEACTIVATE, *TRAINERS) == dict.fromkeys(TRAINERS, "inactive")
        assert _change(mon, Transition.TRANSITION_CLEANUP, *TRAINERS) == dict.fromkeys(TRAINERS, "unconfigured")
        wait_for(lambda: _lifecycle(mon, "edge_node") == "unconfigured" and "steps" not in mon.status["edge_node"],
                 5, "the edge's diagnostics without a trainer", state)
        assert _change(mon, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, "edge_node") == {"edge_node": "finalized"}
        assert _change(mon, Transition.TRANSITION_CONFIGURE, "cloud_node") == {"cloud_node": "inactive"}
        assert _change(mon, Transition.TRANSITION_ACTIVATE, "cloud_node") == {"cloud_node": "active"}
        (ckpt / "cloud.pt").unlink()
        assert _change(mon, Transition.TRANSITION_ACTIVE_SHUTDOWN, "cloud_node") == {"cloud_node": "finalized"}
        assert (ckpt / "cloud.pt").exists()
        assert all(graph.alive().values()), state()
        codes = graph.stop()
        assert codes == {"camera_sim": 0, "edge_node": 0, "cloud_node": 0}, codes
    finally:
        graph.stop()
        monitor.close()


def test_autostart_reaches_active_and_ctrl_c_checkpoints(ros_env, tmp_path):
    from hiertrain_ros.runner import Graph, MonitorThread

    ckpt = tmp_path / "ckpt"
    graph = Graph(TRAINERS, overrides={"*": {"checkpoint_dir": str(ckpt)}}, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    graph.start()
    try:
        assert {t: _state(mon, t) for t in TRAINERS} == dict.fromkeys(TRAINERS, "active")
        wait_for(lambda: all(_lifecycle(mon, t) == "active" for t in TRAINERS), 10, "diagnostics saying active",
                 lambda: f"{mon.status}")
        wait_for(lambda: mon.heartbeat_times, 30, "the cloud's heartbeat (an edge's features matched)")
        assert not ckpt.exists()
        codes = graph.stop()  # SIGINT: shutdown from active, through deactivate's checkpoint
        assert codes == dict.fromkeys(TRAINERS, 0), codes
        assert (ckpt / "edge.pt").exists() and (ckpt / "cloud.pt").exists()
    finally:
        graph.stop()
        monitor.close()


def test_autostart_refuses_a_bad_parameter(ros_env):
    """As a plain node would: the process ends with the reason, rather than waiting unconfigured."""
    proc = subprocess.run([sys.executable, "-m", "hiertrain_ros.edge_node", "--ros-args", "-p", "batch_size:=0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "batch_size must be > 0, got 0" in proc.stderr, proc.stderr[-2000:]
