"""OrtSessionParamsTuning: it times the settings it is given on the CPU, ranks them, and the
fastest becomes the model's inference settings, which ONNX Runtime sessions then use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from onnx_helpers import F, assert_same, make, run_pass, save

import olivine
from olivine import ConfigError
from olivine.onnxsave import plain_data
from olivine.testing import make_workflow

RNG = np.random.default_rng(5)


def _model(tmp_path: Path) -> Path:
    """x[b, 64] -> MatMul -> Relu -> MatMul -> y: enough work for the timings to mean something."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    inits = {"w1": RNG.standard_normal((64, 128)).astype(np.float32),
             "w2": RNG.standard_normal((128, 64)).astype(np.float32)}
    return save(make(nodes, [helper.make_tensor_value_info("x", F, ["batch", 64])],
                     [helper.make_tensor_value_info("y", F, ["batch", 64])], inits),
                tmp_path / "in" / "model.onnx")


def test_tuning_ranks_what_it_timed_and_writes_the_fastest(tmp_path: Path) -> None:
    model = _model(tmp_path)
    out = run_pass(tmp_path, model, "OrtSessionParamsTuning", cpu_cores=2,
                   intra_thread_num_list=[1, 2], execution_mode_list=[0, 1], opt_level_list=[1, 99],
                   warmup_num=1, repeat_test_num=3)
    folder = out.parent
    rows = json.loads((folder / "session_params_tuning.json").read_text())
    # ORT's defaults (the baseline) and 2 threads x 2 modes x 2 levels
    assert len(rows) == 9 and all(r["error"] is None for r in rows)
    avgs = [r["latency_ms"]["avg"] for r in rows]
    assert avgs == sorted(avgs) and all(a > 0 for a in avgs)
    assert {r["settings"]["session_options"].get("intra_op_num_threads") for r in rows} == {None, 1, 2}
    table = (folder / "session_params_tuning.md").read_text()
    assert table.count("| CPUExecutionProvider") + table.count("| baseline") == 9
    assert f"written: **{rows[0]['label']}**" in table

    written = json.loads((folder / "inference_settings.json").read_text())
    assert written == rows[0]["settings"]
    assert_same(model, out, feeds={"x": RNG.standard_normal((3, 64)).astype(np.float32)})

    # ORT itself applies the written settings (ort_config metadata) when asked to
    code = ("import onnxruntime as ort, sys; o = ort.InferenceSession(sys.argv[1], "
            "providers=['CPUExecutionProvider']).get_session_options(); "
            "print(o.intra_op_num_threads, int(o.graph_optimization_level))")
    env = {**os.environ, "ORT_LOAD_CONFIG_FROM_MODEL": "1"}
    got = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    session = written["session_options"]
    assert got == [str(session.get("intra_op_num_threads", 0)),
                   str(session.get("graph_optimization_level", 99))]

    from olivine_onnx.session_tuning import create_session

    options = create_session(out).get_session_options()
    assert options.intra_op_num_threads == session.get("intra_op_num_threads", 0)


def test_tuning_reusable_function_and_handle_attribute(tmp_path: Path) -> None:
    """The tuning core works without the engine; the pass's output handle carries the settings."""
    from olivine_onnx.session_pass import SessionParamsTuningConfig
    from olivine_onnx.session_tuning import candidates, create_session, generated_feeds, tune_session_params

    model = _model(tmp_path)
    config = SessionParamsTuningConfig(intra_thread_num_list=[1, 2])
    rows = candidates(config, ["CPUExecutionProvider"], cores=2)
    assert [r.label for r in rows] == ["baseline CPUExecutionProvider",
                                      "CPUExecutionProvider intra=1", "CPUExecutionProvider intra=2"]
    feeds = generated_feeds(create_session(model, rows[0].settings))
    assert feeds["x"].shape == (1, 64)
    ranked = tune_session_params(model, feeds, rows, warmup=1, repeat=2)
    assert [r.avg for r in ranked] == sorted(r.avg for r in ranked)

    wf = make_workflow(tmp_path / "e", model, {"t": {"type": "OrtSessionParamsTuning", "cpu_cores": 1,
                                                     "warmup_num": 0, "repeat_test_num": 1}})
    result = olivine.run(wf)
    assert result.ok
    assert result.output_model is not None
    settings = plain_data(result.output_model.attrs_dict()["inference_settings"])
    assert settings["execution_provider"] == ["CPUExecutionProvider"]
    assert settings == json.loads((Path(result.output_model.path) / "inference_settings.json")
                                  .read_text())


