"""Fixtures shared by olivine's tests.

Threads are pinned to one per library: on a 2-core machine torch and ONNX Runtime
thread pools fight each other and make tests slow and noisy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
HELLO_MODEL = REPO / "examples" / "hello" / "model"
SHARED = REPO.parent / "shared"


@pytest.fixture
def onnx_model(tmp_path: Path) -> Path:
    """A copy of the tiny MLP (model.onnx + model.onnx.data) in its own folder."""
    dest = tmp_path / "input-model"
    shutil.copytree(HELLO_MODEL, dest)
    return dest


@pytest.fixture
def runs_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the testkit passes append one line per real execution to."""
    path = tmp_path / "runs.txt"
    monkeypatch.setenv("OLIVINE_TESTKIT_RUNS", str(path))
    return path


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


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any], str], Path]:
    """Write a workflow dict as JSON and return its path."""

    def write(data: dict[str, Any], name: str = "workflow.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(data, indent=2))
        return path

    return write


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``olivine ARGS`` in-process; return (exit code, stdout, stderr)."""
    from olivine.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def olivine_subprocess(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m olivine ARGS`` in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "olivine", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture
def only_test_plugins(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Load only the example and testkit plugins (messages that list installed names stay fixed)."""
    from olivine.plugins import get_plugin_host

    monkeypatch.setenv("OLIVINE_LOAD_PLUGINS", "olivine-example,olivine-testkit")
    yield get_plugin_host(fresh=True)
    monkeypatch.delenv("OLIVINE_LOAD_PLUGINS")
    get_plugin_host(fresh=True)
