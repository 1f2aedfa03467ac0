"""``hiertrain plan``: choose the separation position and the exits of both parts.

The position by Algorithm 1 (paper §III-C), or by the edge's share of the training memory or a latency budget on
the edge's answer (EdgeLessPart §II).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .common import add_model_options
from .estimate import add_privacy_floor_arguments, add_runtime_arguments, parse_positions, privacy_floor, runtime_params

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "kb": 1e3, "mb": 1e6, "gb": 1e9,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30}


def parse_bytes(value: str) -> float:
    """``2000000``, ``2e6``, ``512k``, ``64MiB``, ``2GB`` -> bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"edge memory must be bytes like 2e6, 512k or 64MiB, got {value!r}")
    try:
        amount = float(match.group(1)) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"edge memory must be bytes like 2e6, 512k or 64MiB, got {value!r}") from None
    if not amount > 0:
        raise ValueError(f"edge memory must be > 0, got {value!r}")
    return amount


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="select the edge/cloud separation position (Algorithm 1, or by memory or "
                       "latency) and the exits")
    p.add_argument("--by", choices=PLAN_MODES, default="algorithm1",
                   help="algorithm1: the constraints below, with training (default); memory: the deepest split whose "
                        "edge part needs at most --memory-share of the training memory; latency: the deepest whose "
                        "edge forward pass on --edge-profile fits --answer-latency (both: no data, no training)")
    p.add_argument("--memory-share", type=float, default=None,
                   help="--by memory: the edge's share of the whole model's training memory (default 0.7)")
    p.add_argument("--edge-profile", metavar="FILE", default=None,
                   help="--by latency: the edge device's profile (hiertrain profile --measure --json FILE, run there)")
    p.add_argument("--answer-latency", type=float, default=None, metavar="S",
                   help="--by latency: seconds per sample the edge's forward pass to the split may take")
    p.add_argument("--exits", type=int, choices=range(1, 4), default=1,
                   help="edge exits (the last at the split); written as edge_node.exits")
    p.add_argument("--cloud-exits", type=int, choices=range(1, 4), default=1,
                   help="cloud exits (the last the network's output); written as cloud_node.exits")
    p.add_argument("--exit-placement", choices=("linear", "pareto"), default="linear",
                   help="where the earlier exits of each part sit")
    add_model_options(p, skip=("split_point", "num_classes"))  # candidates below; the dataset sets classes
    p.add_argument("--positions", default="all", help="candidate positions: 'all' or e.g. 2,3,5")
    p.add_argument("--edge-memory", default=None, help="available edge memory in bytes (e.g. 2e6, 64MiB); "
                   "omitted: Loop 1 skipped")
    p.add_argument("--link", default="3g", help="3g, 4g or an upload speed in bits/s")
    p.add_argument("--max-runtime", type=float, default=None,
                   help="accepted runtime of ONE epoch in seconds; omitted: Loops 2 and 3 skipped")
    p.add_argument("--min-accuracy", type=float, default=None,
                   help="accepted final-exit test accuracy in 0..1; omitted: Loop 4 skipped")
    p.add_argument("--epochs", type=int, default=1, help="total training epochs per position in Loop 4")
    p.add_argument("--subset", type=int, default=None, help="train on the first N training images")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist or cifar10-dir:PATH")
    p.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(p)
    add_privacy_floor_arguments(p)
    p.add_argument("--json", default=None, help="write the plan to this file")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="write the accuracy-vs-estimated-runtime guide (3G and 4G, paper Fig. 9) here")
    p.add_argument("--accuracy-json", default=None, metavar="FILE",
                   help='extra accuracies for --plot: {"3": 0.89, "full-cloud": 0.91, ...}')
    # What each of Algorithm 1's options is when not given: --by memory|latency refuse any other value.
    p.set_defaults(func=run, algorithm1_defaults={attr: p.get_default(attr) for attr, _ in _ALGORITHM1_ONLY})


