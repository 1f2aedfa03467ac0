"""Outages on real DDS: the cloud process is frozen (SIGSTOP) for 5 s and for 30 s.

Nothing produced during the outage may be lost or trained twice, and the output
prediction topic must keep answering.
"""

import time
from collections import Counter

import pytest

from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread
from waiting import wait_for

pytestmark = [pytest.mark.system, pytest.mark.slow]

RATE_HZ = 100.0
OVERRIDES = {"camera_sim": {"rate_hz": RATE_HZ}, "edge_node": {"batch_size": 16}}



@pytest.mark.parametrize("outage_s", [5, 30])
def test_outage_loses_nothing_and_keeps_answering(ros_env, tmp_path, outage_s):
    graph = Graph(GRAPHS["edge_cloud"], overrides=OVERRIDES, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    graph.start()
    try:
        wait_for(lambda: len(mon.trained_seqs["cloud"]) >= 10 and mon.link is not None and mon.link.cloud_alive,
                 90, "the cloud training")
        start = time.monotonic()
        graph.pause("cloud_node")
        time.sleep(outage_s)
        produced_during = len(mon.trained_seqs["edge"])
        graph.resume("cloud_node")
        resumed = time.monotonic()
        wait_for(lambda: any(alive and t > resumed for t, alive in mon.link_changes), 60, "the link back")
        time.sleep(2.0)
        expected = list(mon.trained_seqs["edge"])
        wait_for(lambda: set(expected) <= set(mon.trained_seqs["cloud"]), 90,
                 "the cloud to train every batch the edge produced")
        end = time.monotonic()
    finally:
        graph.stop()
        monitor.close()

    cloud = Counter(mon.trained_seqs["cloud"])
    assert produced_during > 5, "the edge must keep training during the outage"
    assert not [s for s, n in cloud.items() if n > 1], "a batch was trained twice"
    assert set(expected) <= set(cloud)
    # The output topic never went quiet for longer than detection plus one frame.
    times = [t for t, _ in mon.output_times if start - 1.0 <= t <= end]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) <= 0.3 + 1.0 / RATE_HZ, f"output gap of {max(gaps):.3f} s"
