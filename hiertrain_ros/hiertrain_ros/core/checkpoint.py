"""Atomic checkpoints, and the trained weights a node starts from (``init_from``).

A checkpoint is written to a temporary file, fsynced, then renamed over the old one.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .archs import SplitSpec
from .models import split_state_dict

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
    """Return the checkpoint at ``path``, ``None`` if there is none, ``ValueError`` if it is damaged."""
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


def save_trained(directory: str | Path, spec: SplitSpec, parts: dict[str, nn.Module]) -> list[Path]:
    """Write each part's weights and the model description to ``directory/<role>.pt``."""
    spec = spec.model_spec()
    paths = []
    for role, model in parts.items():
        paths.append(Path(directory) / f"{role}.pt")
        save({"role": role, "model_id": spec.model_id, "spec": asdict(spec), "model": model.state_dict()}, paths[-1])
    return paths


def load_init(path: str | Path, role: str, spec: SplitSpec) -> tuple[dict, tuple[str, ...]]:
    """Return the weights ``role`` starts from, and the prefixes of its parameters that start fresh.

    ``path`` is a directory holding ``<role>.pt`` (``hiertrain train --save``), such a file, a
    checkpoint of this model, or a whole model's ``state_dict`` in torchvision's layout (split
    here; see :func:`.models.split_state_dict`).  ``ValueError`` for anything else, naming both
    model ids when the file is for another model, split point or bit width.
    """
    path = Path(path)
    file = path / f"{role}.pt" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"init_from {path}: no such file {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise ValueError(f"init_from {file} is corrupt or not torch weights: {exc}") from exc
    if isinstance(state, dict) and "model" in state and "model_id" in state:
        if (state.get("role"), state["model_id"]) != (role, spec.model_id):
            raise ValueError(f"init_from {file} is for {state.get('role')} {state['model_id']!r}, this node is "
                             f"{role} {spec.model_id!r} (model, width, classes, split_point, bits and "
                             "budget_bits must match)")
        return state["model"], ()
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return split_state_dict(state, spec)[role]
    raise ValueError(f"init_from {file} is neither hiertrain trained weights nor a whole model's state_dict")
