"""The hierarchical mode.

The package's own ``camera_sim``, ``edge_node`` and ``cloud_node`` across the emulated link, with the nodes' own flow
control (token bucket, store, heartbeat acknowledgements), topics and QoS.

The camera simulator publishes labelled frames only (no held-out frames, and no answers are
asked of the edge, so only training batches use the link); the edge node runs under the
edge's CPU quota; the run ends when the cloud node's training metrics show it has trained
``samples / batch_size`` batches.  The camera streams until then: its topic is best-effort (sensor
data), and an edge throttled by its quota loses some of the frames, at 400 Hz more than half in
some runs (a camera that stopped after twice ``samples`` frames left those runs waiting).  Times are
the nodes' DDS source timestamps, seen by ``runner.Monitor`` in the edge namespace.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from contextlib import contextmanager

# The cloud first, then the edge; the camera starts once the edge sees the cloud's heartbeat.
NODES = ("cloud_node", "edge_node", "camera_sim")
NEVER = 10**9  # a frame count no run reaches


def node_overrides(cfg, rate_bps: float) -> dict:
    """Parameter overrides on top of config/edge_cloud.yaml for a bench config ``cfg``."""
    executor = {"executor": cfg.edge_executor} if getattr(cfg, "edge_executor", "") else {}
    return {
        "*": {"model": cfg.arch, "split_point": cfg.split_point, "width": cfg.width, "bits": cfg.bits,
              "budget_bits": cfg.budget_bits, "seed": cfg.seed},
        # The camera streams until the run is stopped; every frame is a labelled training frame.
        "camera_sim": {"data": cfg.data, "rate_hz": cfg.camera_hz, "max_frames": 0, "holdout_every": NEVER},
        # No answers, so no inference features share the link. The bucket offers the link its
        # nominal rate, as a robot configured for this uplink would.
        "edge_node": {"batch_size": cfg.batch_size, "predict_every": NEVER,
                      "torch_threads": 1, "coding": cfg.coding,
                      "buffer_size": max(512, cfg.samples), "link_budget_bps": float(rate_bps), **executor},
        "cloud_node": {"torch_threads": cfg.cloud_threads},
    }


@contextmanager
def _environ(env: dict):
    """``os.environ`` replaced by ``env`` inside the block."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_hierarchical(link, cfg, rate_bps: float, env: dict, domain: int, log_dir, timeout_s: float) -> dict:
    """Run the nodes once; raw measurements for ``bench._summarise_nodes``.

    The monitor runs in a child process that lives in the edge namespace.  A process whose DDS
    already ran in another namespace (a test session, say) discovers nothing from a thread moved
    into one: Fast DDS keeps what it learnt of the network at its first participant.
    """
    ctx = multiprocessing.get_context("spawn")
    results, sender = ctx.Pipe(duplex=False)
    with _environ(env):  # the child's environment: the nodes and its monitor read their DDS settings from it
        proc = ctx.Process(target=_monitor_process, args=(link, cfg, rate_bps, domain, log_dir, timeout_s, sender),
                           name="linkbench-nodes")
        proc.start()
    sender.close()
    try:
        try:
            ok, value = results.recv()
        except EOFError:
            ok, value = False, f"the monitor process exited ({proc.exitcode}) without a result"
        proc.join()
    except BaseException:
        proc.terminate()  # its nodes stop with it (SIGTERM unwinds through graph.stop())
        proc.join(30.0)
        if proc.is_alive():
            proc.kill()
        raise
    if not ok:
        raise RuntimeError(value)
    return value


def _monitor_process(link, cfg, rate_bps, domain, log_dir, timeout_s, sender) -> None:
    def interrupted(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        link.enter("edge")  # before rclpy starts any thread: they all belong in the edge namespace
        result = True, _run(link, cfg, rate_bps, domain, log_dir, timeout_s)
    except Exception as exc:
        traceback.print_exc()
        result = False, f"{type(exc).__name__}: {exc}"
    sender.send(result)


def _run(link, cfg, rate_bps, domain, log_dir, timeout_s) -> dict:
    import rclpy
    from hiertrain_interfaces.msg import Label

    from hiertrain_ros.ros_common import RELIABLE_QOS, TOPICS, Spinner
    from hiertrain_ros.runner import Graph, Monitor

    n_batches = cfg.samples // cfg.batch_size
    graph = Graph(NODES, overrides=node_overrides(cfg, rate_bps), log_dir=log_dir,
                  wrap={"cloud_node": link.exec_prefix("cloud"), "edge_node": link.exec_prefix("edge"),
                        "camera_sim": link.exec_prefix("edge")})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    monitor = Monitor(context=context)
    first_frame: list[float] = []  # the first label's source timestamp, on this host's monotonic clock
    wall_minus_mono = time.time() - time.monotonic()
    monitor.create_subscription(
        Label, TOPICS["labels"],
        lambda m, info: first_frame or first_frame.append(info["source_timestamp"] * 1e-9 - wall_minus_mono),
        RELIABLE_QOS)
    spinner = Spinner(monitor, context=context)
    def wait(predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = [n for n, ok in graph.alive().items() if not ok]
            problem = (f"node(s) {dead} exited" if dead
                       else f"timed out after {timeout:g} s" if time.monotonic() > deadline else None)
            if problem:
                raise RuntimeError(f"hierarchical: {problem} waiting for {what}; the monitor saw "
                                   f"batches {monitor.batch_report()}, counts {dict(monitor.counts)}, "
                                   f"status {monitor.status}")
            time.sleep(0.05)

    try:
        graph.start("cloud_node")
        graph.start("edge_node")
        link.confine_edge(graph.procs["edge_node"].pid)  # `ip netns exec` execs in place: this is the node
        wait(lambda: monitor.status.get("edge_node", {}).get("cloud_alive") == "True", 120,
             "the edge node to see the cloud node's heartbeat")
        counters0 = link.counters("edge")
        graph.start("camera_sim")
        wait(lambda: len(monitor.cloud_batch_times) >= n_batches, timeout_s,
             f"the cloud node to train {n_batches} batches")
        counters1 = link.counters("edge")
        frames_published = monitor.counts["labels"]
        batches = monitor.batch_report()
        edge_times = sorted(monitor.edge_batch_times.values())
        cloud_times = sorted(monitor.cloud_batch_times.values())
        result = {"t_first_frame": first_frame[0] if first_frame else None, "t_start": edge_times[0],
                  "t_end": cloud_times[n_batches - 1], "edge_batch_times": edge_times, "cloud_batch_times": cloud_times,
                  # Every training batch has the same payload; later batches may already be on their way.
                  "payload_bytes": monitor.feature_bytes * n_batches // max(1, monitor.counts["feature_batches"]),
                  "counters_start": counters0, "counters_end": counters1,
                  "batches": batches, "cloud_losses": list(monitor.cloud_losses),
                  "frames_published": frames_published,
                  "node_status": {n: monitor.status.get(n, {}) for n in ("edge_node", "cloud_node")}}
    finally:
        result_codes = graph.stop()
        spinner.close()
        rclpy.try_shutdown(context=context)
    result["exit_codes"] = result_codes
    return result

