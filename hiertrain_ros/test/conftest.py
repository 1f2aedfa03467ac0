import itertools
import os

import pytest

_domains = itertools.count(100 + os.getpid() % 50 * 2)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s (still run in CI)")
    config.addinivalue_line("markers", "system: starts real ROS 2 node processes on real DDS")
    # Fast DDS reads its profile once per process, at the first participant: set it for the whole
    # session, so every in-process node (monitors, test publishers) has room for 640x480 frames
    # whichever test runs first.  The node processes pick the same profile.
    from hiertrain_ros.ros_common import use_large_data_transport

    use_large_data_transport()


@pytest.fixture
def ros_env(monkeypatch):
    """Return a DDS domain of this test's own, discovery limited to this host."""
    domain = str(next(_domains) % 230)
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return {"ROS_DOMAIN_ID": domain, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
