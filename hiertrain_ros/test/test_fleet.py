"""Two robots, one cloud, on real DDS.

Each edge (with its own camera) runs in its robot's namespace, the cloud in the root one; the cloud-facing topics are
shared.  Every training batch of each edge must be trained once and acknowledged to that edge, and to no other.
"""

import os
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from hiertrain_interfaces.msg import FeatureBatch, Heartbeat, Prediction, TrainingMetrics

from hiertrain_ros.ros_common import RECORD_QOS, RELIABLE_QOS, TOPICS, heartbeat_qos, stamp_ns
from hiertrain_ros.runner import MonitorThread, stop_processes
from flooding import flood_cloud
from waiting import wait_for

pytestmark = [pytest.mark.system, pytest.mark.slow]

ROBOTS = ("r1", "r2")
MODEL = {"model": "vgg16", "split_point": 3, "width": 0.25, "bits": 4, "seed": 0}
PARAMS = {
    "cloud_node": {**MODEL, "checkpoint_every": 100000},
    # predict_every coprime with holdout_every; the stream ends, so that every batch can be settled.
    # infer_age_s: on a loaded machine answers come late, but each robot's must still reach the cloud.
    "edge_node": {**MODEL, "batch_size": 8, "predict_every": 3, "infer_batch": 8, "infer_age_s": 5.0,
                  "checkpoint_every": 100000},
    "camera_sim": {"rate_hz": 40.0, "max_frames": 200, "holdout_every": 5},
}


class Fleet:
    """Node processes, each with a params file of its own and, for a robot's nodes, the robot's namespace.

    The parameters sit under ``/**``, which matches the node in any namespace.
    """

    def __init__(self, tmp_path, params: dict = PARAMS):
        self.dir = tmp_path
        self.params = params
        self.procs = {}

    def start(self, node: str, namespace: str = "") -> None:
        params = self.dir / f"{namespace or 'root'}-{node}.yaml"
        params.write_text(yaml.safe_dump({"/**": {"ros__parameters": self.params[node]}}))
        cmd = [sys.executable, "-m", f"hiertrain_ros.{node}", "--ros-args", "--params-file", str(params)]
        if namespace:
            cmd += ["-r", f"__ns:=/{namespace}"]
        with open(self.dir / f"{namespace or 'root'}-{node}.log", "ab") as log:
            self.procs[(namespace, node)] = subprocess.Popen(cmd, env=os.environ, stdout=log, stderr=subprocess.STDOUT)

    def alive(self) -> dict:
        return {k: p.poll() is None for k, p in self.procs.items()}

    def stop(self, timeout: float = 60.0) -> dict:
        """SIGINT to all.

        Each must exit cleanly (code 0) within ``timeout`` s (generous: a loaded CI machine), else it is killed.
        """
        return stop_processes(self.procs, timeout)


def test_two_edges_one_cloud_keep_their_batches_apart(ros_env, tmp_path):
    monitor = MonitorThread()
    mon = monitor.node
    produced = {r: [] for r in ROBOTS}  # (seq) of each robot's training batches, from its edge's metrics
    cloud_trained = []  # (robot, seq) from the cloud's metrics
    acked = set()  # (robot, seq) from the cloud's heartbeats
    edge_status = {}  # robot -> latest diagnostics values of its edge
    edge_answers = {r: set() for r in ROBOTS}  # frame stamps each edge answered
    cloud_answers = []  # (robot, frame stamp) of the cloud's answers
    for robot in ROBOTS:
        mon.create_subscription(TrainingMetrics, f"/{robot}/{TOPICS['edge_metrics']}",
                                lambda m, r=robot: produced[r].append((m.robot_id, m.seq)), RECORD_QOS)
        mon.create_subscription(Prediction, f"/{robot}/{TOPICS['edge_prediction']}",
                                lambda m, r=robot: edge_answers[r].add(stamp_ns(m.header.stamp)), RECORD_QOS)
    mon.create_subscription(TrainingMetrics, "/" + TOPICS["cloud_metrics"],
                            lambda m: cloud_trained.append((m.robot_id, m.seq)), RECORD_QOS)
    mon.create_subscription(Prediction, TOPICS["cloud_prediction"],
                            lambda m: cloud_answers.append((m.robot_id, stamp_ns(m.header.stamp))), RECORD_QOS)
    mon.create_subscription(Heartbeat, TOPICS["heartbeat"],
                            lambda m: acked.update(zip(m.acked_robots, m.acked)), heartbeat_qos(1.0))

    def on_diagnostics(msg):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "robot_id" in values:
                edge_status[values["robot_id"]] = values

    mon.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    fleet = Fleet(tmp_path)
    try:
        fleet.start("cloud_node")
        for robot in ROBOTS:
            fleet.start("edge_node", robot)
        # Cameras once the edges are up: the streams are short, and each frame should count.
        wait_for(lambda: set(edge_status) == set(ROBOTS), 300, "both edges' diagnostics", lambda: fleet.alive())
        for robot in ROBOTS:
            fleet.start("camera_sim", robot)
        streams_end = time.monotonic() + PARAMS["camera_sim"]["max_frames"] / PARAMS["camera_sim"]["rate_hz"] + 2.0

        def settled(robot):
            """Every batch the edge made trained by the cloud and acknowledged, and no full batch left."""
            mine = {seq for _, seq in produced[robot]}
            status = edge_status.get(robot, {})
            return (len(mine) >= 10 and mine <= {seq for r, seq in cloud_trained if r == robot}
                    and status.get("unacked") == "0" and status.get("acked_seq") == str(max(mine))
                    and int(status.get("buffer_fill", 10**6)) < PARAMS["edge_node"]["batch_size"])

        def state():
            return (f"{fleet.alive()} produced {[len(v) for v in produced.values()]} "
                    f"cloud {len(cloud_trained)} status {edge_status}")

        for _ in range(2):  # settled twice, diagnostics periods apart: nothing was still on its way
            wait_for(lambda: time.monotonic() > streams_end and all(settled(r) for r in ROBOTS), 300,
                     "every batch of both robots trained and acknowledged", state)
            time.sleep(2.5)

        for robot in ROBOTS:
            assert {r for r, _ in produced[robot]} == {robot}, "an edge's batches carry its robot id"
        mine = {robot: {seq for _, seq in produced[robot]} for robot in ROBOTS}
        twice = [pair for pair, n in Counter(cloud_trained).items() if n > 1]
        assert not twice, f"trained twice: {twice}"
        for robot in ROBOTS:
            trained = {seq for r, seq in cloud_trained if r == robot}
            assert trained == mine[robot], f"{robot}: cloud trained {sorted(trained - mine[robot])} it never sent"
        assert {r for r, _ in cloud_trained} == set(ROBOTS)
        assert acked <= {(r, s) for r in ROBOTS for s in mine[r]}, "an ack names a batch its robot never made"
        assert {r for r, _ in acked} == set(ROBOTS)

        # The cloud answers each robot's frames, addressed to that robot.
        assert {r for r, _ in cloud_answers} == set(ROBOTS), Counter(r for r, _ in cloud_answers)
        for robot in ROBOTS:
            answered = {stamp for r, stamp in cloud_answers if r == robot}
            assert answered <= edge_answers[robot], f"cloud answers for {robot} name frames {robot} never sent"
        codes = fleet.stop()
        assert all(code == 0 for code in codes.values()), codes
    finally:
        fleet.stop()
        monitor.close()


