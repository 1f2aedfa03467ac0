"""The whole graph over an emulated 3G uplink, with a real link cut (8 s and 30 s) in the middle.

``hiertrain launch edge_cloud --link 3g --outage START:SECONDS`` puts the cloud node in a
network namespace of its own behind a tbf-shaped veth, and takes the veth down for the
outage (both directions dead, as when a robot loses its modem).  The edge must keep
answering through the fallback, stay within its link budget, and the cloud must train
every batch the edge produced, once, after the link returns.
"""

import json
import re
import subprocess
import sys

import pytest

from hiertrain_ros.linkbench.netns import unavailable_reason

pytestmark = [pytest.mark.system, pytest.mark.slow]

HIERTRAIN = [sys.executable, "-c", "import sys; from hiertrain_ros.cli import main; sys.exit(main())"]
RATE_HZ = 20.0


def launch_over_3g(tmp_path, cut_s: float, duration_s: float, extra: list[str] = ()) -> tuple[str, dict]:
    """Run ``hiertrain launch edge_cloud`` with the cloud behind emulated 3G, cut at 20 s for ``cut_s``.

    Returns its output and its report; skips where link emulation is unavailable.
    """
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"link emulation unavailable: {reason}")
    report_file = tmp_path / "report.json"
    # cloud_first: these tests are about the link, and under the "best" arbiter whether the cloud's
    # answers are served at all depends on which path happens to be more accurate (in one CI run
    # the random-start cloud never was: 0 outputs from it).
    settings = {"camera_sim.rate_hz": RATE_HZ, "edge_node.batch_size": 8, "edge_node.link_budget_bps": 0.9e6,
                "fallback_node.arbiter": "cloud_first"}
    cmd = HIERTRAIN + ["launch", "edge_cloud", "--link", "3g", *extra, "--duration", str(duration_s),
                       "--outage", f"20:{cut_s}", "--json", str(report_file), "--log-dir", str(tmp_path / "logs")]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(report_file.read_text())


# (cut length, run length): 30 s outlasts DDS's 20 s lease, so the participants must find each
# other again; the run leaves time to send what the edge stored during the cut.
@pytest.mark.parametrize("cut_s, duration_s", [(8, 50), (30, 95)])
def test_graph_keeps_answering_through_a_link_cut_and_loses_no_batch(tmp_path, ros_env, cut_s, duration_s,
                                                                      record_property):
    _, report = launch_over_3g(tmp_path, cut_s, duration_s)
    link, batches = report["link"], report["batches"]
    record_property("max_output_gap_s", report["max_output_gap_s"])  # in --junitxml (issue 15)
    record_property("max_edge_gap_s", report["max_edge_gap_s"])
    context = (f"{json.dumps(batches)} gaps {report['output_gaps_over_0.3s']} edge gaps "
               f"{report['edge_gaps_over_0.3s']} link {json.dumps(link)} status {json.dumps(report['node_status'])}")

    assert len(link["outages_s"]) == 1 and link["outages_s"][0][1] - link["outages_s"][0][0] >= cut_s - 0.1
    # The fallback answered during the cut, the cloud outside it; the output never went quiet.
    assert report["output_from_edge"] > 0 and report["output_from_cloud"] > 0, context
    # Issue 15's target: detection (0.25 s) plus a frame at 20 Hz, with margin.  The 0.5 s silences
    # seen before came from the edge's UDP send buffer (fastdds_link.xml) and from Fast DDS shared
    # memory (no longer used); in 20 fresh-clone runs since, the longest was 0.33 s (0.27 s when
    # nothing else ran on the machine).
    assert report["max_output_gap_s"] <= 0.35, context
    # Every batch trained by the cloud, once, except the last few still on their way at the stop
    # (stored batches go first, so after a long cut the newest wait a little longer).
    assert batches["edge"] > 20 and batches["cloud_trained_twice"] == 0, context
    assert all(age < 10.0 for age in batches["not_trained_by_cloud_age_s"]), context
    # The edge kept within its budget: the shaper never had to drop anything.
    dropped = re.search(r"dropped (\d+)", link["qdisc"])
    assert dropped and int(dropped.group(1)) == 0, context
    assert link["uplink_bps_while_up"] <= link["rate_bps"], context


def test_internet_transport_trains_through_a_30_s_cut_with_no_batch_lost(tmp_path, ros_env, record_property):
    """Issue 15's internet transport: TCP to the cloud node's discovery server, the robot dialling out.

    Nothing on the robot listens on the network (config/fastdds_tcp_robot.xml: a TCP client and UDP bound to
    127.0.0.1), so the cloud's TCP port is the only way across the link, and discovery uses no multicast.
    """
    stdout, report = launch_over_3g(tmp_path, 30, 95, ["--tcp-port", str(20000 + int(ros_env["ROS_DOMAIN_ID"]))])
    assert "over TCP+TLS to the discovery server at 10.231." in stdout  # the cloud's end of the veth
    batches = report["batches"]
    record_property("max_output_gap_s", report["max_output_gap_s"])
    context = (f"{json.dumps(batches)} gaps {report['output_gaps_over_0.3s']} edge gaps {report['edge_gaps_over_0.3s']}"
               f" link {json.dumps(report['link'])}")
    assert len(report["link"]["outages_s"]) == 1
    # The cloud answered (so discovery and data crossed over TCP) and the edge answered during the cut.
    assert report["output_from_edge"] > 0 and report["output_from_cloud"] > 0, context
    assert report["counts"]["cloud_metrics"] > 20, context
    # The same bound as over UDP.  With DDS's 20 s lease the cut expired the robot's nodes in the discovery
    # server, and their rediscovery after it silenced the output for 1.5-2 s; the profiles' 120 s lease keeps
    # a 30 s cut from expiring anyone (docs/security.md).
    assert report["max_output_gap_s"] <= 0.35, context
    # Every batch trained once (the last few may still be on their way at the stop).
    assert batches["edge"] > 20 and batches["cloud_trained_twice"] == 0, context
    assert all(age < 10.0 for age in batches["not_trained_by_cloud_age_s"]), context
