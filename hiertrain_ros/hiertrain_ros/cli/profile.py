"""``hiertrain profile``: edge/cloud parameters, training MACs, wire bits and privacy per separation position."""

from __future__ import annotations

import logging

from .common import add_model_options

log = logging.getLogger(__name__)

COLUMNS = ["position", "feature", "edge_params", "cloud_params", "full_params", "edge_MACs", "cloud_MACs",
           "full_MACs", "bits/sample", "raw_bits"]


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="parameters, training MACs and bits per sample at each separation position")
    add_model_options(p, skip=("split_point",))
    p.add_argument("--position", default="all", help="separation position N (paper numbering) or 'all'")
    p.add_argument("--batch-size", type=int, default=32, help="samples sharing one 32-bit scale")
    p.add_argument("--measure", action="store_true",
                   help="time forward, backward and update per layer (between positions) on this machine instead; "
                        "--json writes the profile that estimate and schedule read")
    p.add_argument("--privacy", action="store_true",
                   help="also measure each position's privacy (L2S §III-C, core.privacy: KL of a reference "
                        "classifier between the frame and its reconstruction from the decoded features; "
                        "trains small networks, minutes)")
    add_privacy_options(p)
    p.add_argument("--json", default=None, help="write the table to this file")
    p.add_argument("--plot", default=None, metavar="DIR", help="write Figs 5-7 style PNGs into DIR")
    p.set_defaults(func=run)


def add_privacy_options(p) -> None:
    """Add ``--data`` and one ``--privacy-FIELD`` option per :class:`core.privacy.PrivacyConfig` field."""
    from dataclasses import fields

    from ..core.privacy import PrivacyConfig

    p.add_argument("--data", default="fashion-mnist", help="frames for --privacy: fashion-mnist or cifar10-dir:PATH")
    for f in fields(PrivacyConfig):
        p.add_argument(f"--privacy-{f.name.replace('_', '-')}", dest=f"privacy_{f.name}", type=type(f.default),
                       default=f.default, help=f"{f.metadata['help']} (default {f.default})")


def _privacy(args, rows) -> dict:
    """Privacy of each row's position (core.inversion.profile_privacy), logged as it goes."""
    from dataclasses import fields

    from ..core.data import load_dataset
    from ..core.inversion import profile_privacy
    from ..core.privacy import PrivacyConfig
    from .common import spec_from_args

    config = PrivacyConfig(**{f.name: getattr(args, f"privacy_{f.name}") for f in fields(PrivacyConfig)})
    train = load_dataset(args.data, "train")
    spec = spec_from_args(args, split_point=rows[0].position)
    if train.num_classes != spec.num_classes:
        raise ValueError(f"--data {args.data} has {train.num_classes} classes, --num-classes is {spec.num_classes}")
    return profile_privacy(spec, [r.position for r in rows], train, load_dataset(args.data, "test"), config,
                           progress=lambda r: log.info("privacy at position %d: %.4g nats", r.position, r.privacy))


def _positions(value: str) -> list[int] | None:
    if value.strip().lower() == "all":
        return None
    try:
        return [int(value)]
    except ValueError:
        raise ValueError(f"--position must be an integer or 'all', got {value!r}") from None


