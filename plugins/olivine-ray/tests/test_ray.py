"""RaySystem: the same search on a local Ray instance gives the same answer as a local run."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from olivine.testing import make_workflow
from olivine_testutil import executions

pytest.importorskip("olivine_ray")

METRICS = {"e": {"metrics": [{"name": "w", "type": "weight_stats", "sub_types": [
    {"name": "abs_sum", "priority": 1}, {"name": "bytes", "priority": 2}]}]}}
RAY = {"type": "RaySystem", "num_workers": 2, "num_cpus": 1, "accelerators": [{"device": "cpu"}]}


def _workflow(folder: Path, model: Path, system: dict[str, Any] | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"evaluators": copy.deepcopy(METRICS), "evaluator": "e",
                             "search_strategy": {"sampler": "sequential"}}
    if system:
        extra.update(systems={"sys": system}, host="sys", target="sys")
    return make_workflow(folder, model, {"a": {"type": "Scale", "factor": [0.5, 2.0, 3.0]},
                                         "b": {"type": "Scale", "factor": [1.0, 0.25]}}, **extra)


def _run(tmp_path: Path, name: str, wf_of: Any, write_config: Any, cli: Any) -> dict[str, Any]:
    folder = tmp_path / name
    folder.mkdir()
    code, _, err = cli("run", "--config", str(write_config(wf_of(folder), f"{name}.json")))
    assert code == 0, err
    return json.loads((folder / "out" / "run.json").read_text())


def test_ray_search_equals_local_search(tmp_path: Path, onnx_model: Path, runs_file: Path,
                                        write_config: Any, cli: Any) -> None:
    local = _run(tmp_path, "local", lambda f: _workflow(f, onnx_model, None), write_config, cli)
    ray = _run(tmp_path, "ray", lambda f: _workflow(f, onnx_model, RAY), write_config, cli)
    strip = [{k: c[k] for k in ("choice", "status", "metrics", "on_frontier")}
             for c in local["search"]["candidates"]]
    assert strip == [{k: c[k] for k in ("choice", "status", "metrics", "on_frontier")}
                     for c in ray["search"]["candidates"]]
    assert local["search"]["best"] == ray["search"]["best"]
    pids = {c["worker_pid"] for c in ray["search"]["candidates"]}
    assert len(pids) >= 2  # really ran in parallel workers


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_a_candidate_that_kills_its_worker_is_retried_then_recorded(
        tmp_path: Path, onnx_model: Path, runs_file: Path, write_config: Any, cli: Any) -> None:
    system = {**RAY, "step_isolation": "never", "max_retries": 1,
              "runtime_env": {"env_vars": {"OLIVINE_TESTKIT_RUNS": str(runs_file)}}}
    wf = make_workflow(tmp_path, onnx_model,
                       {"c": {"type": "Crash", "how": ["none", "kill"]},
                        "a": {"type": "Scale", "factor": [1.0, 2.0]}},
                       evaluators=copy.deepcopy(METRICS), evaluator="e",
                       search_strategy={"sampler": "sequential"},
                       systems={"sys": system}, host="sys", target="sys")
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    cands = report["search"]["candidates"]
    failed = [c for c in cands if c["status"] == "failed"]
    assert [c["choice"]["c.how"] for c in failed] == ["kill", "kill"]
    assert all("the Ray worker died" in c["error"] for c in failed)
    assert executions(runs_file).count("Crash c") >= 3  # a kill candidate ran twice (retry)
    best = next(c for c in cands if c["id"] == report["search"]["best"])
    assert best["choice"] == {"c.how": "none", "a.factor": 2.0}


def test_plain_run_steps_run_as_ray_tasks(tmp_path: Path, onnx_model: Path, write_config: Any,
                                          cli: Any) -> None:
    import os

    wf = make_workflow(tmp_path, onnx_model, {"where": {"type": "WhereAmI"}},
                       systems={"sys": RAY}, host="sys", target="sys")
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["steps"][0]["output_model"]["attributes"]["pid"] != os.getpid()
