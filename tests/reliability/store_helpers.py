"""Helpers of the publishing and cache reliability tests (real olivine processes, real files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from olivine.testing import make_workflow
from olivine_testutil import REPO

ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "core"), os.environ.get("PYTHONPATH"))
                                     if p)}


def write_workflow(tmp_path: Path, model: Path, passes: dict[str, Any], name: str = "wf.json",
                   **extra: Any) -> Path:
    """A workflow file on ``model`` writing to ``tmp_path/out`` with its cache in ``tmp_path/cache``."""
    path = tmp_path / name
    path.write_text(json.dumps(make_workflow(tmp_path, model, passes, **extra), indent=2))
    return path


def olivine(*args: str, script: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m olivine ARGS`` (or ``python -c SCRIPT ARGS``) in a fresh process."""
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "olivine", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV})


def start(*args: str, script: str | None = None) -> subprocess.Popen[str]:
    """Start ``olivine ARGS`` (or a script) in its own session; returns the process."""
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "olivine", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ENV}, start_new_session=True)


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc`` and everything it started."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def wait_for(predicate: Any, timeout: float = 60) -> None:
    """Poll ``predicate`` until it is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Staging and old folders a publish left beside its output."""
    return sorted(p.name for p in parent.iterdir() if ".olivine-staging-" in p.name
                  or ".olivine-old-" in p.name)


def step_folders(cache: Path) -> list[Path]:
    """The finished steps of a cache."""
    return sorted((cache / "steps").iterdir()) if (cache / "steps").is_dir() else []
