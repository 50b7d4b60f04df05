"""While a step runs in a child process, the modules later in-process steps preload are
imported in a background thread of the engine's process (``Pass.preload``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from olivine.testing import make_workflow

PROBE = "olivine_testkit.preload_probe"


@pytest.fixture(autouse=True)
def _fresh_probe() -> Any:
    sys.modules.pop(PROBE, None)
    yield
    sys.modules.pop(PROBE, None)


def _run(tmp_path: Path, model: Path, isolation: str, write_config: Any, cli: Any) -> dict[str, Any]:
    system = {"type": "LocalSystem", "isolation": isolation}
    wf = make_workflow(tmp_path, model, {"where": {"type": "WhereAmI"},
                                         "a": {"type": "Scale", "factor": 2.0}},
                       systems={"sys": system}, host="sys", target="sys")
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    report: dict[str, Any] = json.loads((tmp_path / "out" / "run.json").read_text())
    return report


def _outputs(folder: Path) -> np.ndarray:
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.ones((1, 16), np.float32)})[0]


def test_later_steps_modules_are_imported_while_the_child_runs(
        tmp_path: Path, onnx_model: Path, write_config: Any, cli: Any) -> None:
    report = _run(tmp_path, onnx_model, "auto", write_config, cli)  # WhereAmI isolates itself
    assert report["steps"][0]["python"] == sys.executable  # the first step ran in a child
    seconds = report["steps"][0]["prefetched_imports"][PROBE]
    assert isinstance(seconds, float) and seconds >= 0
    assert sys.modules[PROBE].IMPORTED_BY == "olivine-prefetch"
    assert "prefetched_imports" not in report["steps"][1]  # the last step: nothing ahead
    np.testing.assert_allclose(_outputs(tmp_path / "out"), 4 * _outputs(onnx_model), rtol=1e-5)


def test_no_prefetch_beside_a_step_of_this_process(tmp_path: Path, onnx_model: Path,
                                                   write_config: Any, cli: Any) -> None:
    report = _run(tmp_path, onnx_model, "never", write_config, cli)
    assert "prefetched_imports" not in report["steps"][0]
    assert PROBE not in sys.modules  # Scale itself never imports it


def test_prefetch_can_be_turned_off(tmp_path: Path, onnx_model: Path, write_config: Any, cli: Any,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLIVINE_PREFETCH", "0")
    report = _run(tmp_path, onnx_model, "auto", write_config, cli)
    assert "prefetched_imports" not in report["steps"][0]
    assert PROBE not in sys.modules


def test_a_module_that_fails_to_import_is_recorded_not_raised() -> None:
    from olivine.prefetch import Prefetch

    done = Prefetch(["olivine_no_such_module", "json"]).start().join()
    assert done["olivine_no_such_module"].startswith("ModuleNotFoundError")
    assert "json" not in done  # imported already: nothing to do
