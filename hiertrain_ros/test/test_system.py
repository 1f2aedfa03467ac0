"""System tests: real node processes on real DDS, observed from a monitor node."""

import time

import pytest

from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread
from hiertrain_interfaces.msg import Prediction
from waiting import wait_for

pytestmark = [pytest.mark.system, pytest.mark.slow]

FAST = {"camera_sim": {"rate_hz": 100.0}, "edge_node": {"batch_size": 16}}



@pytest.fixture
def system(ros_env, tmp_path, request):
    arbiter = getattr(request, "param", "best")
    graph = Graph(GRAPHS["edge_cloud"], overrides={**FAST, "fallback_node": {"arbiter": arbiter}},
                  log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    graph.start()
    yield graph, monitor.node
    graph.stop()
    monitor.close()


def test_features_flow_cloud_learns_and_images_stay_on_the_edge(system):
    graph, mon = system
    wait_for(lambda: mon.counts["cloud_metrics"] >= 120, 180, "120 cloud training steps")
    report = mon.report()
    assert report["counts"]["feature_batches"] > 120
    assert report["cloud_loss_last"] < report["cloud_loss_first"] - 0.1, report
    assert report["counts"]["output_predictions"] > 100
    # Test, then train: every path answered labelled frames, scored per segment, live and in the report.
    scored = report["adaptation"]["prequential_by_segment"][0]
    assert all(scored[p]["frames"] > 50 and scored[p]["accuracy"] is not None for p in ("edge", "cloud", "output"))
    live = mon.live_adaptation
    assert live is not None and list(live.paths) == ["edge", "cloud", "output"] and min(live.frames) > 0
    # The features travelled zstd-coded (the default) and the cloud learnt from them; the edge times its coding.
    edge = mon.status["edge_node"]
    assert edge["coding"] == "zstd" and float(edge["encode_ms"]) > 0, edge

    # Privacy boundary, read from the live graph: only the edge reads the camera (its intake side node,
    # ros_common.Intake), and the cloud subscribes to no image topic at all.
    readers = {i.node_name for i in mon.get_subscriptions_info_by_topic("/camera/image_raw")}
    assert readers == {"edge_node_intake"}
    cloud_topics = mon.get_subscriber_names_and_types_by_node("cloud_node", "/")
    assert cloud_topics and not [t for t, types in cloud_topics if "sensor_msgs/msg/Image" in types]
    assert all(codes == 0 for codes in graph.stop().values())


# The hand-back to the cloud is what this checks; under the "best" policy whether the restarted
# cloud's answers are served would depend on which path is more accurate at that moment.
@pytest.mark.parametrize("system", ["cloud_first"], indirect=True)
def test_fallback_serves_edge_within_300ms_and_hands_back(system):
    graph, mon = system
    # The output must have been flowing for 2 s: the window checked below starts 1 s before the
    # kill, and the fallback can discover the edge's prediction writer a moment after the monitor
    # does (in one CI run 1.8 s after the edge activated on the loaded machine), so the edge's
    # first answers never reach it.  That is start-up, not the switch this test checks.
    wait_for(lambda: mon.link is not None and mon.link.cloud_alive and mon.counts["output_predictions"] > 50
             and len(mon.heartbeat_times) > 5 and time.monotonic() - mon.output_times[0][0] > 2.0, 90,
             "the cloud serving predictions")
    # Times taken before the kill: it returns once the process is reaped, which can take longer
    # than the fallback takes to notice.
    killed, killed_ns = time.monotonic(), time.time_ns()  # frame stamps are wall clock
    graph.kill("cloud_node")  # SIGKILL: no goodbye on the wire
    wait_for(lambda: any(not alive for t, alive in mon.link_changes if t > killed), 5, "link-down status")
    last_heartbeat = max(mon.heartbeat_times)
    down_at = next(t for t, alive in mon.link_changes if t > killed and not alive)
    assert down_at - last_heartbeat <= 0.3, f"link loss seen {down_at - last_heartbeat:.3f} s after the last heartbeat"
    wait_for(lambda: any(t > down_at and s == Prediction.SOURCE_EDGE for t, s in mon.output_times), 2,
             "edge predictions on the output topic")
    first_edge = next(t for t, s in mon.output_times if t > killed and s == Prediction.SOURCE_EDGE)
    assert first_edge - last_heartbeat <= 0.3 + 0.05, "fallback answered too late"

    graph.start("cloud_node")
    restarted = time.monotonic()
    wait_for(lambda: [t for t in mon.heartbeat_times if t > restarted], 60, "the restarted cloud's heartbeat")
    first_heartbeat = next(t for t in mon.heartbeat_times if t > restarted)
    wait_for(lambda: any(t > first_heartbeat and s == Prediction.SOURCE_CLOUD for t, s in mon.output_times), 5,
             "cloud predictions again")
    back = next(t for t, s in mon.output_times if t > first_heartbeat and s == Prediction.SOURCE_CLOUD)
    assert back - first_heartbeat <= 1.0

    # Every frame the edge answered from 1 s before the kill on got exactly one output, through
    # both switches (the frames answered in the last second still wait for theirs: snapshot first).
    with mon._lock:  # the monitor's thread adds answers meanwhile
        edge_frames = {stamp for stamp in mon.predictions["edge"] if stamp >= killed_ns - 1e9}
    time.sleep(1.0)
    with mon._lock:
        output_frames = set(mon.predictions["output"])
    assert len(edge_frames - output_frames) <= 5, "frames left without an output prediction"
    assert mon.counts["output_predictions"] == len(output_frames), "a frame got two outputs"
