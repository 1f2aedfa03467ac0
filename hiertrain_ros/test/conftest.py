import itertools
import os

import pytest

_domains = itertools.count(100 + os.getpid() % 50 * 2)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s (still run in CI)")
    config.addinivalue_line("markers", "system: starts real ROS 2 node processes on real DDS")


@pytest.fixture
def ros_env(monkeypatch):
    """A DDS domain of this test's own, discovery limited to this host."""
    domain = str(next(_domains) % 230)
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return {"ROS_DOMAIN_ID": domain, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
