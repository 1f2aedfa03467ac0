"""Small helpers shared by the verbs: the model options, JSON output, table printing and topic remaps."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ..core.archs import SplitSpec


def add_model_options(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """``--model``, ``--position``, ``--width``, ``--bits``, ``--budget-bits``, ``--num-classes``.

    One option per :class:`SplitSpec` field (except the ``skip`` ones), with its default.
    """
    for f in fields(SplitSpec):
        if f.name not in skip:
            parser.add_argument(f.metadata["flag"], type=type(f.default), default=f.default,
                                choices=f.metadata["choices"], help=f"{f.metadata['help']} (default {f.default})")


def spec_from_args(args: argparse.Namespace, **given) -> SplitSpec:
    """Return the model description from :func:`add_model_options`' options.

    ``given`` fields (e.g. a split_point or num_classes the verb finds itself) take the place of skipped options.
    """
    values = {f.name: getattr(args, f.metadata["flag"][2:].replace("-", "_")) for f in fields(SplitSpec)
              if f.name not in given}
    return SplitSpec(**values, **given)


def write_json(path: str | None, data) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    if not rows:
        return
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def print_adaptation(adaptation: dict) -> None:
    """Return the online-adaptation part of a launch or replay report (core.metrics.summarize)."""
    paths = list(adaptation["prequential"])
    held_out = adaptation.get("held_out_by_segment", {})
    rows = []
    for seg in adaptation["segments"]:
        row = {"segment": seg}
        for p in paths:
            cell = adaptation["prequential_by_segment"].get(seg, {}).get(p, {})
            row[f"{p}_preq"], row[f"{p}_frames"] = cell.get("accuracy"), cell.get("frames", 0)
        for p in paths if held_out else ():
            row[f"{p}_held_out"] = held_out.get(seg, {}).get(p, {}).get("accuracy")
        rows.append(row)
    print("\nPrequential accuracy per segment (each labelled frame answered before it was trained on)"
          + (", and held-out accuracy:" if held_out else ":"))
    print_table(rows)
    anytime = ", ".join(f"{p} {_fmt(a)}" for p, a in adaptation["anytime_average"].items())
    print(f"anytime average accuracy: {anytime} (windows of {adaptation['window']} labelled frames)")
    for change in adaptation["recovery"]:
        frames = change["frames"]
        print(f"recovery after segment {change['after_segment']} -> {change['segment']} "
              f"(labelled frame {change['at_frame']}): " + (f"{frames} frames" if frames is not None else "not back")
              + f" to {adaptation['fraction']:.0%} of the output's {change['baseline']:.3f}")
    for seg, f in adaptation.get("forgetting", {}).get("output", {}).items():
        note = "" if f["evaluated_after"] else " (not evaluated after a later segment)"
        print(f"output forgetting, segment {seg}: best {f['best']:.3f}, final {f['final']:.3f}, "
              f"forgetting {f['forgetting']:.3f}{note}")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def parse_remaps(items: list[str]) -> dict[str, str]:
    """``["/a:=/b"]`` (``ros2 bag play --remap``'s form) -> ``{"/a": "/b"}``."""
    from ..bag_files import normalize_topic

    remaps = {}
    for item in items:
        source, sep, target = item.partition(":=")
        if not (sep and source and target):
            raise ValueError(f"--remap expects FROM:=TO, got {item!r}")
        remaps[normalize_topic(source)] = normalize_topic(target)
    return remaps
