"""Run every training mode over one emulated link and compare with Eq. 1 / Eq. 5.

The hierarchical mode runs the package's own nodes (``nodes.py``); the baselines run
bench workers (``worker.py``).  See ``docs/linkbench.md`` for the set-up, the
definitions of every reported number and a measured table.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hiertrain_ros.core.archs import SplitSpec
from hiertrain_ros.linkbench.netns import LinkEmulator, tbf_limit_bytes

from .nodes import run_hierarchical
from .worker import MODES as BASELINES
from .worker import WorkerConfig

log = logging.getLogger(__name__)

MODES = ("hierarchical",) + BASELINES
# Pipelined modes: the edge does not wait for the cloud between batches.
PIPELINED = ("fullcloud-raw", "fullcloud-jpeg")


@dataclass(frozen=True)
class BenchConfig(SplitSpec):
    link: str = "3g"
    samples: int = 512
    batch_size: int = 32
    edge_cpu_quota: float | None = None   # cores; None = no CPU limit on the edge
    modes: tuple = MODES
    window: int = 2                       # un-acknowledged batches on the wire
    jpeg_quality: int = 90
    coding: str = "zstd"                  # hierarchical and split: the edge's lossless coding (core.coding)
    cloud_threads: int = 1                # torch threads of the cloud (the box has 2 cores)
    epoch_samples: int = 50000            # the epoch the per-epoch figures are scaled to (CIFAR-10)
    data: str = "fashion-mnist"
    seed: int = 0
    mode_timeout_s: float = 900.0
    log_dir: str | None = None
    alpha: float | None = 2.0             # Eq. 2-3 backward/forward ratio; None = measured under the edge quota
    camera_hz: float = 100.0              # hierarchical: camera_sim's rate; faster than the link drains batches
    edge_executor: str = ""               # hierarchical: edge_node's executor parameter; "" = the node's default

    def __post_init__(self):
        super().__post_init__()
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"modes must be some of {MODES}, got {self.modes}")
        if self.samples < 1 or self.batch_size < 1 or self.epoch_samples < 1:
            raise ValueError("samples, batch_size and epoch_samples must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.alpha is not None and not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0 (or None: measured), got {self.alpha}")
        if "hierarchical" in self.modes and self.samples % self.batch_size:
            # The edge node trains full batches only: a partial last batch would never reach the cloud.
            raise ValueError(f"hierarchical needs samples a multiple of batch_size, got {self.samples}, "
                             f"{self.batch_size}")
        if not self.camera_hz > 0:
            raise ValueError(f"camera_hz must be > 0, got {self.camera_hz}")

    def spec(self) -> SplitSpec:
        return self.model_spec()

    def worker(self, mode: str, **kw) -> WorkerConfig:
        return WorkerConfig(mode=mode, **asdict(self.model_spec()), samples=self.samples,
                            batch_size=self.batch_size, seed=self.seed, window=self.window,
                            jpeg_quality=self.jpeg_quality, coding=self.coding, data=self.data,
                            done_timeout_s=self.mode_timeout_s, **kw)


def cpu_flops(threads: int, size: int = 384, seconds: float = 0.3) -> float:
    """Sustained float32 matmul FLOP/s of this machine with ``threads`` threads: the S of Eq. 2/3."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            n += 1
        return 2 * size ** 3 * n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(old)