def run(args) -> int:
    from ..core.costs import cost_table
    from .common import print_table, write_json

    if args.measure and args.privacy:
        raise ValueError("--privacy adds to the cost table; run it without --measure")
    if args.measure:
        from ..core.hierschedule import profile_layers

        profile = profile_layers(args.model, width=args.width, num_classes=args.num_classes,
                                 batch_size=args.batch_size)
        print_table([{"layer": layer["name"], "forward_ms/sample": 1e3 * layer["forward_s"],
                      "backward_ms/sample": 1e3 * layer["backward_s"], "update_ms": 1e3 * layer["update_s"],
                      "output_bits": layer["output_bits"], "param_bits": layer["param_bits"]}
                     for layer in profile["layers"]])
        write_json(args.json, profile)
        return 0
    rows = cost_table(args.model, positions=_positions(args.position), bits=args.bits,
                      budget_bits=args.budget_bits, width=args.width, num_classes=args.num_classes,
                      batch_size=args.batch_size)
    privacy = _privacy(args, rows) if args.privacy else None
    scores = {row["position"]: row for row in privacy["rows"]} if privacy else {}
    print_table([{"position": r.position, "feature": "x".join(map(str, r.feature_shape)),
                  "edge_params": r.edge_params, "cloud_params": r.cloud_params, "full_params": r.full_params,
                  "edge_MACs": f"{r.edge_macs:.3g}", "cloud_MACs": f"{r.cloud_macs:.3g}",
                  "full_MACs": f"{r.full_macs:.3g}", "bits/sample": f"{r.bits_per_sample:.7g}", "raw_bits": r.raw_bits,
                  **({"privacy": scores[r.position]["privacy"], "recon_MSE": scores[r.position]["reconstruction_mse"]}
                     if privacy else {})}
                 for r in rows], COLUMNS + (["privacy", "recon_MSE"] if privacy else []))
    print(f"MACs: per sample, one training step = 3 x forward (conv + linear only); "
          f"bits/sample include the 32-bit scale / {args.batch_size}")
    out = {"model": args.model, "mac_convention": "FlopCounterMode forward FLOPs/2 on one 1x3x32x32 sample; "
           "training step = 3 x forward", "rows": [r.as_dict() for r in rows]}
    if privacy:
        print(f"privacy: {privacy['method']}; higher is more private; an attacker who learnt nothing scores "
              f"{privacy['blind_kl']:.4g} (reference's held-out accuracy "
              f"{privacy['reference']['held_out_accuracy']:.3f})")
        for row in out["rows"]:
            score = scores[row["position"]]
            row.update(privacy=score["privacy"], privacy_sem=score["privacy_sem"],
                       reconstruction_mse=score["reconstruction_mse"],
                       privacy_edge_early_exit_accuracy=score["early_exit_accuracy"])
        out["privacy"] = {k: v for k, v in privacy.items() if k != "rows"} | {"data": args.data}
    write_json(args.json, out)
    if args.plot:
        for path in plot(rows, args.plot):
            log.info("wrote %s", path)
    return 0


def plot(rows, out_dir) -> list[str]:
    """Figs 5-7 of the paper: params, training MACs and bits per sample against the position."""
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch = rows[0].arch
    pos = [r.position for r in rows]
    figures = [
        ("params", "parameters", [("edge", [r.edge_params for r in rows]), ("cloud", [r.cloud_params for r in rows])],
         ("full-cloud", rows[0].full_params), True),
        ("macs", "MACs per sample, one training step",
         [("edge", [r.edge_macs for r in rows]), ("cloud", [r.cloud_macs for r in rows])],
         ("full-cloud", rows[0].full_macs), True),
        ("bits", "bits per sample sent to the cloud", [("hierarchical", [r.bits_per_sample for r in rows])],
         ("full-cloud (raw image)", rows[0].raw_bits), False),
    ]
    paths = []
    for name, ylabel, series, (base_label, base), log_y in figures:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
        n = len(series)
        bar_w = 0.8 / n
        for i, (label, values) in enumerate(series):
            ax.bar([p + (i - (n - 1) / 2) * bar_w for p in pos], values, bar_w, label=label)
        ax.axhline(base, color="black", linestyle="--", linewidth=1.2, label=base_label)
        # Headroom above the full-cloud line keeps the legend clear of the bars.
        if log_y:
            ax.set_yscale("log")
            ax.set_ylim(top=base * 6)
        else:
            ax.set_ylim(0, base * 1.3)
        ax.set_xticks(pos)
        ax.set_xlabel("separation position")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{arch} (width {rows[0].width:g}, {rows[0].bits}-bit, budget {rows[0].budget_bits} bits)")
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(loc="upper center", ncol=n + 1, fontsize="small")
        fig.tight_layout()
        path = out / f"{arch}_{name}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(str(path))
    return paths
