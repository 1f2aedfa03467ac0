"""One HierTrain worker (issue 16): device, edge server or cloud, in a hybrid-parallel training run.

The three workers run the same policy (``mapping``, ``m_s``, ``m_l``, ``b_o``, ``b_s``, ``b_l``) and exchange
``hiertrain_interfaces/msg/HierTensor`` messages on one RELIABLE topic per receiver (``<topic_prefix>/<role>``).
The device holds the data (reproducible synthetic batches, or a dataset's: ``data``) and hands out the shares;
what each worker computes is :mod:`core.hierexec`.  After ``steps`` iterations worker_o writes the weights to
``dump_path`` and every worker exits 0.  A message that does not come within ``peer_timeout_s`` (or a peer that
does not appear, or send its first-step message, within ``startup_timeout_s``) is logged, naming the peer and the
message, and the process exits 1: never a hang.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import rclpy
from hiertrain_interfaces.msg import HierTensor
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from .conversions import hier_tensor_msg, packet_from_msg
from .core.hierexec import Need, Packet, PeerTimeout, WorkerConfig, run_steps
from .core.hierschedule import ROLES
from .ros_common import MessageAuth, Rejections, StopFlag, declare_config

# Every message of a step must arrive: reliable, and deep enough that a burst (one PARAM_GRADIENT and one
# PARAMETERS per layer) never overwrites one not yet acknowledged.
HIER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
# Messages and the end of the run (``finished``) wake main()'s executor; its timeout only bounds how late a signal
# is seen.  An idle wake-up costs ~0.6 ms of CPU: at 20 a second (0.05 s) that was 12 ms a second, 40 % of a
# 0.03-core device's quota (issue 16, docs/seed_systems.md).
SPIN_TIMEOUT_S = 0.5


class HierWorkerNode(Node):
    def __init__(self, name: str = "hier_worker"):
        super().__init__(name)
        self.config = cfg = declare_config(self, WorkerConfig).with_policy_file()
        self.peers = [r for r in ROLES if r != cfg.role]
        self.auth = MessageAuth(self, cfg.auth_key_file, cfg.role, Rejections(self))
        # The HierTensor endpoints before the model: until this process has registered HierTensor, a peer's
        # HierTensor endpoint makes Fast DDS ask that peer for the type (an XTypes TypeLookup request).  A peer
        # that leaves before it replies (an idle worker done at once) leaves the type unresolved, and this
        # participant never matched the other peer's HierTensor endpoints either: "found no device worker within 120 s",
        # 7 of 43 hier_bench runs (docs/seed_systems.md).
        self.pubs = {peer: self.create_publisher(HierTensor, f"{cfg.topic_prefix}/{peer}", HIER_QOS)
                     for peer in self.peers}
        self.inbox: dict[tuple, Packet] = {}
        self.arrived = threading.Condition()
        self.sub = self.create_subscription(HierTensor, f"{cfg.topic_prefix}/{cfg.role}", self.on_message, HIER_QOS)
        import torch

        torch.set_num_threads(1)  # three workers share the host's cores (or a CPU quota each)
        self.worker = cfg.worker()
        self.batches = cfg.batches() if cfg.role == "device" else None  # a dataset is read before the first step
        self.result: int | None = None  # the exit code once the run is over
        self.step_times: list[float] = []
        self.trace: list[dict] | None = [] if cfg.trace_dir else None  # written at the end: no file I/O in a step
        self.finished = self.create_guard_condition(lambda: None)  # wakes main()'s executor when run() ends
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.get_logger().info(f"{cfg.role} is worker_{self.worker.task} of {cfg.mapping}: m_s={cfg.m_s}, "
                               f"m_l={cfg.m_l}, split ({cfg.b_o}, {cfg.b_s}, {cfg.b_l}), {cfg.arch}, "
                               f"{cfg.steps} steps")
        self.thread.start()

    def on_message(self, msg: HierTensor) -> None:
        if msg.receiver != self.config.role or not self.auth.check("hier", msg):
            return
        packet = packet_from_msg(msg)
        with self.arrived:
            self.inbox[(packet.sender, packet.step, packet.kind, packet.layer)] = packet
            self.arrived.notify_all()

    def receive(self, need: Need, step: int, timeout_s: float) -> Packet | None:
        key = (need.sender, step, need.kind, need.layer)
        start = time.monotonic()
        with self.arrived:
            self.arrived.wait_for(lambda: key in self.inbox, timeout=timeout_s)
            packet = self.inbox.pop(key, None)
        self._traced("wait", start, need.sender, step, need.kind, need.layer, packet)
        return packet

    def send(self, packet: Packet) -> None:
        start = time.monotonic()
        msg = hier_tensor_msg(packet)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pubs[packet.receiver].publish(self.auth.sign("hier", msg))
        self._traced("send", start, packet.receiver, packet.step, packet.kind, packet.layer, packet)

    def _traced(self, event: str, start: float, peer: str, step: int, kind: int, layer: int,
                packet: Packet | None) -> None:
        if self.trace is not None:  # t: its start, s: its seconds, cpu: the process's CPU seconds at its end
            self.trace.append({"event": event, "t": start, "s": time.monotonic() - start, "cpu": time.process_time(),
                               "peer": peer, "step": step, "kind": kind, "layer": layer,
                               "bytes": len(packet.data) if packet is not None else None})

    def wait_for_peers(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        while True:
            missing = [peer for peer in sorted(self.worker.receivers())
                       if self.pubs[peer].get_subscription_count() < 1]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise PeerTimeout(f"the {self.config.role} worker found no {' and no '.join(missing)} worker "
                                  f"within {self.config.startup_timeout_s} s (nothing subscribed to "
                                  f"{', '.join(self.pubs[m].topic_name for m in missing)})")
            time.sleep(0.05)

    def wait_for_start_file(self) -> None:
        """Wait for ``start_file``, if set: the steps must not begin before a bench has applied the CPU quota."""
        path = self.config.start_file
        deadline = time.monotonic() + self.config.startup_timeout_s
        while path and not os.path.exists(path):
            if time.monotonic() > deadline:
                raise PeerTimeout(f"the {self.config.role} worker's start_file {path} did not appear within "
                                  f"{self.config.startup_timeout_s} s")
            time.sleep(0.01)

    def on_step(self, step: int, loss: float | None) -> None:
        self.step_times.append(time.monotonic())
        if self.trace is not None:
            self.trace.append({"event": "step", "t": self.step_times[-1], "cpu": time.process_time(), "step": step})
        if loss is not None and (step < 10 or step % 100 == 0):
            self.get_logger().info(f"step {step}: loss {loss:.4f}")

    def run(self) -> None:
        cfg = self.config
        try:
            self.wait_for_peers()
            self.get_logger().info(f"{cfg.role} found its peers")  # a bench confines the process from here on
            self.wait_for_start_file()
            self.step_times.append(time.monotonic())
            run_steps(self.worker, cfg.steps, self.send, self.receive, cfg.peer_timeout_s,
                      self.batches, self.on_step,
                      first_timeout_s=cfg.startup_timeout_s)
            if cfg.dump_path and self.worker.task == "o":
                import torch

                torch.save(self.worker.state_dict(), cfg.dump_path)
            intervals = sorted(b - a for a, b in zip(self.step_times[1:], self.step_times[2:]))  # after step 0
            per_step = intervals[len(intervals) // 2] if intervals else float("nan")
            # The last messages (worker_o's parameters) must reach the others before this process goes.
            for peer, pub in self.pubs.items():
                if not pub.wait_for_all_acked(Duration(seconds=cfg.peer_timeout_s)):
                    raise PeerTimeout(f"the {cfg.role} worker's last messages to {peer} were not acknowledged "
                                      f"within {cfg.peer_timeout_s} s")
            self.get_logger().info(f"done: {cfg.steps} steps, {per_step * 1e3:.2f} ms per iteration (median "
                                   "after the first)")
            self.result = 0
        except Exception as exc:  # a peer gone, a bad message: a clear error and a non-zero exit
            self.get_logger().error(f"HierTrain worker failed: {exc}")
            self.result = 1
        finally:
            if self.trace is not None:
                self.write_trace()
            self.finished.trigger()

    def write_trace(self) -> None:
        path = os.path.join(self.config.trace_dir, f"{self.config.role}.jsonl")
        try:
            os.makedirs(self.config.trace_dir, exist_ok=True)
            with open(path, "w") as out:
                out.writelines(json.dumps(event) + "\n" for event in self.trace)
        except OSError as exc:  # the run's result stands; the trace is a diagnostic
            self.get_logger().error(f"could not write the trace {path}: {exc}")

    def close(self) -> None:
        pass


def main(args=None) -> None:
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopFlag()
    node, code = None, 130
    try:
        node = HierWorkerNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok() and node.result is None:
            executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        if node.result is not None:
            code = node.result
            # run() may still be returning from the trigger; a daemon thread still in a C++ call when the
            # interpreter exits is ended by force and aborts the process ("terminate called without an active
            # exception", exit -6: seen in 2 of ~20 runs of the killed-worker test).
            node.thread.join()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
