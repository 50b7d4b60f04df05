"""Kill-and-resume, concurrent runs on one cache, and steps in other processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from olivine.testing import make_workflow
from olivine_testutil import executions


def _start(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "olivine", "run", "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def _outputs(folder: Path) -> np.ndarray:
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.ones((1, 16), np.float32)})[0]


def test_killed_run_resumes_from_finished_steps(tmp_path: Path, onnx_model: Path, runs_file: Path,
                                                write_config: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 2.0},
                                              "slow": {"type": "Sleep", "seconds": 3},
                                              "c": {"type": "Scale", "factor": 0.5}})
    config = write_config(wf)
    proc = _start(config)
    tmp_dir = tmp_path / "cache" / "tmp"
    _wait_for(lambda: list(tmp_dir.glob("*/output/partial.marker")))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert executions(runs_file) == ["Scale a", "Sleep slow"]
    assert len(list((tmp_path / "cache" / "steps").iterdir())) == 1  # only step a finished
    assert not (tmp_path / "out").exists()

    rerun = subprocess.run([sys.executable, "-m", "olivine", "run", "--config", str(config)],
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert executions(runs_file) == ["Scale a", "Sleep slow", "Sleep slow", "Scale c"]
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["cached", "ran", "ran"]
    assert not list((tmp_path / "out").glob("partial.marker"))
    assert list(tmp_dir.iterdir()) == []
    np.testing.assert_allclose(_outputs(tmp_path / "out"), _outputs(onnx_model), rtol=1e-5)


def test_two_concurrent_runs_share_one_cache(tmp_path: Path, onnx_model: Path, runs_file: Path,
                                             write_config: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"slow": {"type": "Sleep", "seconds": 2},
                                              "a": {"type": "Scale", "factor": 3.0}})
    config = write_config(wf)
    first = _start(config, "-o", str(tmp_path / "out1"))
    _wait_for(lambda: executions(runs_file) == ["Sleep slow"])
    second = _start(config, "-o", str(tmp_path / "out2"))
    results = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0, results[0][1]
    assert second.returncode == 0, results[1][1]
    assert sorted(executions(runs_file)) == ["Scale a", "Sleep slow"]
    assert "waiting for another run computing this step" in results[1][1]
    statuses = [[s["status"] for s in json.loads((tmp_path / o / "run.json").read_text())["steps"]]
                for o in ("out1", "out2")]
    assert statuses[0][0] == "ran" and statuses[1][0] == "cached"
    assert {statuses[0][1], statuses[1][1]} == {"ran", "cached"}  # whoever got the lock first
    np.testing.assert_array_equal(_outputs(tmp_path / "out1"), _outputs(tmp_path / "out2"))


def _isolated(tmp_path: Path, model: Path, passes: dict[str, Any], system: dict[str, Any]) -> dict[str, Any]:
    return make_workflow(tmp_path, model, passes, systems={"sys": system}, host="sys", target="sys")


LOCAL_CHILD = {"type": "LocalSystem", "isolation": "always"}


def test_isolated_step_runs_in_a_child_process(tmp_path: Path, onnx_model: Path, write_config: Any,
                                               cli: Any) -> None:
    wf = _isolated(tmp_path, onnx_model, {"where": {"type": "WhereAmI"},
                                          "a": {"type": "Scale", "factor": 2.0}}, LOCAL_CHILD)
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    where = report["steps"][0]["output_model"]["attributes"]
    assert where["pid"] != os.getpid()
    assert report["steps"][0]["python"] == sys.executable
    assert all(s["peak_rss_mb"] > 10 for s in report["steps"])
    np.testing.assert_allclose(_outputs(tmp_path / "out"), 4 * _outputs(onnx_model), rtol=1e-5)


def test_an_isolated_steps_child_starts_ahead_and_is_ended_on_a_cache_hit(
        tmp_path: Path, onnx_model: Path, write_config: Any, cli: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The child imports the pass's ``preload`` while the inputs are hashed (its request comes
    after); a cache hit ends it unused, leaving no log; ``OLIVINE_STANDBY=0`` turns it off."""
    wf = _isolated(tmp_path, onnx_model, {"where": {"type": "WhereAmI"}}, {"type": "LocalSystem"})
    config = write_config(wf)
    code, _, err = cli("run", "--config", str(config))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    attributes = report["steps"][0]["output_model"]["attributes"]
    assert attributes["pid"] != os.getpid() and attributes["preloaded"] is True
    assert "olivine_testkit.standby_probe" not in sys.modules  # imported there, not here
    np.testing.assert_allclose(_outputs(tmp_path / "out"), _outputs(onnx_model), rtol=1e-6)

    code, _, err = cli("run", "--config", str(config), "-o", str(tmp_path / "again"))
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "run.json").read_text())
    assert again["steps"][0]["status"] == "cached"
    run_dir = tmp_path / "cache" / "runs" / again["run_id"]
    assert not (run_dir / "where.log").exists()  # the unused child wrote nothing

    monkeypatch.setenv("OLIVINE_STANDBY", "0")
    wf["cache_dir"] = str(tmp_path / "cache2")
    code, _, err = cli("run", "--config", str(write_config(wf)), "-o", str(tmp_path / "cold"))
    assert code == 0, err
    cold = json.loads((tmp_path / "cold" / "run.json").read_text())
    assert cold["steps"][0]["status"] == "ran"
    assert cold["steps"][0]["output_model"]["attributes"]["preloaded"] is False


