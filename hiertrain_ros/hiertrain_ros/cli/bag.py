"""``hiertrain bag``: make, record, play and describe rosbag2 bags (mcap or sqlite3)."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("bag", help="make / record / play / describe rosbag2 bags of camera frames and labels")
    bag_sub = p.add_subparsers(dest="bag_verb", required=True)

    m = bag_sub.add_parser("make", help="write a dataset as a camera recording (frames + stamped labels)")
    m.add_argument("--data", default="fashion-mnist", help="fashion-mnist or cifar10-dir:PATH")
    m.add_argument("--subset", type=int, default=None,
                   help="number of frames (default 1000; with --scenario, all of the scenario's)")
    m.add_argument("--scenario", default="",
                   help="play a scenario: a YAML file or a shipped name (class_incremental, domain_shift, "
                        "recurring); labels carry the segment")
    m.add_argument("--rate", type=float, default=30.0, help="frame rate of the recording in Hz (default 30)")
    m.add_argument("--out", required=True, help="bag directory to create")
    m.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    m.add_argument("--holdout-every", type=int, default=5,
                   help="every k-th frame is a held-out test image: truth on /hiertrain/eval/truth, no label")
    m.add_argument("--seed", type=int, default=0, help="order of the dataset images")
    m.add_argument("--width", type=int, default=0, help="resize frames to this width (default: dataset's)")
    m.add_argument("--height", type=int, default=0, help="resize frames to this height (default: dataset's)")
    m.add_argument("--start-ns", type=int, default=None, help="stamp of the first frame (default: now)")

    r = bag_sub.add_parser("record", help="record live topics (raw, any type on the graph) until Ctrl-C")
    r.add_argument("--topics", nargs="+", required=True, metavar="TOPIC")
    r.add_argument("--out", required=True, help="bag directory to create")
    r.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    r.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)")

    pl = bag_sub.add_parser("play", help="publish a bag with its original timing (or in lockstep with the edge)")
    pl.add_argument("bag")
    speed = pl.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=1.0, help="time scale (2: twice as fast)")
    speed.add_argument("--max", action="store_true", help="as fast as possible")
    pl.add_argument("--loop", action="store_true", help="start over at the end (until Ctrl-C)")
    pl.add_argument("--lockstep", action="store_true",
                    help="one frame at a time: wait for the edge (and cloud) to finish each frame and "
                         "training batch before the next; deterministic, never drops")
    pl.add_argument("--topics", nargs="+", default=None, help="play only these topics")
    pl.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                    help="play the bag's topic FROM as TO (repeatable), as ros2 bag play --remap")
    pl.add_argument("--wait-subscribers", type=float, default=0.0,
                    help="wait up to S seconds for a subscriber on every topic before playing")
    pl.add_argument("--wait-acked", type=float, default=10.0,
                    help="at the end, wait up to S seconds until the subscribers acknowledged every reliable "
                         "message (as ros2 bag play --wait-for-all-acked)")
    pl.add_argument("--timeout", type=float, default=30.0, help="lockstep: seconds to wait for each answer")
    pl.add_argument("--auth-key-file", default="", metavar="FILE",
                    help="sign the labels with this key, as the nodes' auth_key_file (docs/security.md)")
    pl.add_argument("--json", default=None, help="write the summary to this file")

    i = bag_sub.add_parser("info", help="topics, types, counts and duration of a bag")
    i.add_argument("bag")
    i.add_argument("--json", default=None, help="write the info to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    return {"make": _make, "record": _record, "play": _play, "info": _info}[args.bag_verb](args)


def _make(args) -> int:
    from .. import bag_files
    from .common import write_json

    if args.scenario:
        import torch

        torch.set_num_threads(1)  # transforms of single 32x32 frames: worker threads would only contend
    subset = args.subset if args.subset is not None else (0 if args.scenario else 1000)
    summary = bag_files.make_bag(args.out, args.data, subset, args.rate, args.storage, args.holdout_every,
                            args.seed, args.width, args.height, args.start_ns, scenario=args.scenario)
    print(f"wrote {summary['frames']} frames ({summary['held_out']} held out"
          f"{', %d segments' % summary['segments'] if args.scenario else ''}) at {summary['rate_hz']:g} Hz, "
          f"{summary['duration_s']:.2f} s, to {summary['bag']} ({summary['storage']})")
    write_json(getattr(args, "json", None), summary)
    return 0


def _info(args) -> int:
    from .. import bag_files
    from .common import print_table, write_json

    info = bag_files.bag_info(args.bag)
    print(f"bag:      {info['path']} ({info['storage']})")
    print(f"messages: {info['messages']}")
    print(f"duration: {info['duration_s']:.3f} s")
    print_table(info["topics"], ["topic", "type", "count"])
    write_json(args.json, info)
    return 0


def _record(args) -> int:
    from ..bag_nodes import record
    from ..ros_common import StopFlag
    from ..ros_common import use_large_data_transport

    stop = StopFlag()  # before anything else: Ctrl-C from here on closes the bag cleanly
    use_large_data_transport()

    def ready(node):
        print(f"recording {', '.join(node.subs)} to {args.out} (Ctrl-C to stop)", flush=True)

    summary = record(args.out, args.topics, args.storage, args.duration, stop, on_ready=ready)
    for topic, entry in summary["topics"].items():
        print(f"{topic}: {entry['messages']} messages ({entry['type'] or 'never seen'})", flush=True)
    print(f"closed {summary['bag']}", flush=True)
    return 0


def _play(args) -> int:
    import rclpy

    from ..bag_nodes import Player
    from ..ros_common import Spinner, StopFlag
    from ..ros_common import use_large_data_transport
    from .common import parse_remaps, write_json

    remap = parse_remaps(args.remap)
    stop = StopFlag()
    use_large_data_transport()  # a 640x480 frame must fit the publisher's shared memory
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    spinner = None
    try:
        player = Player(args.bag, topics=args.topics, remap=remap, lockstep=args.lockstep, key_file=args.auth_key_file)
        spinner = Spinner(player)
        if args.lockstep:
            if args.loop or args.max or args.rate != 1.0:
                raise ValueError("--lockstep sets its own pace: drop --rate/--max/--loop")
            summary = player.play_lockstep(timeout=args.timeout, stop=stop)
        else:
            summary = player.play(rate=args.rate, max_speed=args.max, loop=args.loop, stop=stop,
                                  wait_subscribers=args.wait_subscribers, wait_acked=args.wait_acked)
    finally:
        if spinner:
            spinner.close()
        rclpy.try_shutdown()
        stop.restore()
    rate = summary.get("messages_per_s") or summary.get("frames_per_s")
    print(f"played {sum(summary['published'].values())} messages from {summary['bag']} in "
          f"{summary['elapsed_s']:.2f} s ({rate or 0:.1f}/s)")
    if summary.get("timeouts"):
        print(f"lockstep timeouts: {summary['timeouts']}")
    if summary.get("unacked"):
        print(f"warning: not acknowledged within {args.wait_acked:g} s on {', '.join(summary['unacked'])}: "
              f"a subscriber may have missed messages", file=sys.stderr)
    write_json(args.json, summary)
    return 1 if summary.get("timeouts") else 0
