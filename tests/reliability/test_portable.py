"""Issue 12, item 9 (the systems part): the core does not depend on POSIX-only modules.

Windows has no ``fcntl`` and no ``resource``, and ``subprocess`` there takes neither
``pass_fds`` nor ``preexec_fn``. These tests take those away on Linux: every core
module must import without the two modules, and a step must run in a child process
started the portable way (``OLIVINE_PORTABLE_CHILD=1``: events through a file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from olivine.testing import make_workflow
from olivine_testutil import HELLO_MODEL, REPO, olivine_subprocess

CORE = REPO / "core" / "olivine"
MODULES = sorted(
    "olivine" + "".join(f".{p}" for p in path.relative_to(CORE).with_suffix("").parts)
    .removesuffix(".__init__")
    for path in CORE.rglob("*.py") if path.name != "__main__.py")

BLOCKER = """
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    '''Windows has neither: importing them fails as it would there.'''
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, Blocker())
"""

IMPORT_ALL = BLOCKER + """
import importlib, json, traceback
out = {}
for name in NAMES:
    try:
        importlib.import_module(name)
        out[name] = None
    except BaseException:
        out[name] = traceback.format_exc()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def import_errors() -> dict[str, str | None]:
    """Each core module's import traceback (``None`` when it imported) with fcntl and resource blocked."""
    code = f"BLOCKED = {{'fcntl', 'resource'}}\nNAMES = {MODULES!r}\n" + IMPORT_ALL
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str | None] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_module_list_is_complete() -> None:
    assert {"olivine.engine", "olivine.systems.child", "olivine.systems.worker",
            "olivine.cli", "olivine.cache"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_without_fcntl_and_resource(name: str, import_errors: dict[str, str | None]) -> None:
    error = import_errors[name]
    assert error is None, error


SITECUSTOMIZE = BLOCKER + """
import os, subprocess
_popen_init = subprocess.Popen.__init__

def _portable_popen(self, args, *a, **kw):
    '''Popen as on Windows: no pass_fds, no preexec_fn; record each start.'''
    if kw.get("pass_fds") or kw.get("preexec_fn") is not None:
        raise ValueError("pass_fds and preexec_fn are not supported on this platform")
    with open(os.environ["PORTABLE_TEST_LOG"], "a") as fh:
        fh.write(" ".join(map(str, args)) + "\\n")
    _popen_init(self, args, *a, **kw)

subprocess.Popen.__init__ = _portable_popen
"""


def _portable_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("BLOCKED = {'fcntl', 'resource'}\n" + SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "OLIVINE_PORTABLE_CHILD": "1",
            "PORTABLE_TEST_LOG": str(tmp_path / "popen.log")}


def _isolated(tmp_path: Path, passes: dict[str, Any]) -> Path:
    wf = make_workflow(tmp_path, HELLO_MODEL, passes, log_severity_level=1,
                       systems={"local": {"type": "LocalSystem", "isolation": "always"}})
    config = tmp_path / "wf.json"
    config.write_text(json.dumps(wf))
    return config


def test_a_step_runs_in_a_child_started_the_portable_way(tmp_path: Path) -> None:
    config = _isolated(tmp_path, {"s": {"type": "Scale", "factor": 3.0}})
    proc = olivine_subprocess("run", "--config", str(config), env=_portable_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    starts = (tmp_path / "popen.log").read_text().splitlines()
    assert any("olivine.systems.worker" in line for line in starts), starts
    # the child's progress events came back through the file
    assert "100% scaled w2" in proc.stderr, proc.stderr
    assert (tmp_path / "out" / "model.onnx").is_file()
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["steps"][0]["status"] == "ran", report["steps"][0]


def test_a_failing_step_in_a_portable_child_is_reported(tmp_path: Path) -> None:
    config = _isolated(tmp_path, {"s": {"type": "Scale", "factor": 3.0, "fail_above": 1.0}})
    proc = olivine_subprocess("run", "--config", str(config), env=_portable_env(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert "step 's' (pass Scale) failed: ValueError: factor 3.0 is above 1.0" in proc.stderr, \
        proc.stderr
    assert "olivine.systems.worker" in (tmp_path / "popen.log").read_text()
