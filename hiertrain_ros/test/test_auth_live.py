"""A rogue participant on the DDS domain against a graph whose nodes share a key (issue 15).

It sends forged heartbeats, labels and features (unsigned, or signed with another key) and replayed copies of real
ones.  The cloud trains none of them, the edge and the fallback take no forged label, and a forged or replayed
heartbeat does not bring a dead cloud back to life.
"""

import copy
import os
import time

import pytest
from hiertrain_interfaces.msg import FeatureBatch, Heartbeat, Label

from hiertrain_ros.core.auth import Signer
from waiting import wait_for

N = 20  # messages of each kind and forgery
ROGUE_SEQ = 2**62  # above any edge's (they start from the clock, in ns)


def _signed_with(key: bytes, kind: str, msg):
    """``msg`` signed with ``key``: what a rogue without the graph's key can do best."""
    from hiertrain_interfaces.msg import Auth
    from rclpy.serialization import serialize_message

    msg.auth = Auth()
    nonce, counter, mac = Signer(key, "rogue").sign(kind, serialize_message(msg))
    msg.auth = Auth(sender="rogue", nonce=list(nonce), counter=counter, mac=list(mac))
    return msg


def _forgeries(kind: str, real, rogue_key: bytes, make):
    """N unsigned messages, N signed with another key, and the real ones (signed, already delivered) again."""
    from hiertrain_interfaces.msg import Auth

    unsigned = [make(i) for i in range(N)]
    for msg in unsigned:
        msg.auth = Auth()
    return unsigned + [_signed_with(rogue_key, kind, make(N + i)) for i in range(N)] + list(real[:N])


def _policy_topics() -> dict:
    """{(node, "publish" | "subscribe"): topic names} that config/sros2/policy.xml allows, in the root namespace."""
    import xml.etree.ElementTree as ET

    from hiertrain_ros.ros_common import config_file

    allowed: dict = {}
    for profile in ET.parse(config_file("sros2/policy.xml")).getroot().iter("profile"):
        node = profile.get("node")
        for topics in profile.iter("topics"):
            for mode in ("publish", "subscribe"):
                if topics.get(mode) == "ALLOW":
                    allowed.setdefault((node, mode), set()).update(
                        f"/{node}/{t.text[2:]}" if t.text.startswith("~/") else "/" + t.text.lstrip("/")
                        for t in topics.iter("topic"))
    return allowed


