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


# -- quality tests: seeds, threads, and the measured numbers -------------------------------------
#
# Comparative quality tests (marked ``quality``) train their tiny models with ``seed()`` and
# ``threads()`` and record the numbers they compare through ``record_quality``. Normally these
# are seed 0, one thread, and no record. ``benchmarks/quality_spread.py`` runs the marked tests
# under several seeds, thread counts and torch CPU kernels (ATEN_CPU_CAPABILITY) and reports
# the spread of every recorded number; the margins in the assertions come from that report.

SEED_ENV = "OLIVINE_TEST_SEED"
THREADS_ENV = "OLIVINE_TEST_THREADS"
QUALITY_LOG_ENV = "OLIVINE_QUALITY_LOG"


def seed() -> int:
    """The training seed of the tiny models (``$OLIVINE_TEST_SEED``, default 0)."""
    return int(os.environ.get(SEED_ENV) or 0)


def threads() -> int:
    """Threads for torch in the tests (``$OLIVINE_TEST_THREADS``, default 1)."""
    return max(1, int(os.environ.get(THREADS_ENV) or 1))


def record_quality(claim: str, **values: float) -> None:
    """Append the numbers a quality claim compares to ``$OLIVINE_QUALITY_LOG`` (if set)."""
    import json

    target = os.environ.get(QUALITY_LOG_ENV)
    if not target:
        return
    row = {"claim": claim, **{k: float(v) for k, v in values.items()}}
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
