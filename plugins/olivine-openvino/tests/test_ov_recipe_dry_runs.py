"""The OpenVINO recipes (../shared/olive-recipes-openvino) pass ``olivine run --dry-run`` from
their own folders, as written (NPU and GPU targets included), except the checked-in list.

Run in the openvino env (``tox -e openvino``): without openvino every workflow is a config
error naming what to install (tested in test_without_openvino.py).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from olivine_testutil import REPO, SHARED

pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytest.importorskip("optimum.intel")

RECIPES = SHARED / "olive-recipes-openvino"
EXCEPTIONS = Path(__file__).with_name("dry_run_exceptions.json")


def _walker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recipe_dry_runs", REPO / "scripts" / "recipe_dry_runs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("recipe_dry_runs", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def walk() -> dict[str, Any]:
    """Every workflow's (exit code, stderr)."""
    if not RECIPES.is_dir():
        pytest.skip(f"no olive-recipes-openvino checkout at {RECIPES}")
    return dict(_walker().walk(RECIPES))


def _exceptions() -> dict[str, str]:
    return dict(json.loads(EXCEPTIONS.read_text(encoding="utf-8"))["exceptions"])


def test_every_workflow_passes_unless_listed(walk: dict[str, Any]) -> None:
    exceptions = _exceptions()
    failing = {name: err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
               for name, (code, err) in walk.items() if code != 0 and name not in exceptions}
    assert not failing, f"{len(failing)} workflow(s) fail the dry run: {failing}"
    assert all(walk[name][0] == 2 for name in exceptions if name in walk)
    passing = sum(1 for code, _ in walk.values() if code == 0)
    assert passing >= 0.9 * len(walk), f"{passing}/{len(walk)} pass; the target is 90%"


def test_listed_workflows_still_fail_for_hardware_or_missing_files(walk: dict[str, Any]) -> None:
    exceptions = _exceptions()
    now_passing = sorted(n for n in exceptions if n in walk and walk[n][0] == 0)
    assert not now_passing, f"these pass now: remove them from {EXCEPTIONS.name}: {now_passing}"
    assert not sorted(set(exceptions) - set(walk))
    allowed = ("needs hardware", "needs a file", "needs a device")
    assert all(r.startswith(allowed) for r in exceptions.values())


def test_no_failure_is_a_traceback(walk: dict[str, Any]) -> None:
    assert not {n: e[-300:] for n, (_, e) in walk.items() if "Traceback" in e}
