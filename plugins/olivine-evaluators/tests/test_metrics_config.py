"""Olive's top-level ``metrics`` list named from evaluators, and its speech sub-metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import olivine
from olivine import ConfigError, get_plugin_host
from olivine.config import validate_workflow
from olivine.testing import cli_main as main
from olivine.testing import make_workflow

RECIPES = Path("/work/shared/olive-recipes")
WHISPER_WER = RECIPES / "openai-whisper-tiny.en" / "cpu" / "whisper_eval_wer.json"


def _eval_only(tmp_path: Path, model: Path, metrics: list[dict[str, Any]],
               names: list[Any]) -> dict[str, Any]:
    """The shape of Olive's whisper_eval_wer.json: an ONNX model, top-level metrics named by
    the common evaluator, no passes."""
    wf = make_workflow(tmp_path, model, {}, metrics=metrics,
                       evaluators={"common_evaluator": {"metrics": names}},
                       evaluator="common_evaluator")
    wf["systems"] = {"local_system": {"type": "LocalSystem", "accelerators": [
        {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}}
    wf["host"] = wf["target"] = "local_system"
    return wf


def _problems(error: ConfigError) -> dict[str, str]:
    return dict(p.split(": ", 1) for p in error.problems)


LAT = {"name": "lat", "type": "latency", "sub_types": [{"name": "avg", "priority": 1},
                                                        {"name": "max", "priority": 2}],
       "user_config": {"warmup_num": 1, "repeat_test_num": 3}}
SIZE = {"name": "size", "type": "size_on_disk", "sub_types": [{"name": "bytes"}]}
UNUSED = {"name": "never_named", "type": "latency", "sub_types": [{"name": "p90"}]}


def test_top_level_metrics_are_measured_where_named(onnx_model: Path, tmp_path: Path) -> None:
    wf = _eval_only(tmp_path, onnx_model, [LAT, SIZE, UNUSED], ["size", "lat"])
    result = olivine.run(wf)
    assert result.ok
    measured = result.metrics["input_model"]
    assert list(measured) == ["size", "lat"]  # the evaluator's order; the unused one is not run
    files = sum(f.stat().st_size for f in onnx_model.iterdir() if f.is_file())
    assert measured["size"] == {"bytes": float(files)}
    assert 0 < measured["lat"]["avg"] <= measured["lat"]["max"]
    # the normalized workflow carries the resolved metric, not the name
    metric = validate_workflow(wf, get_plugin_host()).to_dict()[
        "evaluators"]["common_evaluator"]["metrics"][1]
    assert metric["name"] == "lat" and metric["user_config"]["repeat_test_num"] == 3


def test_inline_and_named_metrics_mix(onnx_model: Path, tmp_path: Path) -> None:
    wf = _eval_only(tmp_path, onnx_model, [SIZE], [LAT, "size"])
    cfg = validate_workflow(wf, get_plugin_host())
    assert [m.name for m in cfg.evaluators["common_evaluator"].metrics] == ["lat", "size"]


def test_undefined_metric_name_lists_the_defined(onnx_model: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    wf = _eval_only(tmp_path, onnx_model, [LAT, SIZE], ["lat", "sizes"])
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "evaluators.common_evaluator.metrics[1]" in err
    assert "metric 'sizes' is not defined" in err and "defined: lat, size" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("metrics", "where", "message"), [
    ([LAT, LAT], "metrics[1].name", "metric 'lat' is defined twice"),
    ([{"type": "latency"}], "metrics[0].name", "required"),
    ([{**LAT, "sub_types": [{"name": "p42"}]}], "metrics[0].sub_types[0].name",
     "unknown sub-metric 'p42'"),
    ({"lat": LAT}, "metrics", "expected a list"),
])
def test_wrong_top_level_metrics(onnx_model: Path, tmp_path: Path, metrics: Any, where: str,
                                 message: str) -> None:
    wf = _eval_only(tmp_path, onnx_model, metrics, [])
    with pytest.raises(ConfigError) as info:
        validate_workflow(wf, get_plugin_host())
    found = _problems(info.value)
    assert where in found, found
    assert message in found[where]


@pytest.mark.skipif(not WHISPER_WER.is_file(), reason="the olive-recipes corpus is not here")
def test_speech_submetrics_are_a_clear_config_error(onnx_model: Path) -> None:
    """Olive's WER/RTFx transcribe audio with a genai Whisper model; olivine says it cannot."""
    wf = json.loads(WHISPER_WER.read_text())
    wf["input_model"]["model_path"] = str(onnx_model)
    with pytest.raises(ConfigError) as info:
        validate_workflow(wf, get_plugin_host(), source=str(WHISPER_WER))
    found = _problems(info.value)
    wer, rtfx = found["metrics[0].sub_types[0].name"], found["metrics[0].sub_types[1].name"]
    assert wer.startswith("'wer' (word error rate) is Olive's speech-recognition sub-metric")
    assert rtfx.startswith("'rtfx'")
    assert "cannot transcribe audio" in wer and "onnxruntime-genai Whisper" in wer
    # the name resolves: no second problem under the evaluator
    assert not any(k.startswith("evaluators.") for k in found), found


@pytest.mark.skipif(not WHISPER_WER.is_file(), reason="the olive-recipes corpus is not here")
def test_schema_takes_top_level_metrics_and_names() -> None:
    import jsonschema

    from olivine.config import workflow_schema

    schema = workflow_schema(get_plugin_host())
    jsonschema.validate(json.loads(WHISPER_WER.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"input_model": {"type": "ONNXModel", "model_path": "m"},
                             "metrics": {"lat": LAT}}, schema)
