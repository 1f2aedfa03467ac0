"""An emulated edge->cloud link, and a three-party mesh (device, edge, cloud) for HierTrain.

Two network namespaces, a veth pair, a tbf shaper, and a cgroup-v1 CPU quota for the edge process; or three
namespaces joined pairwise (:class:`MeshEmulator`).

Everything is named with a per-process prefix and lives only inside the two
namespaces (the /30 is assigned there, never on the host); :meth:`LinkEmulator.close`
removes the namespaces (which deletes the veth pair) and the cgroup, and is run
on exit, on error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CFS_PERIOD_US = 100_000
# tbf bucket: a few MTU-sized packets (the colleagues' measured 5 kB).
TBF_BURST_BYTES = 5_000
CLONE_NEWNET = 0x40000000


class LinkUnavailable(RuntimeError):
    """Namespaces, tc or the CPU cgroup cannot be used here (not root, no iproute2, ...)."""


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LinkUnavailable(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def unavailable_reason(need_cgroup: bool = False) -> str | None:
    """Why the link bench cannot run here, or ``None`` when it can (creates and removes a probe namespace)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc and cgroups)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' (iproute2) not found"
    probe = f"ht-probe-{os.getpid()}"
    proc = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if need_cgroup and not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
        return f"no cgroup v1 CPU controller at {CGROUP_CPU}"
    return None


def tbf_limit_bytes(rate_bps: float, largest_message_bytes: int, window: int) -> int:
    """Queue size of the tbf shaper.

    At least 2 s of link time and room for (window + 1) largest messages plus their UDP/IP headers, so a message is
    never dropped at the shaper.
    """
    return int(max(rate_bps / 8 * 2.0, (window + 1) * largest_message_bytes * 1.1 + 65536))


