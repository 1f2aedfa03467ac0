"""``hiertrain estimate``: estimated epoch runtime, hierarchical vs full-cloud (paper Eq. 1-5)."""

from __future__ import annotations

from .common import add_model_options


def add_parser(sub) -> None:
    p = sub.add_parser("estimate", help="estimate one-epoch training runtime per separation position (Eq. 1-5)")
    add_model_options(p, skip=("split_point",))
    p.add_argument("--position", default="all", help="separation position (paper numbering) or 'all'")
    p.add_argument("--link", default="3g", help="3g, 4g or an upload speed in bits/s")
    p.add_argument("--samples", type=int, default=50000, help="samples per epoch (CIFAR-10: 50000)")
    p.add_argument("--batch-size", type=int, default=32)
    add_runtime_arguments(p)
    p.add_argument("--edge-profile", metavar="FILE", help="the edge device's measured profile "
                   "(hiertrain profile --measure --json FILE, run there); with --cloud-profile, replaces the "
                   "FLOPS ratio and the timing here")
    p.add_argument("--cloud-profile", metavar="FILE", help="the cloud's measured profile")
    add_privacy_floor_arguments(p)
    p.add_argument("--json", default=None, help="write the estimates to this file")
    p.set_defaults(func=run)


def add_runtime_arguments(p) -> None:
    """Options shared with ``hiertrain plan``: the constants of Eq. 1-5 and the timing."""
    p.add_argument("--alpha", type=float, default=2.0, help="backward/forward compute ratio")
    p.add_argument("--beta", type=float, default=None,
                   help="FLOPs per parameter update (default: 18 for VGG-16/Adam, 2 for ResNet-18/SGD)")
    p.add_argument("--edge-flops", type=float, default=None, help="edge speed, FLOP/s (default Quadro K620)")
    p.add_argument("--cloud-flops", type=float, default=None, help="cloud speed, FLOP/s (default RTX 2080 Ti)")
    p.add_argument("--edge-speed-ratio", type=float, default=None,
                   help="edge forward time = measured x this (default cloud-flops / edge-flops)")
    p.add_argument("--reps", type=int, default=5, help="timed forward passes per part (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forward passes before timing")
    p.add_argument("--device", default="cpu", help="torch device the forward passes are timed on")


def add_privacy_floor_arguments(p) -> None:
    """Options shared with ``hiertrain plan``: the privacy floor (L2S §III-C) and the profile that scores it."""
    p.add_argument("--privacy-floor", type=float, default=None,
                   help="leave out positions whose privacy (KL, nats) is below this; needs --privacy-json")
    p.add_argument("--privacy-json", metavar="FILE", default=None,
                   help="privacy per position: hiertrain profile --privacy --json FILE, same model, width, bits "
                        "and bit budget")


def privacy_floor(args, positions: list[int], spec) -> list[int]:
    """Return ``positions`` without those below ``--privacy-floor``; ValueError when none is left."""
    if args.privacy_floor is None and args.privacy_json is None:
        return positions
    if args.privacy_floor is None or args.privacy_json is None:
        raise ValueError("--privacy-floor and --privacy-json go together")
    import json
    from pathlib import Path

    from ..core.privacy import allowed_positions, privacy_by_position

    privacy = privacy_by_position(json.loads(Path(args.privacy_json).read_text()), spec)
    try:
        kept = allowed_positions(positions, privacy, args.privacy_floor)
    except ValueError as exc:
        raise ValueError(f"--privacy-floor {args.privacy_floor:g} leaves no position of {positions} "
                         f"({args.privacy_json}): {exc}") from None
    print(f"# privacy floor {args.privacy_floor:g} ({args.privacy_json}): positions kept {kept}, "
          f"left out {[p for p in positions if p not in kept]}")
    return kept


def runtime_params(args, s_net: float):
    from ..core.runtime import PAPER_CLOUD_FLOPS, PAPER_EDGE_FLOPS, RuntimeParams, beta_for
    from ..core.training import paper_optim

    beta = args.beta if args.beta is not None else beta_for(paper_optim(args.model).name)
    return RuntimeParams(alpha=args.alpha, beta=beta, s_edge=args.edge_flops or PAPER_EDGE_FLOPS,
                         s_cloud=args.cloud_flops or PAPER_CLOUD_FLOPS, s_net=s_net)


