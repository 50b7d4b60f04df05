"""Helpers shared by olivine's tests (import as ``olivine_testutil``; conftest modules clash)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HELLO_MODEL = REPO / "examples" / "hello" / "model"
SHARED = REPO.parent / "shared"


def executions(runs_file: Path) -> list[str]:
    """``["Scale s1", ...]``: one entry per real pass execution so far."""
    if not runs_file.exists():
        return []
    return [" ".join(line.split()[:2]) for line in runs_file.read_text().splitlines()]


def make_workflow(tmp_path: Path, model: Path, passes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A current-form workflow dict on ``model`` writing under ``tmp_path``."""
    wf: dict[str, Any] = {
        "input_model": {"type": "ONNXModel", "model_path": str(model)},
        "passes": passes,
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 3,
    }
    wf.update(extra)
    return wf


def olivine_subprocess(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m olivine ARGS`` in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "olivine", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)