class _Procs:
    """Child processes of one mode; killed by pid on any exit path."""

    def __init__(self):
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name, cmd, env, log_path):
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.procs[name] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self.procs[name]

    def wait(self, timeout: float, grace: float = 10.0) -> dict[str, int | None]:
        """Exit codes (None: still running at the deadline).

        Once one worker fails, the others get ``grace`` seconds and are then killed: a peer that died would leave them
        waiting.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = {name: proc.poll() for name, proc in self.procs.items()}
            if all(c is not None for c in codes.values()):
                return codes
            if any(c not in (None, 0) for c in codes.values()):
                deadline = min(deadline, time.monotonic() + grace)
            time.sleep(0.1)
        return {name: proc.poll() for name, proc in self.procs.items()}

    def kill(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)


# A profile file could add shared memory, which crosses network namespaces and would bypass the link.
_DROPPED_ENV = ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "FASTDDS_DEFAULT_PROFILES_FILE",
                "FASTRTPS_DEFAULT_PROFILES_FILE")


def _ros_env(domain: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.update(FASTDDS_BUILTIN_TRANSPORTS="UDPv4",  # no shared memory across namespaces
               ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET", ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    return env


BENCHMARKS_DIR = Path(__file__).resolve().parents[1]


def _worker_cmd(role: str, cfg: WorkerConfig, out: Path) -> list[str]:
    return [sys.executable, "-m", "linkbench.worker", role, json.dumps(asdict(cfg)), str(out)]


def _run_processes(link: LinkEmulator, cfg: BenchConfig, mode: str, domain: int, workdir: Path,
                   roles: tuple[str, ...], worker_cfgs: dict, timeout: float) -> dict:
    procs = _Procs()
    env = _ros_env(domain)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCHMARKS_DIR), env.get("PYTHONPATH")) if p)
    logs = Path(cfg.log_dir) if cfg.log_dir else workdir
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for role in roles:  # the cloud first: its subscription is up before the edge looks for it
            side = "cloud" if role == "cloud" else "edge"
            out = workdir / f"{mode}-{role}.json"
            proc = procs.start(role, link.exec_prefix(side) + _worker_cmd(role, worker_cfgs[role], out), env,
                               logs / f"{mode}-{role}.log")
            if side == "edge":
                # `ip netns exec` execs the worker in place, so this pid is the worker itself.
                link.confine_edge(proc.pid)
        codes = procs.wait(timeout)
    finally:
        procs.kill()
    results, failed, teardown = {}, {}, {}
    for role, code in codes.items():
        path = workdir / f"{mode}-{role}.json"
        result = json.loads(path.read_text()) if path.exists() else {}
        if result.get("complete"):
            results[role] = result
            if code != 0:  # measured and written, then crashed while closing ROS
                teardown[role] = code
                log.warning("mode %s: %s exited %s after writing its result", mode, role, code)
        else:
            failed[role] = code
    if failed:
        tails = {r: (logs / f"{mode}-{r}.log").read_text(errors="replace")[-1500:] for r in failed}
        raise RuntimeError(f"mode {mode}: worker(s) failed {failed} (None = timed out):\n"
                           + "\n".join(f"--- {r} ---\n{t}" for r, t in tails.items()))
    if teardown:
        results["teardown_exit_codes"] = teardown
    return results


def _mean(values) -> float:
    return sum(values) / len(values) if values else 0.0


def _summarise(mode: str, cfg: BenchConfig, rate: float, res: dict) -> dict:
    edge = res["edge"]
    cloud = res.get("cloud")
    n_batches = -(-cfg.samples // cfg.batch_size)
    t_end = edge["t_end"] if mode in ("split", "edge-only") else max(edge["t_end"], cloud["t_end"])
    wall = t_end - edge["t_start"]
    row = {"mode": mode, "wall_s": wall, "s_per_sample": wall / cfg.samples,
           "epoch_s": wall / cfg.samples * cfg.epoch_samples, "samples_per_s": cfg.samples / wall,
           "edge_compute_s_per_batch": _mean(edge["compute_s"])}
    if cloud is not None:
        row["cloud_compute_s_per_batch"] = _mean(cloud["compute_s"])
    if mode == "edge-only":
        row.update(wire_bytes=0, payload_bytes=0)
        row["bound_s"] = sum(edge["compute_s"])
        return row
    _link_metrics(row, cfg, rate, edge)
    link_s_per_batch = row["link_s_per_batch"]
    stages = {"edge": row["edge_compute_s_per_batch"], "link": link_s_per_batch,
              "cloud": row["cloud_compute_s_per_batch"]}
    if mode in PIPELINED:
        # One batch fills the pipeline; after that the slowest stage sets the pace.
        slowest = max(stages, key=stages.get)
        row["bound_s"] = sum(stages.values()) + (n_batches - 1) * stages[slowest]
        row["bottleneck"] = slowest
    else:  # split learning: every stage, and the gradient's way back, in series
        row["bound_s"] = sum(edge["compute_s"]) + sum(edge["round_trip_s"])
        row["bottleneck"] = "round trip"
        row["round_trip_s_per_batch"] = _mean(edge["round_trip_s"])
    row["bound_samples_per_s"] = cfg.samples / row["bound_s"]
    row["throughput_over_bound"] = row["samples_per_s"] / row["bound_samples_per_s"]
    return row


def _link_metrics(row: dict, cfg: BenchConfig, rate: float, res: dict) -> None:
    """Wire and payload figures of a link mode into ``row`` (which has ``wall_s``)."""
    c0, c1 = res["counters_start"], res["counters_end"]
    wire, payload, wall = c1["tx_bytes"] - c0["tx_bytes"], res["payload_bytes"], row["wall_s"]
    row.update(wire_bytes=wire, wire_packets=c1["tx_packets"] - c0["tx_packets"],
               downlink_bytes=c1["rx_bytes"] - c0["rx_bytes"], payload_bytes=payload,
               payload_bits_per_sample=payload * 8 / cfg.samples, wire_bits_per_sample=wire * 8 / cfg.samples,
               wire_over_payload=wire / payload if payload else None,
               goodput_bps=payload * 8 / wall, link_utilisation=wire * 8 / (rate * wall),
               link_s_per_batch=wire * 8 / rate / -(-cfg.samples // cfg.batch_size))


def _summarise_nodes(cfg: BenchConfig, rate: float, res: dict) -> dict:
    """Build the hierarchical row from what the monitor saw of the nodes.

    The nodes do not publish their compute time per step, so there is no stage bound, only the link's share.
    """
    wall = res["t_end"] - res["t_start"]
    row = {"mode": "hierarchical", "runtime": "nodes", "wall_s": wall, "s_per_sample": wall / cfg.samples,
           "epoch_s": wall / cfg.samples * cfg.epoch_samples, "samples_per_s": cfg.samples / wall,
           "edge_compute_s_per_batch": None, "cloud_compute_s_per_batch": None, "bottleneck": None}
    if res.get("t_first_frame") is not None:
        row["wall_from_first_frame_s"] = res["t_end"] - res["t_first_frame"]
    _link_metrics(row, cfg, rate, res)
    edge = res["node_status"].get("edge_node", {})
    row.update(batches=res["batches"], resent=int(edge.get("resent", 0)), frames_published=res["frames_published"],
               frames_received_by_edge=int(edge.get("frames", 0)),
               dropped_train_buffer=int(edge.get("dropped_train_buffer", 0)),
               # The edge's quantizing, packing and coding time per batch, part of its stage (issue 14).
               coding=edge.get("coding"), encode_ms=float(edge["encode_ms"]) if "encode_ms" in edge else None,
               exit_codes=res["exit_codes"], loss_first_last=[res["cloud_losses"][0], res["cloud_losses"][-1]],
               # When each batch left the edge's trainer and when the cloud trained it, s after the start.
               edge_batch_s=[round(t - res["t_start"], 3) for t in res["edge_batch_times"]],
               cloud_batch_s=[round(t - res["t_start"], 3) for t in res["cloud_batch_times"]])
    return row


def _estimates(cfg: BenchConfig, rate: float, fwd: dict, flops: float, jpeg_bits: float | None) -> dict:
    """Eq. 1-5 for ``cfg.samples`` samples, from this machine's forward times (edge ones under the quota)."""
    from hiertrain_ros.core.models import build_model, count_params
    from hiertrain_ros.core.runtime import (RuntimeParams, beta_for, comm_time, estimate_epoch, fullcloud_time,
                                            pipelined_time)
    from hiertrain_ros.core.training import paper_optim

    quota = cfg.edge_cpu_quota or 1.0
    alpha = fwd["alpha_measured"] if cfg.alpha is None else cfg.alpha
    params = RuntimeParams(alpha=alpha, beta=beta_for(paper_optim(cfg.arch).name), s_edge=flops * min(quota, 1.0),
                           s_cloud=flops * cfg.cloud_threads, s_net=rate)
    spec = cfg.spec()
    model = build_model(cfg.arch, width=cfg.width)
    est = estimate_epoch(spec, cfg.samples, cfg.batch_size, params,
                         (fwd["edge_under_quota"], fwd["cloud"], fwd["full"]), edge_speed_ratio=1.0, model=model)
    batches = cfg.samples / cfg.batch_size
    t_edge_only = (fwd["full_under_quota"] * batches * (1 + params.alpha)
                   + est["updates"] * params.beta * count_params(model) / params.s_edge)
    out = {
        "hierarchical": est["T_hier"],
        "fullcloud-raw": est["T_full"],
        # Eq. 1 with nothing overlapped, plus nothing for the (unshaped) gradient download.
        "split": est["t_edge_fwd"] + est["t_comm"] + est["t_cloud_fwd"] + est["t_cloud_bwd"] + est["t_edge_bwd"],
        "edge-only": t_edge_only,
    }
    # The same terms with batches overlapping across the stages; split learning cannot overlap
    # (the edge waits for the gradient) and edge-only has one stage.
    pipelined = {"hierarchical": est["T_hier_pipelined"], "fullcloud-raw": est["T_full_pipelined"],
                 "split": out["split"], "edge-only": t_edge_only}
    if jpeg_bits is not None:
        t_jpeg_comm = comm_time(jpeg_bits * cfg.samples, rate)
        out["fullcloud-jpeg"] = fullcloud_time(t_jpeg_comm, est["t_full_fwd"], est["t_full_bwd"])
        pipelined["fullcloud-jpeg"] = pipelined_time((t_jpeg_comm, est["t_full_fwd"] + est["t_full_bwd"]), batches)
    return {"per_mode_s": out, "pipelined_per_mode_s": pipelined, "terms": est, "params": asdict(params)}


