import itertools
import os

import pytest

_domains = itertools.count(100 + os.getpid() % 50 * 2)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s (still run in CI)")
    config.addinivalue_line("markers", "system: starts real ROS 2 node processes on real DDS")
    # Discovery limited to this host.  Fast DDS reads its profile once per process, at the first
    # participant: set it for the whole session, so every in-process node (monitors, test publishers)
    # has the nodes' transport (localhost UDP, room for 640x480 frames, no shared memory) whichever
    # test runs first.  The node processes inherit the same environment.
    from hiertrain_ros.ros_common import use_large_data_transport

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    use_large_data_transport()


@pytest.fixture
def ros_env(monkeypatch):
    """Return a DDS domain of this test's own (discovery is limited to this host for the whole session)."""
    domain = str(next(_domains) % 230)
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    return {"ROS_DOMAIN_ID": domain}