def run(args) -> int:
    if args.by != "algorithm1":
        return run_constrained(args)
    if args.edge_profile or args.answer_latency is not None or args.memory_share is not None:
        raise ValueError("--memory-share, --edge-profile and --answer-latency go with --by memory or --by latency")
    from ..core.data import load_dataset
    from ..core.models import SplitSpec, build_model
    from ..core.planner import InProcessTrainer, edge_param_bytes, select_position
    from ..core.runtime import LINK_PRESETS, estimate_epoch, measure_forward_times, parse_link
    from .common import print_table, spec_from_args, write_json

    if args.min_accuracy is not None and not 0 <= args.min_accuracy <= 1:
        raise ValueError(f"--min-accuracy is a fraction in 0..1, got {args.min_accuracy}")
    edge_memory = parse_bytes(args.edge_memory) if args.edge_memory is not None else None
    s_net = parse_link(args.link)
    params = runtime_params(args, s_net)
    candidates = parse_positions(args.positions, args.model)
    extra_accuracy = _read_accuracy_json(args.accuracy_json) if args.accuracy_json else {}

    train = load_dataset(args.data, "train").subset(args.subset)
    test = load_dataset(args.data, "test").subset(args.test_subset)
    samples = len(train)
    model = build_model(args.model, num_classes=train.num_classes, width=args.width)

    def spec_for(position: int) -> SplitSpec:
        return spec_from_args(args, split_point=position, num_classes=train.num_classes)

    candidates = privacy_floor(args, candidates, spec_for(candidates[0]))
    forward_cache: dict = {}

    def forward_times(position: int):
        if position not in forward_cache:
            full = forward_cache.get("full")
            t_edge, t_cloud, t_full = measure_forward_times(spec_for(position), args.batch_size, args.reps,
                                                            args.device, model=model, include_full=full is None,
                                                            warmup=args.warmup)
            forward_cache["full"] = full if t_full is None else t_full
            forward_cache[position] = (t_edge, t_cloud, forward_cache["full"])
        return forward_cache[position]

    def estimate(position: int, link_params=params) -> dict:
        return estimate_epoch(spec_for(position), samples, args.batch_size, link_params, forward_times(position),
                              args.edge_speed_ratio, model=model)

    trainer = InProcessTrainer(spec_for, train, test, epochs=args.epochs, batch_size=args.batch_size,
                               s_net=s_net, seed=args.seed)
    result = select_position(
        candidates,
        edge_bytes=lambda p: edge_param_bytes(spec_for(p), model),
        estimate_runtime=lambda p: estimate(p)["T_hier"],
        measure_epoch=trainer.measure_epoch,
        train_accuracy=trainer.train_accuracy,
        edge_memory=edge_memory, max_runtime=args.max_runtime, min_accuracy=args.min_accuracy)

    print(f"# {args.model} width {args.width:g} on {args.data} ({samples} training samples/epoch), "
          f"link {s_net:g} bit/s, edge memory {edge_memory} B, max epoch runtime {args.max_runtime} s, "
          f"min accuracy {args.min_accuracy}")
    print_table([{"pos": p, "edge_bytes": result.edge_bytes.get(p), "est_epoch_s": result.estimated_s.get(p),
                  "measured_epoch_s": result.measured_s.get(p), "accuracy": result.accuracy.get(p)}
                 for p in candidates])
    for name, label in (("s1", "loop 1 edge memory"), ("s2", "loop 2 estimated runtime"),
                        ("s3", "loop 3 measured runtime, deepest first")):
        loop = {"s1": "loop1", "s2": "loop2", "s3": "loop3"}[name]
        note = " (skipped: no constraint)" if loop in result.skipped else ""
        print(f"{name.upper()} after {label}{note}: {getattr(result, name)}")
    note = " (loop 4 skipped: deepest of S3)" if "loop4" in result.skipped else ""
    print(f"chosen position: {result.chosen}{note}")
    exits = _exits(args, spec_for(result.chosen)) if result.chosen is not None else {}

    out = {"model": args.model, "width": args.width, "data": args.data, "samples": samples, "s_net": s_net,
           "plan": result.to_dict(), "training": trainer.results, **exits}
    if args.plot:
        accuracy = {**result.accuracy, **extra_accuracy}
        out["plot"] = _plot(args, accuracy, estimate, params, LINK_PRESETS, candidates)
    write_json(args.json, out)
    return 0