def run_link_bench(cfg: BenchConfig, *, progress=print) -> dict:
    """Set up the link, run ``cfg.modes`` one after the other, tear everything down; return the report."""
    import torch

    from hiertrain_ros.core.runtime import RAW_INPUT_BITS, measure_forward_times, parse_link

    rate = parse_link(cfg.link)
    spec = cfg.spec()
    largest = cfg.batch_size * RAW_INPUT_BITS // 8 + 4096  # a raw frame batch + message fields
    link = LinkEmulator(rate, queue_bytes=tbf_limit_bytes(rate, largest, cfg.window),
                        edge_cpu_quota=cfg.edge_cpu_quota)

    torch.set_num_threads(cfg.cloud_threads)
    t_edge, t_cloud, t_full = measure_forward_times(spec, cfg.batch_size, reps=5, warmup=2)
    flops = cpu_flops(cfg.cloud_threads)
    fwd = {"edge": t_edge, "cloud": t_cloud, "full": t_full}
    report = {"config": asdict(cfg), "link_bps": rate, "tbf_limit_bytes": link.queue_bytes,
              "cpu_flops_per_thread": flops, "cpu": _cpu_name(), "modes": {}}
    domain = 1 + (os.getpid() % 44) * 5  # five consecutive domains, 1..221
    with tempfile.TemporaryDirectory(prefix="hiertrain-linkbench-") as tmp, link:
        workdir = Path(tmp)
        measured = _run_processes(link, cfg, "measure", domain, workdir, ("measure",),
                                  {"measure": cfg.worker("edge-only")}, 300)["measure"]
        fwd.update(edge_under_quota=measured["edge"], full_under_quota=measured["full"],
                   alpha_measured=measured["alpha"])
        progress(f"# forward s/batch here: edge {t_edge:.4g}, cloud {t_cloud:.4g}, full {t_full:.4g}; "
                 f"under edge quota {cfg.edge_cpu_quota}: edge {measured['edge']:.4g}, full {measured['full']:.4g}; "
                 f"backward/forward {measured['alpha']:.3g}")
        for i, mode in enumerate(cfg.modes):
            start = time.monotonic()
            if mode == "hierarchical":
                logs = (Path(cfg.log_dir) if cfg.log_dir else workdir) / "hierarchical"
                res = run_hierarchical(link, cfg, rate, _ros_env(domain + i), domain + i, logs, cfg.mode_timeout_s)
                report["modes"][mode] = row = _summarise_nodes(cfg, rate, res)
            else:
                roles = ("edge",) if mode == "edge-only" else ("cloud", "edge")
                workers = {"edge": cfg.worker(mode, threads=1, ifname=link.ifname["edge"]),
                           "cloud": cfg.worker(mode, threads=cfg.cloud_threads, ifname=link.ifname["cloud"])}
                res = _run_processes(link, cfg, mode, domain + i, workdir, roles, workers, cfg.mode_timeout_s)
                row = _summarise(mode, cfg, rate, res)
                if "teardown_exit_codes" in res:
                    row["teardown_exit_codes"] = res["teardown_exit_codes"]
                losses = (res["edge"] if mode == "edge-only" else res["cloud"])["losses"]
                row["loss_first_last"] = [losses[0], losses[-1]]
                report["modes"][mode] = row
            progress(f"# {mode}: {row['wall_s']:.3g} s for {cfg.samples} samples "
                     f"({time.monotonic() - start:.3g} s with start-up)")
        report["qdisc"] = link.qdisc_stats()
    jpeg = report["modes"].get("fullcloud-jpeg")
    est = _estimates(cfg, rate, fwd, flops, jpeg["payload_bits_per_sample"] if jpeg else None)
    report["forward_s_per_batch"] = fwd
    report["estimate"] = est
    for mode, row in report["modes"].items():
        e = est["per_mode_s"].get(mode)
        if e:
            row["estimate_s"] = e
            row["estimate_epoch_s"] = e / cfg.samples * cfg.epoch_samples
            row["estimate_error"] = row["wall_s"] / e - 1
        e = est["pipelined_per_mode_s"].get(mode)
        if e:
            row["pipelined_estimate_s"] = e
            row["pipelined_estimate_error"] = row["wall_s"] / e - 1
    report["ratios"] = _ratios(report["modes"], est["per_mode_s"])
    return report