@pytest.mark.parametrize(("options", "message"), [
    ({"io_bind": True}, "passes.t: io_bind: I/O binding needs a GPU execution provider"),
    ({"enable_cuda_graph": True}, "passes.t: enable_cuda_graph: CUDA graphs need CUDAExecutionProvider"),
    ({"trt_fp16_enable": True}, "passes.t: trt_fp16_enable: needs TensorrtExecutionProvider"),
    ({"providers_list": "CUDAExecutionProvider"},
     "passes.t: providers_list: CUDAExecutionProvider is not the target's execution provider "
     "(CPUExecutionProvider); set force_evaluate_other_eps"),
    ({"device": "gpu"}, "passes.t: device: 'gpu' is not the target device 'cpu'"),
    ({"execution_mode_list": [0, 2]}, "passes.t.execution_mode_list: 2 is not one of 0"),
    ({"intra_thread_count_list": [1]}, "passes.t.intra_thread_count_list: unknown key"),
    ({"user_script": "x.py"}, "passes.t: user_script: the pass reads data through data_config"),
])
def test_tuning_options_that_cannot_apply_on_cpu(tmp_path: Path, options: dict, message: str) -> None:
    model = _model(tmp_path)
    wf = make_workflow(tmp_path, model, {"t": {"type": "OrtSessionParamsTuning", **options}})
    with pytest.raises(ConfigError) as info:
        olivine.validate(wf)
    assert message in str(info.value)


def test_tuning_times_the_first_batch_of_its_data_config(tmp_path: Path) -> None:
    """Rows of a local JSON-lines file, batched by 3: the table says it timed 3 x 64 inputs."""
    model = _model(tmp_path)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"x": RNG.standard_normal(64).round(3).tolist()}) + "\n"
                            for _ in range(5)))
    wf = make_workflow(tmp_path, model, {"t": {
        "type": "OrtSessionParamsTuning", "data_config": "d", "intra_thread_num_list": 1,
        "warmup_num": 0, "repeat_test_num": 2}},
        data_configs=[{"name": "d", "load_dataset_config": {"data_files": str(rows)},
                       "dataloader_config": {"batch_size": 3}}])
    result = olivine.run(wf)
    folder = Path(result.output_model.path)
    assert "timed on x[3, 64]" in (folder / "session_params_tuning.md").read_text()
    wf["data_configs"] = []
    with pytest.raises(ConfigError, match="data_config"):
        olivine.validate(wf)


def test_tuning_a_genai_model_writes_its_session_options(tmp_path: Path, genai_model: Path) -> None:
    """onnxruntime-genai reads the written thread counts (and loads the model with them)."""
    og = pytest.importorskip("onnxruntime_genai")
    wf = make_workflow(tmp_path, genai_model.parent, {"t": {
        "type": "OrtSessionParamsTuning", "intra_thread_num_list": [1, 2], "opt_level_list": 1,
        "warmup_num": 0, "repeat_test_num": 2}})
    folder = Path(olivine.run(wf).output_model.path)
    best = json.loads((folder / "inference_settings.json").read_text())["session_options"]
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    written = decoder["session_options"]
    # ONNX Runtime's defaults (the baseline) may be fastest: then nothing is written
    assert written.get("intra_op_num_threads") == best.get("intra_op_num_threads")
    assert written.get("graph_optimization_level") == (
        "ORT_ENABLE_BASIC" if best.get("graph_optimization_level") == 1 else None)
    og.Model(str(folder))


def test_tuning_other_providers_when_forced(tmp_path: Path) -> None:
    """A provider this onnxruntime lacks is a failed row of the table, not the end of tuning."""
    import onnxruntime as ort

    model = _model(tmp_path)
    out = run_pass(tmp_path, model, "OrtSessionParamsTuning", cpu_cores=1,
                   providers_list=["CPUExecutionProvider", "CUDAExecutionProvider"],
                   force_evaluate_other_eps=True, warmup_num=0, repeat_test_num=2)
    rows = json.loads((out.parent / "session_params_tuning.json").read_text())
    cuda = [r for r in rows if r["settings"]["execution_provider"] == ["CUDAExecutionProvider"]]
    assert len(cuda) == 2 and len(rows) == 4
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert all("CUDAExecutionProvider is not available" in r["error"] for r in cuda)
        assert rows[-2:] == cuda  # failed rows rank last
        written = json.loads((out.parent / "inference_settings.json").read_text())
        assert written["execution_provider"] == ["CPUExecutionProvider"]