PLAN_MODES = ("algorithm1", "memory", "latency")
# Algorithm 1's options (its constraints, data, training and timing), which --by memory and --by latency do not
# use: given with another value than the default, they are refused rather than silently ignored.
_ALGORITHM1_ONLY = (("positions", "--positions"), ("edge_memory", "--edge-memory"), ("max_runtime", "--max-runtime"),
                    ("min_accuracy", "--min-accuracy"), ("privacy_floor", "--privacy-floor"),
                    ("privacy_json", "--privacy-json"), ("link", "--link"), ("epochs", "--epochs"),
                    ("subset", "--subset"), ("test_subset", "--test-subset"), ("data", "--data"), ("seed", "--seed"),
                    ("alpha", "--alpha"), ("beta", "--beta"), ("edge_flops", "--edge-flops"),
                    ("cloud_flops", "--cloud-flops"), ("reps", "--reps"), ("warmup", "--warmup"),
                    ("device", "--device"), ("plot", "--plot"), ("accuracy_json", "--accuracy-json"))


def run_constrained(args) -> int:
    """``--by memory`` or ``--by latency``: the split from the model alone or from the edge's profile; no data."""
    from ..core import progressive
    from ..core.archs import positions
    from .common import print_table, spec_from_args, write_json

    defaults = getattr(args, "algorithm1_defaults", {})
    given = [flag for attr, flag in _ALGORITHM1_ONLY
             if attr != "positions" and getattr(args, attr, None) != defaults.get(attr)]
    if args.positions.strip().lower() != "all":  # explicit positions: the mode picks among all of them
        given.insert(0, "--positions")
    if given:
        raise ValueError(f"--by {args.by} does not use {', '.join(given)} (options of --by algorithm1)")
    valid = positions(args.model)
    if args.by == "memory":
        if args.edge_profile or args.answer_latency is not None or args.edge_speed_ratio is not None:
            raise ValueError("--edge-profile, --answer-latency and --edge-speed-ratio go with --by latency")
        share = 0.7 if args.memory_share is None else args.memory_share
        chosen = progressive.split_by_memory(args.model, share, width=args.width, batch_size=args.batch_size)
        *upto, whole = progressive.training_memory(args.model, width=args.width, batch_size=args.batch_size)
        rows = [{"pos": p, "edge_training_MB": mem / 1e6, "share": mem / whole} for p, mem in zip(valid, upto)]
        constraint = {"memory_share": share, "training_memory_bytes": whole}
        print(f"# {args.model} width {args.width:g}: training memory {whole / 1e6:.3g} MB at batch "
              f"{args.batch_size}; the edge may need {share:.0%} of it")
    else:
        if args.memory_share is not None:
            raise ValueError("--memory-share goes with --by memory")
        if not args.edge_profile or args.answer_latency is None:
            raise ValueError("--by latency needs --edge-profile FILE and --answer-latency S")
        if not args.answer_latency > 0:
            raise ValueError(f"--answer-latency must be > 0 seconds, got {args.answer_latency}")
        profile = _read_edge_profile(args.edge_profile, args.model, args.width, len(valid))
        slowdown = args.edge_speed_ratio or 1.0  # the profile is the edge's own: as measured, unless told
        chosen = progressive.split_by_latency(profile, args.answer_latency, slowdown)
        elapsed, rows = 0.0, []
        for p, layer in zip(valid, profile["layers"]):
            elapsed += layer["forward_s"] * slowdown
            rows.append({"pos": p, "edge_forward_ms/sample": 1e3 * elapsed})
        constraint = {"answer_latency_s": args.answer_latency, "edge_profile": args.edge_profile,
                      "edge_speed_ratio": slowdown}
        print(f"# {args.model} width {args.width:g}: edge forward pass to the split within "
              f"{1e3 * args.answer_latency:g} ms per sample on {args.edge_profile} (x{slowdown:g})")
    print_table([{**row, "chosen": "<-" if row["pos"] == chosen else ""} for row in rows])
    print(f"chosen position: {chosen} (by {args.by})")
    exits = _exits(args, spec_from_args(args, split_point=chosen, num_classes=10))
    write_json(args.json, {"model": args.model, "width": args.width, "by": args.by, **constraint,
                           "rows": rows, "plan": {"chosen": chosen}, **exits})
    return 0