def _ratios(rows: dict, est: dict) -> dict:
    out = {}
    for other in ("fullcloud-raw", "fullcloud-jpeg", "split", "edge-only"):
        if "hierarchical" in rows and other in rows:
            out[f"hierarchical/{other}"] = rows["hierarchical"]["wall_s"] / rows[other]["wall_s"]
            if other in est and "hierarchical" in est:
                out[f"hierarchical/{other} (estimate)"] = est["hierarchical"] / est[other]
    if "hierarchical" in rows and "fullcloud-raw" in rows:
        out["wire bytes hierarchical/fullcloud-raw"] = (rows["hierarchical"]["wire_bytes"]
                                                        / rows["fullcloud-raw"]["wire_bytes"])
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"unknown x{os.cpu_count()}"


def table_rows(report: dict) -> list[dict]:
    rows = []
    for mode, r in report["modes"].items():
        rows.append({
            "mode": mode, "ms/sample": r["s_per_sample"] * 1e3, "epoch_s": r["epoch_s"],
            "est_epoch_s": r.get("estimate_epoch_s"), "est_err": r.get("estimate_error"),
            "pipe_est_err": r.get("pipelined_estimate_error"),
            "wire_B/sample": r["wire_bytes"] / report["config"]["samples"],
            "wire/payload": r.get("wire_over_payload"),
            "goodput_kbps": r["goodput_bps"] / 1e3 if "goodput_bps" in r else None,
            "link_util": r.get("link_utilisation"),
            "bound_ms/sample": r["bound_s"] / report["config"]["samples"] * 1e3 if "bound_s" in r else None,
            "thr/bound": r.get("throughput_over_bound"), "bottleneck": r.get("bottleneck"),
        })
    return rows