@pytest.mark.system
@pytest.mark.slow
def test_a_rogue_node_cannot_feed_or_fake_an_authenticated_graph(ros_env, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    from hiertrain_ros.ros_common import RECORD_QOS, RELIABLE_QOS, TOPICS, heartbeat_qos
    from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread

    key = tmp_path / "graph.key"
    key.write_bytes(os.urandom(32))
    rogue_key = os.urandom(32)
    overrides = {"*": {"auth_key_file": str(key)}, "camera_sim": {"rate_hz": 100.0},
                 "edge_node": {"batch_size": 16}}
    graph = Graph(GRAPHS["edge_cloud"], overrides=overrides, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    diag: dict = {}
    real = {"heartbeat": [], "labels": [], "features": []}

    def on_diag(msg):
        for status in msg.status:
            diag.setdefault(status.hardware_id, {}).update({kv.key: kv.value for kv in status.values})

    def keep(kind):
        def on(msg):
            if len(real[kind]) < N and (kind != "features" or msg.purpose == FeatureBatch.PURPOSE_TRAIN):
                real[kind].append(copy.deepcopy(msg))
        return on

    mon.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    mon.create_subscription(Heartbeat, TOPICS["heartbeat"], keep("heartbeat"), heartbeat_qos(1.0))
    mon.create_subscription(Label, TOPICS["labels"], keep("labels"), RECORD_QOS)
    mon.create_subscription(FeatureBatch, TOPICS["features"], keep("features"), RELIABLE_QOS)
    # A deadline no longer than the subscribers' (the cloud's own is 0.2 s), or DDS would not match them.
    pubs = {"heartbeat": mon.create_publisher(Heartbeat, TOPICS["heartbeat"], heartbeat_qos(0.1)),
            "labels": mon.create_publisher(Label, TOPICS["labels"], RECORD_QOS),
            "features": mon.create_publisher(FeatureBatch, TOPICS["features"], RELIABLE_QOS)}

    def count(node, key):
        return int(diag.get(node, {}).get(f"rejected_{key}", 0))

    graph.start()
    try:
        nodes = {"edge_node", "cloud_node", "fallback_node"}
        wait_for(lambda: all(len(v) >= N for v in real.values()) and mon.counts["cloud_metrics"] >= 5
                 and mon.counts["output_predictions"] >= 20 and nodes <= set(diag),
                 90, "the authenticated graph training and answering", lambda: {k: len(v) for k, v in real.items()})
        # The SROS2 policy shipped for apt users allows every topic each node really uses.
        allowed = _policy_topics()
        for node in ("camera_sim", *nodes):
            for mode, used in (("publish", mon.get_publisher_names_and_types_by_node(node, "/")),
                               ("subscribe", mon.get_subscriber_names_and_types_by_node(node, "/"))):
                assert {topic for topic, _ in used} <= allowed[(node, mode)], (node, mode, used)
                assert used or mode == "subscribe", node
        # Every node took its peers' signed messages: nothing refused so far.
        assert not [k for d in diag.values() for k, v in d.items() if k.startswith("rejected_") and v != "0"], diag
        # The nodes' subscriptions plus this process's two (the monitor's and the recorder's).
        wait_for(lambda: pubs["labels"].get_subscription_count() >= 4 and pubs["features"].get_subscription_count() >= 3
                 and pubs["heartbeat"].get_subscription_count() >= 4, 10, "the nodes to match the rogue's publishers")

        template = real["features"][0]

        def feature(i):
            msg = copy.deepcopy(template)
            msg.robot_id, msg.seq = "rogue", ROGUE_SEQ + i
            return msg

        def label(i):
            msg = copy.deepcopy(real["labels"][i % N])
            msg.class_id = (msg.class_id + 1) % 10  # a wrong label for a real frame
            return msg

        def heartbeat(i):
            msg = copy.deepcopy(real["heartbeat"][-1])
            msg.steps += 1000 + i
            return msg

        for kind, make in (("features", feature), ("labels", label), ("heartbeat", heartbeat)):
            for msg in _forgeries(kind, real[kind], rogue_key, make):
                pubs[kind].publish(msg)
                time.sleep(0.03 if kind == "heartbeat" else 0.002)  # a history of 1: give each its turn
        expected = {reason: N for reason in ("unsigned", "bad_mac", "replayed")}
        reliable = (("cloud_node", "features"), ("edge_node", "labels"), ("fallback_node", "labels"))
        heartbeats = (("edge_node", "heartbeat"), ("fallback_node", "heartbeat"))

        def refused(node, kind):
            return {reason: count(node, f"{kind}_{reason}") for reason in expected}

        # Every forged or replayed label and batch is refused and counted.  Heartbeats are best effort with a
        # history of 1, so a burst of them arrives in part: each kind of forgery reached both readers and was
        # refused (that none was taken is shown below, with the cloud dead).
        wait_for(lambda: all(refused(*r) == expected for r in reliable)
                 and all(min(refused(*h).values()) >= 1 for h in heartbeats), 20,
                 "every forgery to be refused and counted",
                 lambda: {r: refused(*r) for r in reliable + heartbeats})
        # The cloud trained none of the rogue's batches (and keeps training the robot's).
        trained_then = mon.counts["cloud_metrics"]
        wait_for(lambda: mon.counts["cloud_metrics"] >= trained_then + 3, 20, "the cloud to keep training")
        assert not [s for s in mon.trained_by_cloud() if s >= ROGUE_SEQ]

        # The cloud dies; forged and replayed heartbeats do not bring it back.
        graph.kill("cloud_node")
        wait_for(lambda: mon.link is not None and not mon.link.cloud_alive, 10, "the fallback to see the cloud gone")
        died = time.monotonic()
        before = refused("fallback_node", "heartbeat")
        for msg in _forgeries("heartbeat", real["heartbeat"], rogue_key, heartbeat):
            pubs["heartbeat"].publish(msg)
            time.sleep(0.03)  # 2 s of forgeries, each one delivered
        time.sleep(1.5)  # a status after the last forgery (1 Hz, and at every change)
        assert not [t for t, alive in mon.link_changes if alive and t > died], mon.link_changes[-5:]
        assert not mon.link.cloud_alive and mon.link.heartbeat_age > 2.0, mon.link
        assert all(refused("fallback_node", "heartbeat")[r] > before[r] for r in expected)
        assert all(graph.alive().values())
    finally:
        graph.stop()
        monitor.close()
