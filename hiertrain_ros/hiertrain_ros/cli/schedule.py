"""``hiertrain schedule``: HierTrain's hybrid-parallel policy over device, edge server and cloud, vs the baselines."""

from __future__ import annotations

import json
from pathlib import Path

from .common import print_table, write_json


def add_parser(sub) -> None:
    p = sub.add_parser("schedule", help="HierTrain's policy (m_s, m_l, b_o, b_s, b_l, mapping) and its predicted "
                                        "per-iteration time against All-Device/Edge/Cloud and JointDNN")
    p.add_argument("--device", metavar="PROFILE.json", help="the device's layer profile (from --save-profile)")
    p.add_argument("--edge", metavar="PROFILE.json", help="the edge server's layer profile")
    p.add_argument("--cloud", metavar="PROFILE.json", help="the cloud's layer profile")
    p.add_argument("--model", default="vgg16", choices=("vgg16", "resnet18"), help="model to profile here")
    p.add_argument("--width", type=float, default=0.25, help="channel width multiplier of the profiled model")
    p.add_argument("--profile-batch", type=int, default=32, help="batch size the profile is measured at")
    p.add_argument("--slowdown", default="10,3,1", metavar="D,E,C",
                   help="roles without a profile file take this machine's profile times these factors "
                        "(device, edge, cloud; an estimate, not a measurement)")
    p.add_argument("--save-profile", metavar="FILE", help="write this machine's measured profile here")
    p.add_argument("--batch-size", type=int, default=64, help="B, the samples of one iteration")
    p.add_argument("--bw-de", type=float, default=5e6, help="device-edge bandwidth, bits/s (paper: 5 Mbit/s)")
    p.add_argument("--bw-ec", type=float, default=1.5e6, help="edge-cloud bandwidth, bits/s (paper: 1.5-5)")
    p.add_argument("--bw-dc", type=float, default=None,
                   help="device-cloud bandwidth, bits/s (default: through the edge server, the slower hop)")
    p.add_argument("--json", default=None, help="write the policy and the baselines to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.hierschedule import ROLES, Links, baselines, problem_from_profiles, profile_layers, scaled, schedule

    factors = [float(v) for v in args.slowdown.split(",")]
    if len(factors) != 3:
        raise ValueError(f"--slowdown needs three factors (device, edge, cloud), got {args.slowdown!r}")
    files = {role: getattr(args, role) for role in ROLES}
    here = None
    if not all(files.values()) or args.save_profile:
        here = profile_layers(args.model, width=args.width, batch_size=args.profile_batch)
        write_json(args.save_profile, here)
    profiles, sources = {}, {}
    for role, factor in zip(ROLES, factors):
        if files[role]:
            profiles[role], sources[role] = json.loads(Path(files[role]).read_text()), files[role]
        else:
            profiles[role], sources[role] = scaled(here, factor), f"this machine x {factor:g}"
    problem = problem_from_profiles(profiles, Links(args.bw_de, args.bw_ec, args.bw_dc), args.batch_size)
    policy = schedule(problem)
    times = {"HierTrain": policy.time_s, **baselines(problem)}
    rows = [{"policy": name, "s_per_iteration": t, "vs_HierTrain": t / policy.time_s} for name, t in times.items()]
    print(f"profiles: {sources}")
    print(f"HierTrain: worker_o={policy.mapping[0]} worker_s={policy.mapping[1]} worker_l={policy.mapping[2]}, "
          f"m_s={policy.m_s} m_l={policy.m_l} of {problem.n} layers, (b_o, b_s, b_l)=({policy.b_o}, {policy.b_s}, "
          f"{policy.b_l}) of B={problem.batch}")
    print_table(rows)
    write_json(args.json, {"policy": policy.__dict__, "layers": problem.n, "profiles": sources,
                           "links_bps": {"device_edge": args.bw_de, "edge_cloud": args.bw_ec,
                                         "device_cloud": args.bw_dc}, "batch": args.batch_size,
                           "per_iteration_s": times})
    return 0