def plot(report: dict, directory: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(report["modes"])
    rows = report["modes"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(modes))
    n = report["config"]["samples"]
    ax1.bar([i - 0.27 for i in x], [rows[m]["s_per_sample"] * 1e3 for m in modes], 0.27, label="measured")
    ax1.bar(list(x), [rows[m].get("estimate_s", 0) / n * 1e3 for m in modes], 0.27, label="Eq. 1/5 estimate")
    ax1.bar([i + 0.27 for i in x], [rows[m].get("pipelined_estimate_s", 0) / n * 1e3 for m in modes], 0.27,
            label="estimate, batches pipelined")
    ax1.set_xticks(list(x), modes, rotation=20)
    ax1.set_ylabel("ms per sample")
    ax1.legend()
    ax2.bar(list(x), [rows[m]["wire_bytes"] / report["config"]["samples"] for m in modes])
    ax2.set_xticks(list(x), modes, rotation=20)
    ax2.set_ylabel("bytes on the wire per sample")
    c = report["config"]
    fig.suptitle(f"{c['arch']} w{c['width']:g} pos {c['split_point']}, link {report['link_bps']:.3g} bit/s, "
                 f"edge quota {c['edge_cpu_quota']}, {c['samples']} samples")
    return _save(fig, directory, "linkbench.png")


def _save(fig, directory: str, name: str) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / name
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- separation positions (paper Fig. 8: estimate vs measurement per position) --------------------

def parse_positions(value: str, arch: str) -> list[int]:
    """``"all"`` or a comma-separated list such as ``"1,3,5"`` -> sorted valid positions of ``arch``."""
    from hiertrain_ros.core.models import positions

    valid = positions(arch)
    if value.strip().lower() == "all":
        return list(valid)
    try:
        chosen = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"positions must be 'all' or a comma-separated list of integers, got {value!r}") from None
    bad = [p for p in chosen if p not in valid]
    if bad or not chosen:
        raise ValueError(f"{arch} positions are {valid}, got {value!r}")
    return chosen