def test_a_flood_from_one_publisher_starves_neither_robot(ros_env, tmp_path):
    """Two robots stream while a third publisher floods the cloud with valid batches of the largest size it takes.

    The cloud shares its training between publishers (per-robot deficit round robin on samples), so each robot's
    batches made during the flood are trained within seconds of it, and the flood is served too.
    """
    params = {**PARAMS, "edge_node": {**PARAMS["edge_node"], "predict_every": 10**8 + 1},  # training only
              "camera_sim": {**PARAMS["camera_sim"], "max_frames": 10**6}}  # streams throughout
    monitor = MonitorThread()
    mon = monitor.node
    made = {}  # (robot, seq) -> monotonic time its edge's metrics arrived: when it was made
    trained = set()  # (robot, seq) the cloud trained
    real = []  # one real training batch, the flood's template
    for robot in ROBOTS:
        mon.create_subscription(TrainingMetrics, f"/{robot}/{TOPICS['edge_metrics']}",
                                lambda m: made.setdefault((m.robot_id, m.seq), time.monotonic()), RECORD_QOS)
    mon.create_subscription(TrainingMetrics, "/" + TOPICS["cloud_metrics"],
                            lambda m: trained.add((m.robot_id, m.seq)), RECORD_QOS)
    mon.create_subscription(FeatureBatch, TOPICS["features"],
                            lambda m: real.append(m) if m.purpose == FeatureBatch.PURPOSE_TRAIN and not real else None,
                            RELIABLE_QOS)
    feature_pub = mon.create_publisher(FeatureBatch, TOPICS["features"], RELIABLE_QOS)
    fleet = Fleet(tmp_path, params)
    try:
        fleet.start("cloud_node")
        for robot in ROBOTS:
            fleet.start("edge_node", robot)
            fleet.start("camera_sim", robot)
        wait_for(lambda: all(sum(r == robot for r, _ in trained) >= 3 for robot in ROBOTS)
                 and feature_pub.get_subscription_count() >= 2,  # the cloud and this monitor
                 300, "the cloud training both robots' batches",
                 lambda: f"{fleet.alive()} made {len(made)} trained {Counter(r for r, _ in trained)}")
        start, end = flood_cloud(feature_pub, real[0])
        during = {robot: {key for key, t in list(made.items()) if key[0] == robot and start <= t <= end}
                  for robot in ROBOTS}
        wait_for(lambda: all(during[r] <= trained for r in ROBOTS), 10,
                 "both robots' batches made during the flood trained",
                 lambda: f"not trained: { {r: len(during[r] - trained) for r in ROBOTS} } of "
                         f"{ {r: len(during[r]) for r in ROBOTS} }; flood trained "
                         f"{sum(r == 'flooder' for r, _ in trained)}")
        assert all(len(during[r]) >= 10 for r in ROBOTS), {r: len(during[r]) for r in ROBOTS}
        assert any(r == "flooder" for r, _ in trained), "the flood is served too"
    finally:
        fleet.stop()
        monitor.close()
