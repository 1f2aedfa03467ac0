"""Small helpers shared by the verbs: JSON output, table printing and topic remaps."""

from __future__ import annotations

import json
from pathlib import Path


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


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def parse_remaps(items: list[str]) -> dict[str, str]:
    """``["/a:=/b"]`` (``ros2 bag play --remap``'s form) -> ``{"/a": "/b"}``."""
    from ..bags import normalize_topic

    remaps = {}
    for item in items:
        source, sep, target = item.partition(":=")
        if not (sep and source and target):
            raise ValueError(f"--remap expects FROM:=TO, got {item!r}")
        remaps[normalize_topic(source)] = normalize_topic(target)
    return remaps
