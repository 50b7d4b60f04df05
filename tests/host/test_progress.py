"""The progress display: plain lines when not a terminal, a live line on one."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from olivine.events import StepInfo
from olivine.progress import ProgressDisplay
from olivine.testing import make_workflow


def test_plain_lines_when_not_a_terminal(tmp_path: Path, onnx_model: Path, write_config: Any,
                                         cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"}, "b": {"type": "Sleep",
                                                                            "seconds": 0.2}})
    wf["log_severity_level"] = 1
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0
    lines = err.splitlines()
    assert "[1/2] a (Scale): started" in lines
    assert any(line.startswith("[1/2] a: #################### 100% scaled w2") for line in lines)
    assert any(line.startswith("[2/2] b (Sleep): done in ") for line in lines)
    assert "\r" not in err


def test_quiet_level_prints_no_progress(tmp_path: Path, onnx_model: Path, write_config: Any,
                                        cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"}})
    code, out, err = cli("run", "--config", str(write_config(wf)), "--log_level", "4")
    assert code == 0 and err == "" and out == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_line_on_a_terminal() -> None:
    stream = _Terminal()
    display = ProgressDisplay(stream)
    display.tty = True
    step = StepInfo(1, 2, "quant", "Scale")
    display.step_started(step)
    display.step_progress(step, 5, 10, "layer 5/10")
    display.step_finished(step, {"status": "ran", "duration_s": 1.5})
    text = stream.getvalue()
    assert "\r\033[K[1/2] quant ##########----------  50% layer 5/10" in text
    assert text.endswith("\r\033[K[1/2] quant (Scale): done in 1.50 s\n")