def run_positions(cfg: BenchConfig, positions: list[int], *, progress=print) -> dict:
    """Run ``cfg.modes`` (normally hierarchical only) once per separation position; one fresh link each."""
    from dataclasses import replace

    reports = {}
    for p in positions:
        progress(f"## position {p}")
        reports[str(p)] = run_link_bench(replace(cfg, split_point=p), progress=progress)
    first = next(iter(reports.values()))
    return {"config": {**asdict(cfg), "split_point": None, "positions": positions}, "link_bps": first["link_bps"],
            "cpu": first["cpu"], "positions": reports, "rows": position_rows(reports)}


def position_rows(reports: dict, mode: str = "hierarchical") -> list[dict]:
    rows = []
    for p, rep in reports.items():
        r = rep["modes"].get(mode)
        if r is None:
            continue
        terms = rep["estimate"]["terms"]
        n = rep["config"]["samples"]
        rows.append({
            "position": int(p), "mode": mode, "payload_bits/sample": r.get("payload_bits_per_sample"),
            "ms/sample": r["s_per_sample"] * 1e3, "epoch_s": r["epoch_s"], "est_epoch_s": r.get("estimate_epoch_s"),
            "est_err": r.get("estimate_error"), "pipe_est_err": r.get("pipelined_estimate_error"),
            "pipe_est_epoch_s": r["pipelined_estimate_s"] / n * rep["config"]["epoch_samples"]
            if "pipelined_estimate_s" in r else None,
            "est_comm_epoch_s": terms["t_comm"] / n * rep["config"]["epoch_samples"],
            "edge_ms/batch": _ms(r.get("edge_compute_s_per_batch")),
            "cloud_ms/batch": _ms(r.get("cloud_compute_s_per_batch")),
            "link_ms/batch": r.get("link_s_per_batch", 0) * 1e3, "bottleneck": r.get("bottleneck"),
        })
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def plot_positions(report: dict, directory: str) -> Path:
    """Estimated (Eq. 1) vs measured epoch time per separation position, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report["rows"], key=lambda r: r["position"])
    xs = [r["position"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["epoch_s"] for r in rows], "o-", label="measured")
    ax.plot(xs, [r["est_epoch_s"] for r in rows], "s--", label="estimate (Eq. 1)")
    if all(r.get("pipe_est_epoch_s") for r in rows):
        ax.plot(xs, [r["pipe_est_epoch_s"] for r in rows], "^:", label="estimate, batches pipelined")
    ax.set_xticks(xs)
    ax.set_xlabel("separation position")
    ax.set_ylabel(f"epoch time, s ({report['config']['epoch_samples']} samples)")
    ax.set_ylim(bottom=0)
    ax.legend()
    c = report["config"]
    ax.set_title(f"{c['arch']} w{c['width']:g} hierarchical, link {report['link_bps']:.3g} bit/s,\n"
                 f"edge quota {c['edge_cpu_quota']}, {c['bits']} bits, budget {c['budget_bits']} bits, "
                 f"{c['samples']} samples/position", fontsize=9)
    return _save(fig, directory, "linkbench_positions.png")