def _exits(args, spec) -> dict:
    """Print and return where both parts' exits sit at ``spec``'s split, and the params-file sections for them."""
    import yaml

    from ..core import progressive
    from ..core.archs import positions

    try:
        edge = [*progressive.edge_exits(spec, args.exits, args.exit_placement), spec.split_point]
    except ValueError:
        raise ValueError(f"--exits {args.exits}: the edge part up to position {spec.split_point} has room for "
                         f"{min(spec.split_point, 3)}") from None
    try:
        cloud = [*progressive.cloud_exits(spec, args.cloud_exits, args.exit_placement), "output"]
    except ValueError:
        room = min(3, len(positions(spec.arch)) - spec.split_point + 1)
        raise ValueError(f"--cloud-exits {args.cloud_exits}: the cloud part after position {spec.split_point} has "
                         f"room for {room} (the network's output included)") from None
    placement = {"exit_placement": args.exit_placement}
    params = {"/**": {"ros__parameters": {"model": spec.arch, "width": spec.width, "split_point": spec.split_point}},
              "edge_node": {"ros__parameters": {"exits": args.exits, **placement}},
              "cloud_node": {"ros__parameters": {"exits": args.cloud_exits, **placement}}}
    print(f"edge exits after positions {edge} (the last at the split); cloud exits after {cloud}")
    print("params file (config/edge_cloud.yaml):")
    print(yaml.safe_dump(params, sort_keys=False).rstrip())
    return {"split_point": spec.split_point, "edge_exit_positions": edge, "cloud_exit_positions": cloud,
            "params": params}


def _read_edge_profile(path: str, arch: str, width: float, n_positions: int) -> dict:
    """Return the edge's measured profile, checked against the model options (ValueError naming what is wrong)."""
    hint = "make one with hiertrain profile --measure --json FILE on the edge"
    try:
        profile = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--edge-profile {path}: no such file ({hint})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--edge-profile {path} is not a profile JSON ({exc}; {hint})") from None
    try:
        layers, forward = profile["layers"], [float(layer["forward_s"]) for layer in profile["layers"]]
        of = (profile["arch"], profile["width"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"--edge-profile {path} has no arch, width and layers with forward_s ({hint})") from None
    if of != (arch, width):
        raise ValueError(f"--edge-profile {path} is of {of[0]} width {of[1]}, not --model {arch} --width {width:g}")
    if len(layers) != n_positions + 1 or not all(t >= 0 for t in forward):
        raise ValueError(f"--edge-profile {path} has {len(layers)} layers, {arch} needs {n_positions + 1} "
                         f"with forward_s >= 0 ({hint})")
    return profile


def _read_accuracy_json(path: str) -> dict:
    data = json.loads(Path(path).read_text())
    accuracy = {}
    for key, value in data.items():
        k = str(key).lower()
        accuracy["full-cloud" if k in ("full", "full-cloud", "fullcloud") else int(k)] = float(value)
    return accuracy


def _plot(args, accuracy: dict, estimate, params, presets, candidates) -> list[str]:
    """Fig. 9: accuracy vs estimated epoch runtime, one panel per link; returns the written files."""
    import dataclasses

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = sorted(p for p in accuracy if p != "full-cloud")
    full_acc = accuracy.get("full-cloud")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, link in zip(axes, ("3g", "4g")):
        link_params = dataclasses.replace(params, s_net=presets[link])
        ests = {p: estimate(p, link_params) for p in positions}
        if positions:
            xs = [ests[p]["T_hier"] for p in positions]
            ys = [100 * accuracy[p] for p in positions]
            ax.plot(xs, ys, "o", color="tab:blue", label="hierarchical (label = position)")
            for p, x, y in zip(positions, xs, ys):
                ax.annotate(str(p), (x, y), textcoords="offset points", xytext=(4, 4))
        # T_full does not depend on the position: take it from any estimate.
        t_full = (ests[positions[0]] if positions else estimate(candidates[0], link_params))["T_full"]
        if full_acc is not None:
            ax.plot([t_full], [100 * full_acc], "s", color="tab:red", label="full-cloud")
            ax.annotate("full-cloud", (t_full, 100 * full_acc), textcoords="offset points", xytext=(4, -12))
        else:
            ax.axvline(t_full, color="tab:red", linestyle="--", label="full-cloud runtime (accuracy unknown)")
        ax.set_title(f"{args.model} w{args.width:g}, {link.upper()} ({presets[link] / 1e6:g} Mbit/s)")
        ax.set_xlabel("estimated runtime of one epoch [s]")
        ax.set_ylabel("final-exit test accuracy [%]")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    out_dir = Path(args.plot)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"plan_{args.model}_accuracy_vs_runtime.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [str(path)]
