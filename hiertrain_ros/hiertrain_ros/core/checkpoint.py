"""Atomic checkpoints: write to a temporary file, fsync, then rename over the old one."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def save(state: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str | Path) -> dict | None:
    """The checkpoint at ``path``, ``None`` if there is none, ``ValueError`` if it is damaged."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise ValueError(f"checkpoint {path} is corrupt or truncated: {exc}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"checkpoint {path} is not a hiertrain checkpoint")
    return state
