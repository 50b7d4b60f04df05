"""docs/plugin-tutorial.md works as written: its plugin loads and its tests pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _block_after(text: str, marker: str) -> str:
    """The first fenced code block after ``marker``."""
    start = text.index(marker)
    match = re.compile(r"```[a-z]*\n(.*?)```", re.S).search(text, start)
    assert match is not None, marker
    return match.group(1)


def test_the_tutorial_plugin_passes_its_own_tests(tmp_path: Path) -> None:
    text = (REPO / "docs" / "plugin-tutorial.md").read_text()
    package = tmp_path / "olivine_rename"
    package.mkdir()
    (package / "__init__.py").write_text(_block_after(text, "`olivine_rename/__init__.py`:"))
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_rename.py").write_text(_block_after(text, "`tests/test_rename.py`"))
    # installed as far as importlib.metadata sees: a dist-info beside the package
    info = tmp_path / "olivine_rename-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: olivine-rename\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[olivine]\nrename = olivine_rename\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "olivine.testing",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull,
                           str(tests)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
