"""``inference_settings`` reach every ONNX Runtime session made for the model: the input
model's, and those ``OrtSessionParamsTuning`` writes into its output handle."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import olivine
from olivine import ConfigError, get_plugin_host
from olivine.config import validate_workflow
from olivine.onnxsave import plain_data
from olivine.testing import cli_main as main
from olivine.testing import make_workflow

LAT = {"name": "lat", "type": "latency", "sub_types": [{"name": "avg"}],
       "user_config": {"warmup_num": 1, "repeat_test_num": 2}}


def _sessions(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The session summaries the evaluators logged (read back from each session)."""
    out = []
    for rec in caplog.records:
        if rec.name == "olivine_evaluators.runtime" and rec.msg.startswith("ONNX Runtime session"):
            out.append(rec.args[1])
    return out


def test_input_model_settings_reach_the_session(onnx_model: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    from olivine.ortsession import create_session, session_summary

    settings = {"execution_provider": ["CPUExecutionProvider"],
                "session_options": {"intra_op_num_threads": 3, "graph_optimization_level": 0,
                                    "execution_mode": 1, "extra_session_config": {
                                        "session.intra_op.allow_spinning": "0"}}}
    wf = make_workflow(tmp_path, onnx_model, {}, evaluators={"e": {"metrics": [LAT]}},
                       evaluator="e")
    wf["input_model"]["inference_settings"] = settings
    handle = validate_workflow(wf, get_plugin_host()).input_model.handle
    # the core helper, on the handle alone
    opts = create_session(handle).get_session_options()
    assert (opts.intra_op_num_threads, int(opts.graph_optimization_level),
            int(opts.execution_mode)) == (3, 0, 1)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"

    with caplog.at_level(logging.INFO, logger="olivine_evaluators.runtime"):
        result = olivine.run(wf)
    assert result.ok and result.metrics["input_model"]["lat"]["avg"] > 0
    summaries = _sessions(caplog)
    assert summaries, "the latency evaluator made no session"
    assert summaries[-1] == session_summary(create_session(handle))
    assert summaries[-1]["intra_op_num_threads"] == 3


@pytest.mark.parametrize(("settings", "where", "message"), [
    ({"session_options": {"intra_op_threads": 2}},
     "input_model.inference_settings.session_options.intra_op_threads",
     "unknown session option (did you mean 'intra_op_num_threads'?)"),
    ({"execution_providers": ["CPUExecutionProvider"]},
     "input_model.inference_settings.execution_providers", "did you mean 'execution_provider'"),
    ({"session_options": {"graph_optimization_level": 5}},
     "input_model.inference_settings.session_options.graph_optimization_level",
     "expected 0, 1, 2, 3 or 99"),
    ({"execution_provider": ["CPUExecutionProvider"], "provider_options": [{}, {}]},
     "input_model.inference_settings.provider_options", "2 object(s) for 1 execution provider"),
    ({"provider_selection_policy": "PREFER_NPU"},
     "input_model.inference_settings.provider_selection_policy", "cannot apply here"),
])
def test_wrong_inference_settings_are_config_errors(onnx_model: Path, tmp_path: Path,
                                                    settings: dict[str, Any], where: str,
                                                    message: str) -> None:
    wf = make_workflow(tmp_path, onnx_model, {})
    wf["input_model"]["inference_settings"] = settings
    with pytest.raises(ConfigError) as info:
        validate_workflow(wf, get_plugin_host())
    found = dict(p.split(": ", 1) for p in info.value.problems)
    assert where in found, found
    assert message in found[where]


def test_wrong_metric_inference_settings_are_config_errors(onnx_model: Path,
                                                           tmp_path: Path) -> None:
    lat = {**LAT, "user_config": {"inference_settings": {
        "onnx": {"session_options": {"execution_mode": 2}}, "pytorch": {}}}}
    wf = make_workflow(tmp_path, onnx_model, {}, evaluators={"e": {"metrics": [lat]}})
    with pytest.raises(ConfigError) as info:
        validate_workflow(wf, get_plugin_host())
    found = dict(p.split(": ", 1) for p in info.value.problems)
    where = "evaluators.e.metrics[0].user_config.inference_settings"
    assert found[f"{where}.onnx.session_options.execution_mode"].startswith("expected 0")
    assert "only 'onnx' settings apply" in found[f"{where}.pytorch"]


def test_wrong_inference_settings_exit_2(onnx_model: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    wf = make_workflow(tmp_path, onnx_model, {})
    wf["input_model"]["inference_settings"] = {"session_options": {"intra_op_num_threads": "4"}}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "session_options.intra_op_num_threads: expected a non-negative integer" in err
    assert "Traceback" not in err


def test_latency_after_session_tuning_uses_the_tuned_settings(
        onnx_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from olivine.ortsession import create_session, session_summary

    # the input model asks for 2 intra-op threads; the tuning tries ORT's defaults (baseline,
    # 0 threads read back) and 1 thread, so the session the evaluator makes for the output
    # shows 0 or 1 (what won), never 2 (the input's) nor a mix
    wf = make_workflow(tmp_path, onnx_model,
                       {"t": {"type": "OrtSessionParamsTuning", "cpu_cores": 1,
                              "intra_thread_num_list": [1], "execution_mode_list": [0],
                              "warmup_num": 0, "repeat_test_num": 3}},
                       evaluators={"e": {"metrics": [LAT]}}, evaluator="e")
    wf["input_model"]["inference_settings"] = {"session_options": {"intra_op_num_threads": 2}}
    with caplog.at_level(logging.INFO, logger="olivine_evaluators.runtime"):
        result = olivine.run(wf)
    assert result.ok and result.output_model is not None
    tuned = plain_data(result.output_model.attrs_dict()["inference_settings"])
    used_in, used_out = _sessions(caplog)[-2:]  # the input model's, then the output's
    assert used_in["intra_op_num_threads"] == 2
    assert used_out == session_summary(create_session(result.output_model.model_file(), tuned))
    assert used_out["intra_op_num_threads"] == tuned["session_options"].get(
        "intra_op_num_threads", 0) in (0, 1)
    assert used_out["execution_mode"] == 0
    assert result.metrics["output_model"]["lat"]["avg"] > 0


def test_metric_settings_override_the_model(onnx_model: Path, tmp_path: Path) -> None:
    """Olive's order: a metric's ``inference_settings.onnx`` over the model's, key by key."""
    from olivine import OnnxModel
    from olivine_evaluators.runtime import make_runner

    model = OnnxModel(path=str(onnx_model), attributes={"inference_settings": {
        "session_options": {"intra_op_num_threads": 3}, "io_bind": True}})
    runner = make_runner(model)
    assert runner.summary["intra_op_num_threads"] == 3 and runner.io_bind
    plain = make_runner(OnnxModel(path=str(onnx_model)))
    feeds = {n: np.ones([d if isinstance(d, int) and d > 0 else 2 for d in shape], np.float32)
             for n, (shape, _) in plain.inputs.items()}
    for name, value in runner.run(feeds).items():  # io binding gives the same outputs
        np.testing.assert_array_equal(value, plain.run(feeds)[name])
    over = make_runner(model, {"inference_settings": {"onnx": {
        "session_options": {"intra_op_num_threads": 2}}}})
    assert over.summary["intra_op_num_threads"] == 2 and over.io_bind
    flat = make_runner(model, {"intra_op_num_threads": 1})
    assert flat.summary["intra_op_num_threads"] == 1


def test_provider_pairs_and_unavailable_providers(onnx_model: Path) -> None:
    from olivine import OnnxModel, UsageError
    from olivine.ortsession import create_session, session_settings

    model = OnnxModel(path=str(onnx_model), attributes={"inference_settings": {
        "execution_provider": [["CPUExecutionProvider", {"arena_extend_strategy": 1}]]}})
    settings = session_settings(model)
    assert settings["execution_provider"] == ["CPUExecutionProvider"]
    assert settings["provider_options"] == [{"arena_extend_strategy": "1"}]
    assert session_settings(None, settings) == settings  # resolving twice changes nothing
    assert create_session(model).get_providers() == ["CPUExecutionProvider"]
    gone = OnnxModel(path=str(onnx_model), attributes={"inference_settings": {
        "execution_provider": "NoSuchExecutionProvider"}})
    with pytest.raises(UsageError, match="NoSuchExecutionProvider is not available"):
        create_session(gone)
