"""Outages on real DDS: the cloud process is frozen (SIGSTOP) for 5 s and for 30 s.

Nothing produced during the outage may be lost or trained twice, and the output
prediction topic must keep answering.
"""

import time
from collections import Counter

import pytest

from hiertrain_ros.runner import GRAPHS, Graph, MonitorThread, longest_gap
from waiting import wait_for

pytestmark = [pytest.mark.system, pytest.mark.slow]

RATE_HZ = 100.0
OVERRIDES = {"camera_sim": {"rate_hz": RATE_HZ}, "edge_node": {"batch_size": 16}}



@pytest.mark.parametrize("outage_s", [5, 30])
def test_outage_loses_nothing_and_keeps_answering(ros_env, tmp_path, outage_s, record_property):
    overrides = OVERRIDES
    if outage_s == 30:  # the long outage stores on disk beyond ~4 batches in memory
        overrides = {**OVERRIDES, "edge_node": {**OVERRIDES["edge_node"], "spill_dir": str(tmp_path / "spill"),
                                                "outbox_memory_bits": 1e6}}
    graph = Graph(GRAPHS["edge_cloud"], overrides=overrides, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    graph.start()
    try:
        # Steady state first: the cloud training and the link up for a while.
        wait_for(lambda: len(mon.trained_seqs["cloud"]) >= 10 and mon.link_changes and mon.link_changes[-1][1]
                 and time.monotonic() - mon.link_changes[-1][0] > 2.0, 90, "the cloud training")
        start = time.monotonic()
        produced_before = len(mon.trained_seqs["edge"])
        graph.pause("cloud_node")
        time.sleep(outage_s)
        produced_during = len(mon.trained_seqs["edge"]) - produced_before
        spilled_in_outage = set((tmp_path / "spill").iterdir()) if outage_s == 30 else set()
        # The time before the signal: the fallback can see the cloud back and say so before this thread
        # runs again (a link-up stamped before ``resumed`` was missed and the wait timed out, 1 run in 4).
        resumed = time.monotonic()
        graph.resume("cloud_node")
        wait_for(lambda: any(alive and t > resumed for t, alive in mon.link_changes), 60, "the link back")
        time.sleep(2.0)
        expected = list(mon.trained_seqs["edge"])
        try:
            wait_for(lambda: set(expected) <= mon.trained_by_cloud(), 90,
                     "the cloud to train every batch the edge produced")
        except AssertionError as exc:
            missing = sorted(set(expected) - mon.trained_by_cloud())
            order = {seq: i for i, seq in enumerate(expected)}
            raise AssertionError(f"{exc}: {len(missing)} of {len(expected)} missing, at edge positions "
                                 f"{[order[s] for s in missing][:20]}; edge {mon.status.get('edge_node')}; "
                                 f"cloud {mon.status.get('cloud_node')}") from None
        if outage_s == 30:  # a batch's file goes when the cloud acknowledges the batch
            spill = tmp_path / "spill"
            wait_for(lambda: not spilled_in_outage & set(spill.iterdir()), 10, "the outage's files removed")
        end = time.monotonic()
    finally:
        graph.stop()
        monitor.close()

    cloud = Counter(mon.trained_seqs["cloud"])
    assert produced_during > 5, "the edge must keep training during the outage"
    assert not [s for s, n in cloud.items() if n > 1], "a batch was trained twice"
    assert set(expected) <= mon.trained_by_cloud()
    # The output topic never went quiet for longer than detection plus one frame.
    outputs = [(t, source) for t, source in mon.output_times if start - 1.0 <= t <= end]
    gap, i = longest_gap([t for t, _ in outputs])
    edge = [t for t in mon.edge_times if start - 1.0 <= t <= end]
    edge_gap, j = longest_gap(edge)
    where = (f"after output {i} ({'cloud' if outputs[i][1] else 'edge'}) at {outputs[i][0] - start:+.3f} s, "
             f"the edge's own longest silence {edge_gap:.3f} s at {edge[j] - start:+.3f} s, "
             f"next from {'cloud' if outputs[i + 1][1] else 'edge'}; frozen at 0, resumed at {resumed - start:+.3f} s, "
             f"link changes {[(round(t - start, 3), up) for t, up in mon.link_changes if t >= start - 1.0]}")
    record_property("max_output_gap_s", round(gap, 3))  # in --junitxml: the margin over many runs (issue 15)
    record_property("max_edge_gap_s", round(edge_gap, 3))
    assert gap <= 0.3 + 1.0 / RATE_HZ, f"output gap of {gap:.3f} s {where}"
    if outage_s == 30:
        assert mon.peaks["edge_node.outbox_spilled"] > 0, "the store went to disk"
        # The backlog leaves the store at the pace the cloud trains (the edge's in-flight window),
        # so batches made since may still wait there: the outage's own files must be gone.
        assert spilled_in_outage, "the outage's batches waited on disk"


def test_what_the_edge_stored_on_disk_survives_its_crash(ros_env, tmp_path):
    """SIGKILL the edge while the cloud is away and its batches wait on disk; start it again.

    Every whole batch file is sent and trained once; the files the crash tore are found and counted.
    """
    spill = tmp_path / "spill"
    overrides = {**OVERRIDES, "edge_node": {**OVERRIDES["edge_node"], "spill_dir": str(spill),
                                            "outbox_memory_bits": 0.0}}  # every training batch waits on disk
    graph = Graph(GRAPHS["edge_cloud"], overrides=overrides, log_dir=tmp_path / "logs")
    monitor = MonitorThread()
    mon = monitor.node
    graph.start()
    try:
        wait_for(lambda: len(mon.trained_seqs["cloud"]) >= 5, 90, "the cloud training")
        graph.pause("cloud_node")
        wait_for(lambda: len(list(spill.glob("*.spill"))) >= 10, 30, "batches stored on disk")
        graph.kill("edge_node")
        files = sorted(spill.glob("*.spill"))
        # What a crash can leave besides whole files: one torn, and a write cut before its rename.
        files[-1].write_bytes(files[-1].read_bytes()[:100])
        (spill / "00000000000000000001.spill.tmp").write_bytes(b"half a write")
        stored = {int(path.stem) for path in files[:-1]}
        graph.resume("cloud_node")
        graph.start("edge_node")
        wait_for(lambda: stored <= mon.trained_by_cloud(), 90, "the stored batches trained",
                 lambda: f"{len(stored - mon.trained_by_cloud())} of {len(stored)} not; edge "
                         f"{mon.status.get('edge_node')}")
        wait_for(lambda: not set(spill.glob("*")) & set(files), 10, "their files removed once acknowledged")
        time.sleep(1.0)  # a second copy would be trained by now
        status = mon.status.get("edge_node", {})
    finally:
        graph.stop()
        monitor.close()
    twice = [seq for seq, n in Counter(mon.trained_seqs["cloud"]).items() if n > 1]
    assert not twice, f"trained twice: {twice}"
    # (A third torn file is possible: the kill can land in a write.)
    assert int(status.get("spill_recovered", -1)) == len(stored) and int(status.get("spill_torn", 0)) >= 2, status
