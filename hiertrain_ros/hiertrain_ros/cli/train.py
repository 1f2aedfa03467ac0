"""``hiertrain train``: offline (no ROS) hierarchical or full-cloud training."""

from __future__ import annotations

from .common import add_model_options


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train offline (no ROS) and report test accuracy")
    add_model_options(p, skip=("num_classes",))  # the dataset sets it
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist or cifar10-dir:PATH")
    p.add_argument("--mode", default="hierarchical", choices=("hierarchical", "full-cloud"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--subset", type=int, default=None, help="use only the first N training images")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coding", default="zstd", choices=("zstd", "none"),
                   help="lossless coding of the edge's feature codes; counted in wire_bits/sample")
    p.add_argument("--json", default=None, help="write the results to this file")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="write the trained weights here for the nodes' init_from (edge.pt and cloud.pt; "
                        "full-cloud: the whole model as model.pt)")
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import asdict

    from tqdm import tqdm

    from ..core.data import load_dataset
    from ..core.training import TrainConfig, train_offline
    from .common import print_table, spec_from_args, write_json

    train = load_dataset(args.data, "train").subset(args.subset)
    test = load_dataset(args.data, "test").subset(args.test_subset)
    config = TrainConfig(**asdict(spec_from_args(args, num_classes=train.num_classes)), mode=args.mode,
                         epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, coding=args.coding)
    with tqdm(total=config.epochs * len(train), unit="img", desc=f"{args.mode} {args.model}") as bar:
        def progress(done, total, loss):
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss:.3f}")
        result = train_offline(config, train, test, progress=progress, save_dir=args.save)
    keys = ["final_accuracy", "early_exit_accuracy"] if args.mode == "hierarchical" else ["accuracy"]
    print_table([{"mode": args.mode, "model": args.model, "position": args.position,
                  **{k: result[k] for k in keys}, "train_s": result["train_seconds"],
                  "wire_bits/sample": result["wire_bits_per_sample"]}])
    write_json(args.json, result)
    for path in result["saved"]:
        print(f"saved {path}")
    return 0
