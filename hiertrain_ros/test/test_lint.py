"""The lint tier: ruff with the repository's ruff.toml (ament_flake8 + ament_pep257 rules)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _ruff() -> list[str]:
    # The venv's ruff first (pinned in requirements.txt), then one on PATH.
    local = Path(sys.executable).with_name("ruff")
    found = str(local) if local.exists() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -r requirements.txt)")
    return [found]


def test_ruff_is_clean():
    paths = ["hiertrain_ros", "benchmarks", "hiertrain_ros/launch"]
    proc = subprocess.run(_ruff() + ["check", "--no-cache", "--output-format", "concise", *paths],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
