"""HierTrain's message costs, measured apart from any training run (issue 16; run by ``hier_bench.py --calibrate``).

What Eq. 12 leaves out, on the path ``hier_worker_node`` sends and receives by (``core.hierexec.encode`` /
``decode``, ``conversions.hier_tensor_msg`` / ``packet_from_msg``, ``HIER_QOS``), each process under the CPU quota
of the role it stands for: once DDS has matched it prints ``matched`` and waits for a line on stdin, while the bench
moves it into the role's cgroup (as the bench confines a worker after start-up; ``ip netns exec`` hides the
host's cgroup tree from the process itself):

- ``loopback``: one node publishes ``--count`` small HierTensor messages to its own topic, then takes and decodes
  them.  The two phases' time over 2 x count is the cost of one message sent or received.  Timed over many
  messages: a single one is shorter than the CFS quota and would run unthrottled.
- ``link``: two nodes in two namespaces over a shaped link.  The lead times small round trips, then messages of
  ``--bytes`` (each answered by a small ack); ``8 * bytes / (big round trip - small round trip)`` is the effective
  rate of that direction (DDS fragments and their repair, the sender's and receiver's own handling under their
  quotas).  Each side also takes its process's CPU time per round trip (lead) or per answer (follower): the large
  message's less the small one's, over its bytes, is the CPU a byte costs its sender and its receiver (all
  threads, the kernel's share in the process included).  Then the follower does the same the other way and hands
  its numbers back.

Prints one JSON object on stdout after that line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import deque

import rclpy
import torch
from hiertrain_interfaces.msg import HierTensor
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from hiertrain_ros.conversions import hier_tensor_msg, packet_from_msg
from hiertrain_ros.core.hierexec import ACTIVATION, PARAM_GRADIENT, Packet, decode, encode
from hiertrain_ros.hier_worker_node import HIER_QOS

PING, ACK, BIG, YOUR_TURN, DONE = range(5)  # the probe's operations, in the packet's layer field
TOPIC = "hiertrain/probe"


def cpu_per_byte(big: list[float], small: list[float], nbytes: int) -> float:
    """CPU seconds a byte costs: the median CPU of a large message's exchange less a small one's, over its bytes."""
    return max(0.0, statistics.median(big) - statistics.median(small)) / nbytes


class Probe:
    def __init__(self, role: str, peer: str):
        self.role, self.peer = role, peer
        self.node = Node(f"hier_probe_{role}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.inbox: deque = deque()
        self.sub = self.node.create_subscription(HierTensor, f"{TOPIC}/{role}", self.on_message,
                                                   HIER_QOS)
        self.pub = self.node.create_publisher(HierTensor, f"{TOPIC}/{peer}", HIER_QOS)

    def on_message(self, msg: HierTensor) -> None:
        self.inbox.append(msg)

    def confine(self) -> None:
        """Tell the bench DDS has matched; go on once it has moved this process under the role's quota."""
        print("matched", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise RuntimeError(f"the {self.role} probe was not told to go")

    def wait(self, predicate, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.role} probe: no {what} within {timeout_s} s")
            self.executor.spin_once(timeout_sec=0.1)  # returns on a message: no polling in the CPU times

    def matched(self, timeout_s: float = 120.0) -> None:
        self.wait(lambda: self.pub.get_subscription_count() >= 1
                  and self.node.count_publishers(self.sub.topic_name) >= 1, timeout_s, f"{self.peer} probe")

    def send(self, op: int, step: int, tensor: torch.Tensor, kind: int = PARAM_GRADIENT) -> None:
        self.pub.publish(hier_tensor_msg(Packet(self.role, self.peer, step, kind, op, *encode(tensor))))

    def take(self, op: int, timeout_s: float = 60.0) -> Packet:
        """Return the next message (it must be ``op``), decoded as a worker decodes it."""
        self.wait(lambda: self.inbox, timeout_s, f"message {op} from {self.peer}")
        packet = packet_from_msg(self.inbox.popleft())
        decode(packet)
        if packet.layer != op:
            raise RuntimeError(f"the {self.role} probe expected operation {op}, got {packet.layer}")
        return packet

    def round_trip(self, op: int, tensor: torch.Tensor, step: int) -> tuple[float, float]:
        """Seconds and this process's CPU seconds of one message out and its ack back."""
        t0, cpu = time.perf_counter(), time.process_time()
        self.send(op, step, tensor, ACTIVATION if op == BIG else PARAM_GRADIENT)
        self.take(ACK)
        return time.perf_counter() - t0, time.process_time() - cpu

    def lead(self, size_bytes: int, repeats: int) -> dict:
        """Time small round trips, then ``repeats`` messages of ``size_bytes``: the rate to the peer."""
        small, big = torch.zeros(1), torch.randn(size_bytes // 4)
        for k in range(3):  # warm-up
            self.round_trip(PING, small, k)
        pings = [self.round_trip(PING, small, k) for k in range(7)]
        bigs = [self.round_trip(BIG, big, k) for k in range(repeats)]
        rtt, transfer = (statistics.median(t for t, _ in runs) for runs in (pings, bigs))
        nbytes = 4 * big.numel()
        return {"sender": self.role, "receiver": self.peer, "bytes": nbytes, "small_rtt_s": rtt,
                "big_rtt_s": transfer, "big_rtts_s": [t for t, _ in bigs],
                "rate_bps": 8 * nbytes / max(transfer - rtt, 1e-9),
                "sender_cpu_per_byte_s": cpu_per_byte([c for _, c in bigs], [c for _, c in pings], nbytes)}

    def follow(self, until: int) -> tuple[Packet, float | None]:
        """Answer every PING and BIG with an ACK until ``until`` arrives; that packet and the CPU per byte received.

        The CPU of an answer runs from the end of the one before (the wait, the message's arrival and decoding,
        the ack); a BIG's less a PING's, over its bytes.
        """
        cpu = {PING: [], BIG: []}
        nbytes = 0
        while True:
            c0 = time.process_time()
            self.wait(lambda: self.inbox, 300.0, f"message from {self.peer}")
            packet = packet_from_msg(self.inbox.popleft())
            decode(packet)
            if packet.layer == until:
                return packet, cpu_per_byte(cpu[BIG], cpu[PING], nbytes) if cpu[BIG] and cpu[PING] else None
            self.send(ACK, packet.step, torch.zeros(1))
            if packet.layer in cpu:
                cpu[packet.layer].append(time.process_time() - c0)
            if packet.layer == BIG:
                nbytes = len(packet.data)


def loopback(args) -> dict:
    probe = Probe(args.role, args.role)
    probe.matched()
    tensor = torch.randn(args.values)
    probe.confine()
    for k in range(10):  # warm-up
        probe.send(PING, k, tensor)
    probe.wait(lambda: len(probe.inbox) >= 10, 60.0, "warm-up messages")
    probe.inbox.clear()
    t0 = time.perf_counter()
    for k in range(args.count):
        probe.send(PING, k, tensor)
    t1 = time.perf_counter()
    for _ in range(args.count):
        probe.take(PING)
    t2 = time.perf_counter()
    return {"role": args.role, "count": args.count, "bytes": 4 * args.values, "send_s": (t1 - t0) / args.count,
            "receive_s": (t2 - t1) / args.count, "per_message_s": (t2 - t0) / (2 * args.count)}


def link(args) -> dict:
    probe = Probe(args.role, args.peer)
    probe.matched()
    probe.confine()
    if args.lead:
        mine = probe.lead(args.bytes, args.repeats)
        probe.send(YOUR_TURN, 0, torch.zeros(1))
        packet, received = probe.follow(DONE)
        theirs = json.loads(bytes(decode(packet).to(torch.uint8).tolist()))
        mine["receiver_cpu_per_byte_s"] = theirs.pop("received_cpu_per_byte_s")
        return {"directions": [mine, {**theirs, "receiver_cpu_per_byte_s": received}]}
    _, received = probe.follow(YOUR_TURN)
    mine = probe.lead(args.bytes, args.repeats)
    text = json.dumps({**mine, "received_cpu_per_byte_s": received}).encode()
    probe.send(DONE, 0, torch.tensor(list(text), dtype=torch.float32))
    probe.pub.wait_for_all_acked(Duration(seconds=30))
    return {"directions": [mine]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("loopback", "link"))
    ap.add_argument("--role", required=True)
    ap.add_argument("--peer", help="link: the other role")
    ap.add_argument("--lead", action="store_true", help="link: this side times its direction first")
    ap.add_argument("--count", type=int, default=100, help="loopback: messages")
    ap.add_argument("--values", type=int, default=456, help="loopback: float32 values per message (LeNet-5 layer 1)")
    ap.add_argument("--bytes", type=int, default=131_072, help="link: the large message")
    ap.add_argument("--repeats", type=int, default=3, help="link: large messages per direction")
    args = ap.parse_args()
    rclpy.init()
    try:
        result = loopback(args) if args.mode == "loopback" else link(args)
    finally:
        rclpy.try_shutdown()
    json.dump(result, sys.stdout)
    print(flush=True)


if __name__ == "__main__":
    main()
