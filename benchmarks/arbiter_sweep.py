"""The output arbiter's settings, replayed offline on recorded answers (not a test).

``hiertrain replay BAG --answers FILE`` records every frame's label and the edge's and the cloud's answers.
The arbiter does not feed back into training, so the same answers can be put through
:class:`core.fallback.FallbackArbiter` under other settings, frame by frame in stamp order (label, edge answer,
cloud answer), and each setting's output scored per segment against the better path there.  The live output
recorded in FILE is scored too (``recorded_points``): under the settings it ran with, the replay should
reproduce it, up to the order in which labels and answers met in the live fallback (docs/adaptation.md).

    .venv/bin/python benchmarks/arbiter_sweep.py 'WORK/answers-*.json' \
        --setting default --setting recent_window=100,override_guard=false --json out/arbiter_sweep.json

``adapt_bench.py --work WORK`` leaves one answers file per node run in WORK.
"""

from __future__ import annotations

import argparse
import glob
import json
from collections import defaultdict
from pathlib import Path

import yaml

from hiertrain_ros.cli.common import print_table, write_json
from hiertrain_ros.core.fallback import FallbackArbiter


def parse_setting(text: str) -> dict:
    """``"recent_window=100,override_guard=false"`` -> keyword arguments ("default": none)."""
    if text == "default":
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--setting expects NAME=VALUE[,...] or default, got {text!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def replay(frames: list[dict], settings: dict) -> dict:
    """Per segment: the accuracy of edge, cloud, the recorded output and this setting's output."""
    arbiter = FallbackArbiter(clock=lambda: 0.0, heartbeat_timeout_s=float("inf"), **settings)
    arbiter.heartbeat()  # the cloud is up throughout (lockstep replay)
    tally: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for f in frames:
        if "label" not in f or "edge" not in f or "cloud" not in f:
            continue  # held out, or answered by one path only
        stamp, edge, cloud = f["stamp"], f["edge"], f["cloud"]
        arbiter.on_label(stamp, f["label"], f["segment"])
        arbiter.on_edge(stamp, "edge", edge["class_id"], edge["confidence"])
        served = arbiter.on_cloud(stamp, "cloud", "", cloud["class_id"], cloud["confidence"])
        answers = {"edge": edge, "cloud": cloud, "setting": f[served[0]] if served else None,
                   "recorded": f.get("output")}
        for path, answer in answers.items():
            if answer is not None:
                counts = tally[f["segment"]][path]
                counts[0] += answer["class_id"] == f["label"]
                counts[1] += 1
    return {seg: {path: right / n for path, (right, n) in row.items()} for seg, row in sorted(tally.items())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("answers", nargs="+", help="answers files (hiertrain replay --answers), globs allowed")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE[,...]|default",
                   help="arbiter keyword arguments (core.fallback.FallbackArbiter); repeatable")
    p.add_argument("--miss-points", type=float, default=1.0, help="a segment misses below max(edge, cloud) - this")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    files = sorted({f for pattern in args.answers for f in glob.glob(pattern)})
    if not files:
        raise SystemExit(f"no answers files match {args.answers}")
    settings = {text: parse_setting(text) for text in (args.setting or ["default"])}
    runs = {Path(f).stem.removeprefix("answers-"): json.loads(Path(f).read_text())["frames"] for f in files}
    rows, detail = [], {}
    for text, kwargs in settings.items():
        gaps = []
        for run, frames in runs.items():
            for seg, acc in replay(frames, kwargs).items():
                best = max(acc["edge"], acc["cloud"])
                gaps.append({"run": run, "segment": seg, "points": 100 * (acc["setting"] - best),
                             "recorded_points": 100 * (acc["recorded"] - best) if "recorded" in acc else None})
        misses = [g for g in gaps if g["points"] < -args.miss_points]
        rows.append({"setting": text, "segment_runs": len(gaps), "misses": len(misses),
                     "worst_points": min(g["points"] for g in gaps),
                     "mean_points": sum(g["points"] for g in gaps) / len(gaps),
                     "missed": ", ".join(f"{g['run']} seg{g['segment']} {g['points']:+.2f}" for g in misses)})
        detail[text] = gaps
    print(f"output minus max(edge, cloud), in points, per segment of {len(runs)} runs:")
    print_table(rows)
    write_json(args.json, {"files": files, "miss_points": args.miss_points, "summary": rows, "segments": detail})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
