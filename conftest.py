"""Fixtures shared by olivine's tests: the host's (tests/) and each plugin's (plugins/*/tests/).

olivine's test kit (``olivine.testing``: ``tiny_onnx_model``, ``run_pass``, ``run_workflow``,
``assert_config_error``, ``write_config``, ``cli``, and ``seed``, ``pin_threads``,
``record_quality``, ``make_workflow``) is loaded by ``-p olivine.testing`` in pyproject.toml.
Threads are pinned to one per library: on a 2-core machine torch and ONNX Runtime thread pools
fight each other and make tests slow and noisy. Helpers private to this repository live in
``tests/olivine_testutil.py`` (several folders have a conftest.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from olivine.testing import pin_threads  # noqa: E402
from olivine_testutil import HELLO_MODEL  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """torch's own pool too (it reads OMP_NUM_THREADS only at import, if at all).

    One thread unless ``$OLIVINE_TEST_THREADS`` says otherwise (the quality-spread runs).
    """
    pin_threads()


@pytest.fixture(scope="session")
def cache_root() -> Path:
    """Where trained tiny models are kept between test runs ($OLIVINE_TEST_CACHE)."""
    root = os.environ.get("OLIVINE_TEST_CACHE") or str(Path(tempfile.gettempdir()) /
                                                       "olivine-modelbuilder-tests")
    return Path(root)


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


@pytest.fixture
def only_test_plugins(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Load only the example and testkit plugins (messages that list installed names stay fixed)."""
    from olivine.plugins import get_plugin_host

    monkeypatch.setenv("OLIVINE_LOAD_PLUGINS", "olivine-example,olivine-testkit")
    yield get_plugin_host(fresh=True)
    monkeypatch.delenv("OLIVINE_LOAD_PLUGINS")
    get_plugin_host(fresh=True)