def _profiles(args) -> tuple[dict, dict] | None:
    """Return the (edge, cloud) profiles given, checked against the model options; None when there are none."""
    import json
    from pathlib import Path

    if not (args.edge_profile or args.cloud_profile):
        return None
    if not (args.edge_profile and args.cloud_profile):
        raise ValueError("--edge-profile and --cloud-profile go together")
    profiles = tuple(json.loads(Path(f).read_text()) for f in (args.edge_profile, args.cloud_profile))
    for name, profile in zip(("edge", "cloud"), profiles):
        if (profile["arch"], profile["width"]) != (args.model, args.width):
            raise ValueError(f"the {name} profile is of {profile['arch']} width {profile['width']}, "
                             f"not {args.model} width {args.width}")
    return profiles


def parse_positions(value: str, arch: str) -> list[int]:
    from ..core.archs import positions

    valid = positions(arch)
    if value.strip().lower() == "all":
        return valid
    try:
        chosen = [int(v) for v in value.split(",")]
    except ValueError:
        raise ValueError(f"position must be 'all' or integers like 3 or 2,3,5, got {value!r}") from None
    bad = [p for p in chosen if p not in valid]
    if bad:
        raise ValueError(f"positions {bad} invalid for {arch}: valid are {valid[0]}..{valid[-1]}")
    return chosen


def run(args) -> int:
    from ..core.models import build_model
    from ..core.hierschedule import split_forward_times
    from ..core.runtime import estimate_epoch, measure_forward_times, parse_link
    from .common import print_table, spec_from_args, write_json

    s_net = parse_link(args.link)
    params = runtime_params(args, s_net)
    chosen = parse_positions(args.position, args.model)
    chosen = privacy_floor(args, chosen, spec_from_args(args, split_point=chosen[0]))
    model = build_model(args.model, num_classes=args.num_classes, width=args.width)
    profiles = _profiles(args)
    rows, results, t_full = [], [], None
    for position in chosen:
        spec = spec_from_args(args, split_point=position)
        if profiles:
            times, ratio = split_forward_times(*profiles, position, args.batch_size), 1.0
        else:
            t_edge, t_cloud, measured_full = measure_forward_times(
                spec, args.batch_size, args.reps, args.device, model=model, include_full=t_full is None,
                warmup=args.warmup)
            t_full = t_full if measured_full is None else measured_full  # the full network is timed once
            times, ratio = (t_edge, t_cloud, t_full), args.edge_speed_ratio
        est = estimate_epoch(spec, args.samples, args.batch_size, params, times, ratio, model=model)
        results.append(est)
        rows.append({"pos": position, "edge_params": est["edge_params"],
                     "bits/sample": round(est["payload_bits_per_sample"], 1),
                     "edge_fwd": est["t_edge_fwd"], "edge_bwd": est["t_edge_bwd"], "comm": est["t_comm"],
                     "cloud_fwd": est["t_cloud_fwd"], "cloud_bwd": est["t_cloud_bwd"],
                     "T_hier_s": est["T_hier"], "T_full_s": est["T_full"], "hier/full": est["ratio"],
                     "pipelined_T_hier_s": est["T_hier_pipelined"], "pipelined_T_full_s": est["T_full_pipelined"]})
    speeds = (f"edge and cloud from the profiles {args.edge_profile} and {args.cloud_profile}" if profiles else
              f"the paper's hardware as a preset: this machine as the cloud, the edge "
              f"x{results[0]['edge_speed_ratio']:.4g} slower")
    print(f"# {args.model} width {args.width:g}, {args.samples} samples, batch {args.batch_size}, "
          f"link {s_net:g} bit/s, alpha {params.alpha:g}, beta {params.beta:g}, {speeds}; times in s per epoch")
    print_table(rows)
    write_json(args.json, {"model": args.model, "width": args.width, "link": args.link, "s_net": s_net,
                           "samples": args.samples, "batch_size": args.batch_size, "estimates": results})
    return 0
