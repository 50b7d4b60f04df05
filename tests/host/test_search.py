"""Searching pass options: every sampler, ranking on the Pareto frontier, failures, goals."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from olivine.testing import make_workflow
from olivine_testutil import executions

METRICS = {"e": {"metrics": [{"name": "w", "type": "weight_stats", "sub_types": [
    {"name": "abs_sum", "priority": 1}, {"name": "bytes", "priority": 2}]}]}}


def _search_workflow(tmp_path: Path, model: Path, **strategy: Any) -> dict[str, Any]:
    return make_workflow(
        tmp_path, model,
        {"stamp": {"type": "OnnxMetadata", "doc_string": "shared prefix"},
         "scale": {"type": "Scale", "factor": [0.5, 1.0, 2.0, 4.0], "pad": [1000, 2000]}},
        evaluators=copy.deepcopy(METRICS), evaluator="e",
        search_strategy=strategy or {"sampler": "sequential"})


def _report(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "out" / "run.json").read_text())


def _first_output(folder: Path) -> np.ndarray:
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.ones((1, 16), np.float32)})[0]


def test_exhaustive_search_picks_the_best_on_the_frontier(tmp_path: Path, onnx_model: Path,
                                                          runs_file: Path, write_config: Any,
                                                          cli: Any) -> None:
    code, _, err = cli("run", "--config", str(write_config(_search_workflow(tmp_path, onnx_model))))
    assert code == 0, err
    report = _report(tmp_path)
    cands = report["search"]["candidates"]
    assert len(cands) == 8 and all(c["status"] == "succeeded" for c in cands)
    front = {(c["choice"]["scale.factor"], c["choice"]["scale.pad"]) for c in cands if c["on_frontier"]}
    # more padding at the same factor is dominated: same abs_sum, more bytes
    assert front == {(0.5, 1000), (1.0, 1000), (2.0, 1000), (4.0, 1000)}
    best = next(c for c in cands if c["id"] == report["search"]["best"])
    assert best["choice"] == {"scale.factor": 4.0, "scale.pad": 1000}
    # the shared first step ran once; every distinct Scale config once
    assert executions(runs_file).count("OnnxMetadata stamp") == 0  # example pass does not record
    assert sorted(executions(runs_file)) == ["Scale scale"] * 8
    assert [s["status"] for s in cands[1]["steps"]] == ["cached", "ran"]
    np.testing.assert_allclose(_first_output(tmp_path / "out"), 16 * _first_output(onnx_model),
                               rtol=1e-5)
    assert (tmp_path / "out" / "frontier.html").read_text().count("<circle") == 8
    assert (tmp_path / "out" / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert report["metrics"]["output_model"] == best["metrics"]


def _order(tmp_path: Path, onnx_model: Path, write_config: Any, cli: Any, name: str,
           **strategy: Any) -> list[dict[str, Any]]:
    folder = tmp_path / name
    folder.mkdir()
    code, _, err = cli("run", "--config",
                       str(write_config(_search_workflow(folder, onnx_model, **strategy), f"{name}.json")))
    assert code == 0, err
    return [c["choice"] for c in _report(folder)["search"]["candidates"]]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_seeded_samplers_are_reproducible(tmp_path: Path, onnx_model: Path, write_config: Any,
                                          cli: Any, sampler: str) -> None:
    a = _order(tmp_path, onnx_model, write_config, cli, "a", sampler=sampler, seed=7, max_samples=5)
    b = _order(tmp_path, onnx_model, write_config, cli, "b", sampler=sampler, seed=7, max_samples=5)
    c = _order(tmp_path, onnx_model, write_config, cli, "c", sampler=sampler, seed=8, max_samples=5)
    assert a == b and len(a) == 5 and len({json.dumps(x, sort_keys=True) for x in a}) == 5
    assert a != c


def test_olive_search_algorithm_names_work(tmp_path: Path, onnx_model: Path, write_config: Any,
                                           cli: Any) -> None:
    order = _order(tmp_path, onnx_model, write_config, cli, "x", search_algorithm="exhaustive",
                   execution_order="joint")
    assert len(order) == 8 and order[0] == {"scale.factor": 0.5, "scale.pad": 1000}


def test_failed_candidates_are_recorded_and_do_not_stop_the_search(
        tmp_path: Path, onnx_model: Path, write_config: Any, cli: Any) -> None:
    wf = _search_workflow(tmp_path, onnx_model)
    wf["passes"]["scale"]["fail_above"] = 1.5
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    cands = _report(tmp_path)["search"]["candidates"]
    failed = [c for c in cands if c["status"] == "failed"]
    assert len(failed) == 4 and all("factor" in c["error"] and "is above 1.5" in c["error"]
                                    for c in failed)
    best = next(c for c in cands if c["id"] == _report(tmp_path)["search"]["best"])
    assert best["choice"]["scale.factor"] == 1.0


def test_goal_nothing_meets_exits_3_with_candidates_in_report(
        tmp_path: Path, onnx_model: Path, write_config: Any, cli: Any) -> None:
    wf = _search_workflow(tmp_path, onnx_model)
    wf["evaluators"]["e"]["metrics"][0]["sub_types"][1]["goal"] = {"type": "threshold", "value": 10}
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 3
    assert "no candidate meets the evaluator's goals (8 tried, 0 failed)" in err
    report = json.loads(Path(err.split("olivine: report: ")[1].strip()).read_text())
    assert report["status"] == "goals_not_met" and len(report["search"]["candidates"]) == 8
    assert not (tmp_path / "out").exists()


def test_pass_by_pass_fixes_each_pass_before_the_next(tmp_path: Path, onnx_model: Path,
                                                      write_config: Any, cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model,
                       {"a": {"type": "Scale", "factor": [0.5, 2.0]},
                        "b": {"type": "Scale", "factor": [1.0, 3.0], "pad": "SEARCHABLE_VALUES"}},
                       evaluators=copy.deepcopy(METRICS), evaluator="e",
                       search_strategy={"execution_order": "pass-by-pass"})
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    cands = _report(tmp_path)["search"]["candidates"]
    assert len(cands) == 2 + 4
    assert all(c["choice"]["a.factor"] == 2.0 for c in cands[2:])  # a fixed at its best
    best = next(c for c in cands if c["id"] == _report(tmp_path)["search"]["best"])
    assert best["choice"] == {"a.factor": 2.0, "b.factor": 3.0, "b.pad": 0}


def test_a_list_without_search_strategy_is_an_error(tmp_path: Path, onnx_model: Path,
                                                    write_config: Any, cli: Any) -> None:
    wf = _search_workflow(tmp_path, onnx_model)
    del wf["search_strategy"]
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 2
    assert ("passes.scale.factor: a list of values is a search space; set engine.search_strategy "
            "to search it, or give one value") in err


def _systems_plugin(cls: type) -> Any:
    import types

    import olivine

    @olivine.hookimpl
    def register_systems(register: Any) -> None:
        register(cls)

    return types.SimpleNamespace(__name__=f"systems-{cls.__name__}", register_systems=register_systems)


def test_a_system_gets_candidates_as_plain_requests(tmp_path: Path, onnx_model: Path,
                                                    runs_file: Path) -> None:
    import olivine
    from olivine.testing import run_workflow, using_plugin

    seen: list[dict[str, Any]] = []

    class Recording(olivine.LocalSystem):
        """Runs candidates here, keeping the requests it was handed."""

        name = "RecordingSystem"

        def run_candidates(self, requests: list[olivine.CandidateRequest],
                           run_here: olivine.CandidateRunner) -> list[dict[str, Any]]:
            """Check each request survives JSON, then run it in this process."""
            seen.extend(json.loads(json.dumps(r.to_dict())) for r in requests)
            return [run_here(olivine.CandidateRequest(**seen[-len(requests) + i]))
                    for i, _ in enumerate(requests)]

    workflow = _search_workflow(tmp_path, onnx_model)
    workflow["systems"] = {"rec": {"type": "RecordingSystem"}}
    workflow["host"] = "rec"
    with using_plugin(_systems_plugin(Recording)):
        result = run_workflow(workflow, tmp_path=tmp_path)
    assert len(seen) == 8 == len(result.report["search"]["candidates"])
    assert seen[0]["choice"] == {"scale.factor": 0.5, "scale.pad": 1000}
    assert seen[0]["model"]["kind"] == "onnx" and seen[0]["cache_dir"] == workflow["cache_dir"]


def test_a_system_with_the_api_1_0_run_candidates_still_works(tmp_path: Path, onnx_model: Path,
                                                              runs_file: Path) -> None:
    import olivine
    from olivine.search.driver import run_choice
    from olivine.testing import run_workflow, using_plugin

    class Old(olivine.LocalSystem):
        """A third-party system written against API 1.0."""

        name = "OldSystem"

        def run_candidates(self, engine: Any, cache: Any, run_dir: Path, model: Any, model_id: str,
                           choices: list[dict[str, Any]]) -> list[dict[str, Any]]:
            """The 1.0 signature: the engine itself."""
            return [run_choice(engine, cache, run_dir, model, model_id, c) for c in choices]

    workflow = _search_workflow(tmp_path, onnx_model)
    workflow["systems"] = {"old": {"type": "OldSystem"}}
    workflow["host"] = "old"
    with using_plugin(_systems_plugin(Old)), pytest.warns(DeprecationWarning, match="API 1.0 form"):
        result = run_workflow(workflow, tmp_path=tmp_path)
    assert result.report["search"]["best"] and len(result.report["search"]["candidates"]) == 8
