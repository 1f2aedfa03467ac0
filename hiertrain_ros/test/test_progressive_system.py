"""Progressive answering on real DDS (issue 12): a sure edge answers alone, and no inference batch leaves it."""

import time

import pytest

from hiertrain_interfaces.msg import Prediction
from hiertrain_ros.core.fallback import NOT_OFFLOADED, REASON_SOLE
from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread
from waiting import wait_for

pytestmark = [pytest.mark.system, pytest.mark.slow]

GRACE_S = 3.0  # the fallback's wait for a cloud answer: long, so that waiting for one would show


def test_a_sure_edge_answers_at_once_and_only_training_batches_leave_it(ros_env, tmp_path):
    # Two edge exits, c_thr 0: the first exit is always sure, so with "unsure" no frame is offloaded.
    overrides = {"camera_sim": {"rate_hz": 100.0},
                 "edge_node": {"batch_size": 16, "exits": 2, "offload_policy": "unsure", "confidence_threshold": 0.0},
                 "fallback_node": {"cloud_grace_s": GRACE_S}}
    graph = Graph(GRAPHS["edge_cloud"], overrides=overrides, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    graph.start()
    try:
        wait_for(lambda: mon.link is not None and mon.link.cloud_alive, 60, "the cloud's heartbeat at the fallback")
        # Count frames from the moment the edge's answers reach both the fallback and this monitor: an answer
        # published before a subscriber matched the edge's publisher never reaches it (volatile), and the edge
        # starts answering while discovery is still going on (seen: its first 8 answers had no output).
        wait_for(lambda: _an_edge_answer_served(mon), 30, "an edge answer served on the output")
        up = time.monotonic()
        wait_for(lambda: _answered_since(mon, up) >= 100 and mon.counts["cloud_metrics"] >= 10, 45,
                 "100 edge answers and 10 cloud training steps",
                 lambda: str(dict(mon.counts)))
        with mon._lock:
            frames = {s: t for s, t in mon.answered_at["edge"].items() if t > up}
        time.sleep(1.0)  # long enough for any output, well short of the grace period
        with mon._lock:
            edge, output = dict(mon.predictions["edge"]), dict(mon.predictions["output"])
            served_at = dict(mon.answered_at["output"])
            counts = dict(mon.counts)
        assert not [t for t, alive in mon.link_changes if t > up and not alive], "the link went down meanwhile"

        # No inference batch left the edge, and the cloud answered nothing; training batches still flowed.
        assert counts.get("infer_batches", 0) == 0 and counts.get("cloud_predictions", 0) == 0, counts
        assert counts["train_batches"] >= 10, counts
        # Every answer came from the edge's first exit and says it was not offloaded ...
        assert {edge[s][5] for s in frames} == {0} and {edge[s][4] for s in frames} == {NOT_OFFLOADED}
        # ... and the output served each of them at once, not after the grace period.
        lags = sorted(served_at[s] - t for s, t in frames.items() if s in served_at)
        missing = [round(t - up, 3) for s, t in sorted(frames.items(), key=lambda f: f[1]) if s not in served_at]
        assert len(lags) >= len(frames) - 2, (f"{len(missing)} of {len(frames)} frames without output, "
                                              f"answered by the edge this long after the path was up: {missing}")
        assert lags[-1] < 1.0 < GRACE_S, f"slowest output {lags[-1]:.3f} s after the edge's answer"
        assert {output[s][1] for s in frames if s in output} == {Prediction.SOURCE_EDGE}
        assert {output[s][4] for s in frames if s in output} == {REASON_SOLE}
        wait_for(lambda: "frames_kept" in mon.status.get("edge_node", {}), 5, "the edge's status")
        status = mon.status["edge_node"]
        assert status["offload_policy"] == "unsure" and status["frames_offloaded"] == "0", status
        assert int(status["frames_kept"]) > 0, status
        # The monitor's per-frame answers (what benchmarks/progressive_link_bench.py reads): a held-out frame's
        # output came after its edge answer, both timed from the frame's stamp; no inference bytes were counted.
        held = [a for a in mon.answers() if a["stamp_ns"] in frames and a["output"] is not None]
        assert held and all(a["output"][5] >= a["edge"][5] > 0 for a in held), held[:3]
        latency = mon.answer_latency()
        assert latency["output_kept"]["n"] >= len(held) and latency["output_offloaded"]["n"] == 0, latency
        assert mon.report()["infer_bytes"] == 0
    finally:
        codes = graph.stop()
        monitor.close()
    assert all(code == 0 for code in codes.values()), codes


def _answered_since(mon, up: float) -> int:
    with mon._lock:  # the monitor's thread adds answers meanwhile
        return sum(t > up for t in mon.answered_at["edge"].values())


def _an_edge_answer_served(mon) -> bool:
    """Whether the monitor has seen an edge answer and the output serving it: edge, fallback and monitor matched."""
    with mon._lock:
        return any(s in mon.answered_at["edge"] for s in mon.answered_at["output"])


def test_the_cloud_answers_from_its_first_sure_exit(ros_env, tmp_path):
    # Three cloud exits, c_thr 0 there: the cloud's first early exit answers every frame it gets (all of them).
    overrides = {"camera_sim": {"rate_hz": 100.0}, "edge_node": {"batch_size": 16},
                 "cloud_node": {"exits": 3, "confidence_threshold": 0.0}}
    graph = Graph(GRAPHS["edge_cloud"], overrides=overrides, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    graph.start()
    try:
        wait_for(lambda: mon.counts["cloud_predictions"] >= 50 and mon.counts["cloud_metrics"] >= 5, 60,
                 "50 cloud answers and 5 cloud training steps", lambda: str(dict(mon.counts)))
        with mon._lock:
            cloud, edge = dict(mon.predictions["cloud"]), dict(mon.predictions["edge"])
        assert {a[5] for a in cloud.values()} == {0}, "a cloud answer from another exit than the first"
        assert {a[5] for a in edge.values()} == {0} and {a[4] for a in edge.values()} == {0}  # edge: as today
        assert mon.counts["infer_batches"] > 0
    finally:
        codes = graph.stop()
        monitor.close()
    assert all(code == 0 for code in codes.values()), codes