def test_errors_cross_the_process_boundary(tmp_path: Path, onnx_model: Path, write_config: Any,
                                           cli: Any) -> None:
    wf = _isolated(tmp_path, onnx_model, {"boom": {"type": "Fail", "message": "disk on fire"}},
                   LOCAL_CHILD)
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 1
    assert "olivine: step 'boom' (pass Fail) failed: RuntimeError: disk on fire (log: " in err


def test_bad_input_found_while_running_exits_2_in_any_process(tmp_path: Path, onnx_model: Path,
                                                              write_config: Any, cli: Any) -> None:
    for system in ({"type": "LocalSystem"}, LOCAL_CHILD):
        wf = _isolated(tmp_path, onnx_model, {"check": {"type": "Fail", "kind": "usage",
                                                        "message": "tokenizer.json is missing"}},
                       system)
        code, _, err = cli("run", "--config", str(write_config(wf)))
        assert code == 2
        assert "olivine: step 'check' (pass Fail) failed: tokenizer.json is missing" in err


def test_a_crashing_step_is_reported_with_its_signal(tmp_path: Path, onnx_model: Path,
                                                     write_config: Any, cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"crash": {"type": "Crash", "how": "kill"}})
    code, _, err = cli("run", "--config", str(write_config(wf)))  # Crash asks for isolation
    assert code == 1
    assert "step 'crash' (pass Crash) failed: the step's process was killed by SIGKILL " \
           "(out of memory?)" in err
    log = Path(err.split("(log: ")[1].split(")")[0])
    assert "about to crash" in log.read_text()
    wf["passes"]["crash"]["how"] = "exit"
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 1
    assert "the step's process exited with code 7 before reporting a result" in err


def test_python_environment_runs_steps_with_its_interpreter(tmp_path: Path, onnx_model: Path,
                                                            write_config: Any, cli: Any) -> None:
    env_dir = tmp_path / "other-env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    site = next(env_dir.glob("lib/python*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "olivine_parent.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    python = env_dir / "bin" / "python"
    wf = _isolated(tmp_path, onnx_model, {"where": {"type": "WhereAmI"}},
                   {"type": "PythonEnvironment", "config": {
                       "python_environment_path": str(env_dir),
                       "accelerators": [{"device": "cpu"}]}})
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["steps"][0]["python"] == str(python)
    assert report["steps"][0]["output_model"]["attributes"]["python"] == str(python)


def test_a_step_resumes_from_its_checkpoint_after_a_crash(tmp_path: Path, onnx_model: Path,
                                                          runs_file: Path, write_config: Any,
                                                          cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"train": {"type": "Train", "steps": 6, "die_at": 4}})
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 1 and "killed by SIGKILL" in err
    state = list((tmp_path / "cache" / "state").iterdir())
    assert len(state) == 1 and (state[0] / "step.txt").read_text() == "3"
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    assert [line.split()[0] for line in runs_file.read_text().splitlines()] == [
        "Train-from-0", "Train-from-3"]
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["steps"][0]["output_model"]["attributes"]["resumed_from"] == 3
    assert list((tmp_path / "cache" / "state").iterdir()) == []  # removed once the step succeeded
