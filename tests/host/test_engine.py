"""The engine end to end: real ONNX in, real ONNX out, cache, failures, reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import olivine
from olivine.testing import make_workflow
from olivine_testutil import executions, olivine_subprocess


def _outputs(model_dir: Path) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    return sess.run(None, {"x": x})[0]


def test_run_produces_a_model_onnxruntime_loads(tmp_path: Path, onnx_model: Path,
                                                write_config: Any, cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {
        "stamp": {"type": "OnnxMetadata", "metadata": {"k": "v"}, "doc_string": "d"},
        "double": {"type": "Scale", "factor": 2.0},
    })
    code, out, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    result_dir = tmp_path / "out"
    assert sorted(p.name for p in result_dir.iterdir()) == [
        "model.onnx", "model.onnx.data", "run.json", "summary.txt"]
    np.testing.assert_allclose(_outputs(result_dir), 4 * _outputs(onnx_model), rtol=1e-5)
    sess = ort.InferenceSession(str(result_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_modelmeta().custom_metadata_map == {"k": "v"}
    report = json.loads((result_dir / "run.json").read_text())
    assert report["status"] == "succeeded"
    steps = report["steps"]
    assert [s["pass"] for s in steps] == ["OnnxMetadata", "Scale"]
    assert steps[0]["config"] == {"metadata": {"k": "v"}, "doc_string": "d", "model_version": None}
    assert steps[1]["input_id"] == steps[0]["output_id"]
    assert report["input_model"]["id"] == steps[0]["input_id"]
    for s in steps:
        assert s["status"] == "ran" and s["duration_s"] >= 0 and s["peak_rss_mb"] > 10
        assert len(s["key"]) == 64 and s["libraries"]["onnx"] != "not installed"
    assert report["environment"]["libraries"]["onnxruntime"] == ort.__version__
    assert "olivine run" in out and "stamp" in out and "double" in out


def test_second_run_takes_every_step_from_the_cache(tmp_path: Path, onnx_model: Path,
                                                     runs_file: Path, write_config: Any,
                                                     cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 3.0},
                                              "b": {"type": "Scale", "factor": 0.5}})
    path = write_config(wf)
    assert cli("run", "--config", str(path))[0] == 0
    first = _outputs(tmp_path / "out")
    assert executions(runs_file) == ["Scale a", "Scale b"]
    assert cli("run", "--config", str(path))[0] == 0
    assert executions(runs_file) == ["Scale a", "Scale b"]
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["cached", "cached"]
    np.testing.assert_array_equal(_outputs(tmp_path / "out"), first)


def test_changing_a_config_value_reruns_from_that_step(tmp_path: Path, onnx_model: Path,
                                                       runs_file: Path, write_config: Any,
                                                       cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 3.0},
                                              "b": {"type": "Scale", "factor": 0.5}})
    assert cli("run", "--config", str(write_config(wf)))[0] == 0
    wf["passes"]["b"]["factor"] = 0.25
    assert cli("run", "--config", str(write_config(wf)))[0] == 0
    assert executions(runs_file) == ["Scale a", "Scale b", "Scale b"]
    np.testing.assert_allclose(_outputs(tmp_path / "out"), 0.75**2 * _outputs(onnx_model), rtol=1e-5)
    wf["passes"]["a"]["factor"] = 1.5
    assert cli("run", "--config", str(write_config(wf)))[0] == 0
    assert executions(runs_file)[3:] == ["Scale a", "Scale b"]


def test_changing_the_input_model_content_reruns(tmp_path: Path, onnx_model: Path,
                                                 runs_file: Path, write_config: Any,
                                                 cli: Any) -> None:
    import onnx
    from onnx import numpy_helper

    path = write_config(make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"}}))
    assert cli("run", "--config", str(path))[0] == 0
    proto = onnx.load(str(onnx_model / "model.onnx"))
    w = numpy_helper.to_array(proto.graph.initializer[0]).copy()
    w[0, 0] += 1
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, proto.graph.initializer[0].name))
    onnx.save_model(proto, str(onnx_model / "model.onnx"), save_as_external_data=True,
                    location="model.onnx.data", size_threshold=0)
    assert cli("run", "--config", str(path))[0] == 0
    assert executions(runs_file) == ["Scale a", "Scale a"]


def test_a_library_version_change_invalidates_the_cache(tmp_path: Path, onnx_model: Path,
                                                        runs_file: Path, write_config: Any) -> None:
    """Scale names 'olivine-testkit-dep' among its libraries; install versions of it for real."""

    def install_dep(version: str) -> dict[str, str]:
        site = tmp_path / f"site-{version}"
        info = site / f"olivine_testkit_dep-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: olivine-testkit-dep\n"
                                       f"Version: {version}\n")
        return {"PYTHONPATH": str(site)}

    path = write_config(make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"}}))
    for version, expected in [("1.0", 1), ("1.0", 1), ("2.0", 2)]:
        proc = olivine_subprocess("run", "--config", str(path), env=install_dep(version))
        assert proc.returncode == 0, proc.stderr
        assert len(executions(runs_file)) == expected
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["steps"][0]["libraries"]["olivine-testkit-dep"] == "2.0"


def test_failing_pass_names_pass_and_cause_and_writes_nothing(tmp_path: Path, onnx_model: Path,
                                                              runs_file: Path, write_config: Any,
                                                              cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"},
                                              "boom": {"type": "Fail", "message": "disk on fire"}})
    path = write_config(wf)
    code, _out, err = cli("run", "--config", str(path))
    assert code == 1
    assert "olivine: step 'boom' (pass Fail) failed: RuntimeError: disk on fire" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    report_path = Path(err.split("olivine: report: ")[1].strip())
    report = json.loads(report_path.read_text())
    assert report["status"] == "failed"
    assert report["steps"][-1]["status"] == "failed"
    assert "disk on fire" in report["steps"][-1]["error"]["traceback"]
    assert (report_path.parent / "summary.txt").read_text().count("disk on fire") == 1
    # the failure is not cached: a rerun runs the failing pass again but not the good one
    assert cli("run", "--config", str(path))[0] == 1
    assert executions(runs_file) == ["Scale a", "Fail boom", "Fail boom"]
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_existing_output_folder_of_another_tool_is_refused(tmp_path: Path, onnx_model: Path,
                                                           write_config: Any, cli: Any) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("mine")
    code, _, err = cli("run", "--config",
                       str(write_config(make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"}}))))
    assert code == 2
    assert f"output folder '{tmp_path / 'out'}' exists and was not made by olivine" in err
    assert (tmp_path / "out" / "precious.txt").read_text() == "mine"


def test_python_api_returns_result(tmp_path: Path, onnx_model: Path) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 2.0}},
                       evaluators={"e": {"metrics": [{"name": "w", "type": "weight_stats",
                                                      "sub_types": [{"name": "abs_sum"}]}]}},
                       evaluator="e")
    result = olivine.run(wf)
    assert result.ok
    assert isinstance(result.output_model, olivine.OnnxModel)
    assert Path(result.output_model.model_file()).exists()
    base = result.metrics["input_model"]["w"]["abs_sum"]
    assert result.metrics["output_model"]["w"]["abs_sum"] == pytest.approx(2 * base, rel=1e-5)


def test_goal_not_met_without_search_publishes_and_reports_it(
        tmp_path: Path, onnx_model: Path, write_config: Any, cli: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """As Olive's no-search mode: the output is published whatever the goals say; the missed
    goal is in the report, the summary and the log, and the exit code is 0. With a
    search_strategy (Olive's search mode, here with nothing to search) only a model that
    meets the goals is published: exit 3, nothing written."""
    goal = {"type": "percent-max-degradation", "value": 10}
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 0.5}},
                       evaluators={"e": {"metrics": [{"name": "w", "type": "weight_stats",
                                                      "sub_types": [{"name": "abs_sum",
                                                                     "goal": goal}]}]}},
                       evaluator="e")
    with caplog.at_level("WARNING", logger="olivine.engine"):
        code, out, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    warning = caplog.text
    assert "the output model does not meet the evaluator's goals: w-abs_sum = " in warning
    assert "(goal percent-max-degradation 10, input model " in warning
    assert "published anyway" in warning
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["status"] == "succeeded" and report["goals_met"] is False
    assert [g["met"] for g in report["goals"]] == [False]
    assert report["missed_goals"][0].startswith("w-abs_sum = ")
    assert (tmp_path / "out" / "model.onnx").is_file()
    assert "goal w-abs_sum percent-max-degradation 10.0: NOT met" in out
    assert "goals missed: the output is published anyway" in out

    searched = {**wf, "output_dir": str(tmp_path / "searched"),
                "search_strategy": {"execution_order": "joint", "sampler": "sequential"}}
    code, _, err = cli("run", "--config", str(write_config(searched)))
    assert code == 3
    assert "with a search_strategy only a model that meets them is published" in err
    assert not (tmp_path / "searched").exists()

    wf["passes"]["a"]["factor"] = 0.95
    code, _, err = cli("run", "--config", str(write_config(wf)))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["goals"][0]["met"] is True and report["goals_met"] is True
    assert "missed_goals" not in report


def test_dry_run_prints_plan_and_runs_nothing(tmp_path: Path, onnx_model: Path, runs_file: Path,
                                              write_config: Any, cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 2.0}})
    code, out, _ = cli("run", "--config", str(write_config(wf)), "--dry-run")
    assert code == 0
    assert "1. a: Scale (testkit) onnx -> onnx" in out and "factor = 2.0" in out
    assert executions(runs_file) == [] and not (tmp_path / "out").exists()


def test_cache_ls_and_clean(tmp_path: Path, onnx_model: Path, write_config: Any, cli: Any) -> None:
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale"}, "b": {"type": "Scale"}})
    assert cli("run", "--config", str(write_config(wf)))[0] == 0
    cache = str(tmp_path / "cache")
    code, out, _ = cli("cache", "ls", "--cache_dir", cache, "--json")
    rows = json.loads(out)
    assert code == 0 and sorted(r["step"] for r in rows) == ["a", "b"]
    code, out, _ = cli("cache", "clean", "--cache_dir", cache, "--older-than", "1d")
    assert "removed 0 steps" in out
    code, out, _ = cli("cache", "clean", "--cache_dir", cache)
    assert "removed 2 steps" in out
    assert json.loads(cli("cache", "ls", "--cache_dir", cache, "--json")[1]) == []
    assert cli("cache", "clean", "--cache_dir", cache, "--older-than", "soon")[0] == 2


def test_passes_and_schema_commands(cli: Any) -> None:
    code, out, _ = cli("passes", "OnnxMetadata")
    assert code == 0 and "model_version (int or null, default null)" in out
    code, out, _ = cli("passes", "--json")
    assert {r["name"] for r in json.loads(out)} >= {"OnnxMetadata", "Scale"}
    code, out, _ = cli("schema")
    schema = json.loads(out)
    props = schema["$defs"]["passes"]["Scale"]["properties"]
    assert props["factor"] == {"type": "number", "default": 2.0,
                               "description": "multiply every float initializer by this"}
    code, out, _ = cli("schema", "--pass", "onnx_metadata")
    assert json.loads(out)["properties"]["type"] == {"const": "OnnxMetadata"}
    code, _, err = cli("passes", "Scal")
    assert code == 2 and "unknown pass type 'Scal' (did you mean 'Scale'?)" in err


def test_schema_accepts_a_valid_workflow(tmp_path: Path, onnx_model: Path, cli: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(cli("schema")[1])
    wf = make_workflow(tmp_path, onnx_model, {"a": {"type": "Scale", "factor": 2.0}})
    jsonschema.validate(wf, schema)
    wf["passes"]["a"]["factor"] = "big"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wf, schema)


def test_yaml_workflow(tmp_path: Path, onnx_model: Path, cli: Any) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(f"""
input_model:
  type: ONNXModel
  model_path: {onnx_model}
passes:
  double:
    type: Scale
    factor: 2
engine:
  output_dir: {tmp_path / 'out'}
  cache_dir: {tmp_path / 'cache'}
  log_severity_level: 3
""")
    code, _, err = cli("run", "--config", str(path))
    assert code == 0, err
    np.testing.assert_allclose(_outputs(tmp_path / "out"), 4 * _outputs(onnx_model), rtol=1e-5)