class LinkEmulator:
    """Namespaces ``<prefix>-edge`` and ``<prefix>-cloud`` joined by a shaped veth pair.

    Only the edge->cloud direction is shaped (the paper's upload); cloud->edge
    (acks, split-learning gradients) runs at veth speed.
    """

    def __init__(self, rate_bps: float, *, queue_bytes: int, edge_cpu_quota: float | None = None,
                 prefix: str | None = None):
        if not rate_bps > 0:
            raise ValueError(f"rate_bps must be > 0, got {rate_bps}")
        if edge_cpu_quota is not None and not 0 < edge_cpu_quota <= 64:
            raise ValueError(f"edge_cpu_quota must be in (0, 64] cores, got {edge_cpu_quota}")
        pid = os.getpid()
        self.prefix = prefix or f"ht{pid}"
        self.rate_bps = float(rate_bps)
        self.queue_bytes = int(queue_bytes)
        self.edge_cpu_quota = edge_cpu_quota
        self.ns = {"edge": f"{self.prefix}-edge", "cloud": f"{self.prefix}-cloud"}
        # Interface names are limited to 15 characters.
        self.ifname = {"edge": f"hte{pid}"[:15], "cloud": f"htc{pid}"[:15]}
        # A private /30 chosen per process, assigned only inside the namespaces.
        third = pid % 250 + 1
        self.addr = {"edge": f"10.231.{third}.1", "cloud": f"10.231.{third}.2"}
        self.cgroup = CGROUP_CPU / f"{self.prefix}-edge" if edge_cpu_quota else None
        self._created: list[str] = []

    # ---- set-up / tear-down -----------------------------------------------------------------------

    def open(self) -> "LinkEmulator":
        reason = unavailable_reason(need_cgroup=self.cgroup is not None)
        if reason:
            raise LinkUnavailable(f"link emulation unavailable: {reason}")
        try:
            for side in ("edge", "cloud"):
                _run(["ip", "netns", "add", self.ns[side]])
                self._created.append(self.ns[side])
            _run(["ip", "link", "add", self.ifname["edge"], "netns", self.ns["edge"], "type", "veth",
                  "peer", "name", self.ifname["cloud"], "netns", self.ns["cloud"]])
            for side in ("edge", "cloud"):
                ex = self.exec_prefix(side)
                _run(ex + ["ip", "link", "set", "lo", "up"])
                _run(ex + ["ip", "addr", "add", f"{self.addr[side]}/30", "dev", self.ifname[side]])
                self._bring_up(side)
            _run(self.exec_prefix("edge") + [
                "tc", "qdisc", "add", "dev", self.ifname["edge"], "root", "tbf",
                "rate", f"{int(round(self.rate_bps))}bit", "burst", str(TBF_BURST_BYTES),
                "limit", str(self.queue_bytes)])
            if self.cgroup is not None:
                self.cgroup.mkdir(exist_ok=True)
                (self.cgroup / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                (self.cgroup / "cpu.cfs_quota_us").write_text(str(int(round(self.edge_cpu_quota * CFS_PERIOD_US))))
        except BaseException:
            self.close()
            raise
        log.info("link %s <-> %s: %.4g bit/s edge->cloud, tbf queue %d B, edge quota %s",
                 self.ns["edge"], self.ns["cloud"], self.rate_bps, self.queue_bytes, self.edge_cpu_quota)
        return self

    def close(self) -> None:
        for ns in reversed(self._created):
            _run(["ip", "netns", "del", ns], check=False)  # deletes the veth pair with it
        self._created.clear()
        if self.cgroup is not None and self.cgroup.exists():
            try:
                self.cgroup.rmdir()
            except OSError as exc:
                log.warning("could not remove cgroup %s: %s", self.cgroup, exc)

    def __enter__(self) -> "LinkEmulator":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- use ----------------------------------------------------------------------------------------

    def exec_prefix(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[side]]

    def _bring_up(self, side: str) -> None:
        ex = self.exec_prefix(side)
        _run(ex + ["ip", "link", "set", self.ifname[side], "up"])
        # DDS discovery multicasts to 239.255.0.1: without a route it has no way out.  Taking the
        # link down deletes the route, so it is set again each time the link comes up.
        _run(ex + ["ip", "route", "replace", "224.0.0.0/4", "dev", self.ifname[side]])

    def set_rate(self, rate_bps: float, queue_bytes: int | None = None) -> None:
        """Change the shaped edge->cloud rate (and the queue, if given) while running (``tc qdisc change``)."""
        if not rate_bps > 0:
            raise ValueError(f"rate_bps must be > 0, got {rate_bps}")
        queue = int(queue_bytes or self.queue_bytes)
        _run(self.exec_prefix("edge") + [
            "tc", "qdisc", "change", "dev", self.ifname["edge"], "root", "tbf",
            "rate", f"{int(round(rate_bps))}bit", "burst", str(TBF_BURST_BYTES), "limit", str(queue)])
        self.rate_bps, self.queue_bytes = float(rate_bps), queue
        log.info("link rate %.4g bit/s", rate_bps)

    def set_link(self, up: bool) -> None:
        """Cut the link (the edge's veth down, both directions dead) or restore it."""
        if up:
            self._bring_up("edge")
        else:
            _run(self.exec_prefix("edge") + ["ip", "link", "set", self.ifname["edge"], "down"])
        log.info("link %s", "up" if up else "down")

    def enter(self, side: str) -> None:
        """Move the calling thread into ``side``'s namespace.

        Threads and processes it starts afterwards are there too.  Call it before anything else starts threads (rclpy,
        DDS).
        """
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.ns[side]}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise LinkUnavailable(f"cannot enter namespace {self.ns[side]}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def confine_edge(self, pid: int) -> None:
        """Move ``pid`` (all its threads) into the edge's CPU-quota cgroup."""
        if self.cgroup is not None:
            (self.cgroup / "cgroup.procs").write_text(str(pid))

    def counters(self, side: str = "edge") -> dict[str, int]:
        """tx/rx bytes and packets of ``side``'s veth (read inside its namespace)."""
        names = ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")
        paths = [f"/sys/class/net/{self.ifname[side]}/statistics/{n}" for n in names]
        out = _run(self.exec_prefix(side) + ["cat", *paths]).stdout.split()
        return dict(zip(names, (int(v) for v in out)))

    def qdisc_stats(self) -> str:
        return _run(self.exec_prefix("edge") + ["tc", "-s", "qdisc", "show", "dev", self.ifname["edge"]],
                    check=False).stdout.strip()


class MeshEmulator:
    """Three namespaces ``<prefix>-device``, ``-edge`` and ``-cloud``, each pair joined by a veth pair shaped both ways.

    HierTrain's three workers (issue 16): device-edge, edge-cloud and device-cloud each get their own rate, the
    same in both directions (gradients come back over the links).  Each pair has a /30 of its own, assigned only
    inside the namespaces; :meth:`address` is where ``side`` is reached from ``peer``.
    """

    SIDES = ("device", "edge", "cloud")
    PAIRS = (("device", "edge"), ("edge", "cloud"), ("device", "cloud"))

    def __init__(self, rates_bps: dict[tuple[str, str], float], *, largest_message_bytes: int = 0,
                 prefix: str | None = None):
        if set(rates_bps) != set(self.PAIRS) or not all(r > 0 for r in rates_bps.values()):
            raise ValueError(f"need a rate > 0 bits/s for each of {self.PAIRS}, got {rates_bps}")
        pid = os.getpid()
        self.prefix = prefix or f"hm{pid}"
        self.rates = {pair: float(rate) for pair, rate in rates_bps.items()}
        self.largest_message_bytes = largest_message_bytes  # each link's queue holds two (tbf_limit_bytes)
        self.ns = {side: f"{self.prefix}-{side}" for side in self.SIDES}
        third = pid % 250 + 1
        self._if: dict[tuple[str, str], str] = {}  # (side, peer) -> the interface in side's namespace
        self._addr: dict[tuple[str, str], str] = {}  # (side, peer) -> side's address on that pair
        for k, (a, b) in enumerate(self.PAIRS):
            for side, peer, host in ((a, b, 1), (b, a, 2)):
                self._if[(side, peer)] = f"hm{pid}{side[0]}{peer[0]}"[:15]
                self._addr[(side, peer)] = f"10.232.{third}.{4 * k + host}"
        self._created: list[str] = []

    def open(self) -> "MeshEmulator":
        reason = unavailable_reason()
        if reason:
            raise LinkUnavailable(f"link emulation unavailable: {reason}")
        try:
            for side in self.SIDES:
                _run(["ip", "netns", "add", self.ns[side]])
                self._created.append(self.ns[side])
                _run(self.exec_prefix(side) + ["ip", "link", "set", "lo", "up"])
            for a, b in self.PAIRS:
                _run(["ip", "link", "add", self._if[(a, b)], "netns", self.ns[a], "type", "veth",
                      "peer", "name", self._if[(b, a)], "netns", self.ns[b]])
                for side, peer in ((a, b), (b, a)):
                    ex = self.exec_prefix(side)
                    _run(ex + ["ip", "addr", "add", f"{self._addr[(side, peer)]}/30", "dev", self._if[(side, peer)]])
                    _run(ex + ["ip", "link", "set", self._if[(side, peer)], "up"])
                    self._shape(side, peer, "add")
        except BaseException:
            self.close()
            raise
        log.info("mesh %s: %s bit/s", self.prefix, {f"{a}-{b}": r for (a, b), r in self.rates.items()})
        return self

    def _pair(self, a: str, b: str) -> tuple[str, str]:
        return (a, b) if (a, b) in self.rates else (b, a)

    def _shape(self, side: str, peer: str, verb: str) -> None:
        rate = self.rates[self._pair(side, peer)]
        limit = tbf_limit_bytes(rate, self.largest_message_bytes, 1)
        _run(self.exec_prefix(side) + ["tc", "qdisc", verb, "dev", self._if[(side, peer)], "root", "tbf",
                                       "rate", f"{int(round(rate))}bit", "burst", str(TBF_BURST_BYTES),
                                       "limit", str(limit)])

    def close(self) -> None:
        for ns in reversed(self._created):
            _run(["ip", "netns", "del", ns], check=False)  # deletes the veth pairs with them
        self._created.clear()

    def __enter__(self) -> "MeshEmulator":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def exec_prefix(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[side]]

    def address(self, side: str, peer: str) -> str:
        """Return the address at which ``peer`` reaches ``side`` (over their own link)."""
        return self._addr[(side, peer)]

    def set_rate(self, a: str, b: str, rate_bps: float) -> None:
        """Change the rate of the a-b link, both directions, while running."""
        if not rate_bps > 0:
            raise ValueError(f"rate_bps must be > 0, got {rate_bps}")
        self.rates[self._pair(a, b)] = float(rate_bps)
        for side, peer in ((a, b), (b, a)):
            self._shape(side, peer, "change")
