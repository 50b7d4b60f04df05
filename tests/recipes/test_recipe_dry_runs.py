"""Olive's recipes (../shared/olive-recipes) pass ``olivine run --dry-run`` from their own folders.

One in-process walk (``scripts/recipe_dry_runs.py``) over every workflow, checked against
``dry_run_exceptions.json``: an unlisted workflow must pass, a listed one must still fail
(so the list shrinks as support grows). Regenerate the list with
``python scripts/recipe_dry_runs.py --update``.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from olivine_testutil import REPO, SHARED

RECIPES = SHARED / "olive-recipes"


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
        pytest.skip(f"no olive-recipes checkout at {RECIPES} (a clone of olivine alone has none)")
    return dict(_walker().walk(RECIPES))


def test_every_workflow_passes_unless_listed_with_a_reason(walk: dict[str, Any]) -> None:
    exceptions = _walker().load_exceptions()
    failing_unlisted = {name: err.strip().splitlines()[-1] for name, (code, err) in walk.items()
                        if code != 0 and name not in exceptions}
    assert not failing_unlisted, (f"{len(failing_unlisted)} workflow(s) fail the dry run and are not "
                                  f"in dry_run_exceptions.json: {failing_unlisted}")
    assert all(walk[name][0] == 2 for name in exceptions if name in walk), "failures exit with 2"


def test_listed_workflows_still_fail(walk: dict[str, Any]) -> None:
    exceptions = _walker().load_exceptions()
    now_passing = sorted(name for name in exceptions if name in walk and walk[name][0] == 0)
    assert not now_passing, (f"these workflows pass now: remove them from dry_run_exceptions.json "
                             f"(python scripts/recipe_dry_runs.py --update): {now_passing}")
    missing = sorted(set(exceptions) - set(walk))
    assert not missing, f"listed but not in the recipes folder: {missing}"
    assert all(reason.strip() for reason in exceptions.values())


def test_no_failure_is_a_traceback(walk: dict[str, Any]) -> None:
    crashed = {name: err[-300:] for name, (_, err) in walk.items() if "Traceback" in err
               or "unexpected error" in err.lower()}
    assert not crashed
