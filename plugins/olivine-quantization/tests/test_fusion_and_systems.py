"""OrtTransformersOptimization with Olive's options (model_type empty: inferred from the model),
OnnxFloatToFloat16's external-data options, and host/target written inline as system objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import olivine
from olivine.testing import cli_main as main
from olivine_testutil import SHARED

GPU = {"type": "LocalSystem",
       "accelerators": [{"device": "gpu", "execution_providers": ["CUDAExecutionProvider"]}]}


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(5, 200, (2, 16)).astype(np.int64),
            "attention_mask": np.ones((2, 16), np.int64),
            "token_type_ids": np.zeros((2, 16), np.int64)}


def test_empty_model_type_is_inferred_and_fused(exported_tiny_bert: Path, workflow: Any,
                                               ort_session: Any) -> None:
    # a recipe's block: model_type "", only_onnxruntime with opt_level 1, external data
    result = olivine.run(workflow(
        {"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
        {"ort": {"type": "OrtTransformersOptimization", "model_type": "", "opt_level": 0,
                 "input_int32": True, "save_as_external_data": True,
                 "external_data_name": "model.data"}}))
    assert result.output_model is not None and result.output_dir is not None
    attrs = result.output_model.attrs_dict()
    assert attrs["fusion_model_type"] == "bert" and "Attention" in dict(attrs["fused_ops"])
    assert (result.output_dir / "model.data").is_file()
    graph = onnx.load(str(result.output_dir / "model.onnx"), load_external_data=False).graph
    assert {i.type.tensor_type.elem_type for i in graph.input} == {onnx.TensorProto.INT32}
    feeds = _feeds()
    got = ort_session(result.output_dir).run(
        ["last_hidden_state"], {k: v.astype(np.int32) for k, v in feeds.items()})[0]
    want = ort_session(exported_tiny_bert).run(["last_hidden_state"], feeds)[0]
    np.testing.assert_allclose(got, want, atol=1e-4)  # fusion keeps float32 outputs


@pytest.mark.parametrize(("options", "expected"), [
    ({"use_gpu": True}, "passes.ort: use_gpu: the target's provider is CPUExecutionProvider"),
    ({"use_gqa": True}, "use_gqa: replacing MultiHeadAttention with GroupQueryAttention is not"),
    ({"only_onnxruntime": True, "opt_level": 0}, "opt_level: only_onnxruntime needs a positive"),
    ({"force_fp16_inputs": {"Add": [-1]}}, "passes.ort.force_fp16_inputs.Add: input indices"),
    ({"force_fp16_input": {}}, "passes.ort.force_fp16_input: unknown key (did you mean "
                               "'force_fp16_inputs'?)"),
])
def test_bad_fusion_options_exit_2(exported_tiny_bert: Path, workflow: Any, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str], options: dict[str, Any],
                                   expected: str) -> None:
    cfg = workflow({"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
                   {"ort": {"type": "OrtTransformersOptimization", **options}})
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", "--config", str(path)]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_float16_takes_the_external_data_options(exported_tiny_bert: Path, workflow: Any,
                                                 ort_session: Any) -> None:
    result = olivine.run(workflow(
        {"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
        {"fp16": {"type": "OnnxFloatToFloat16", "save_as_external_data": True,
                  "external_data_name": "model.onnx.data", "keep_io_types": True,
                  "op_include_list": ["MatMul", "Add"], "use_symbolic_shape_infer": False}}))
    assert result.output_dir is not None
    assert (result.output_dir / "model.onnx.data").stat().st_size > 50_000  # the big weights
    got = ort_session(result.output_dir).run(["last_hidden_state"], _feeds())[0]
    want = ort_session(exported_tiny_bert).run(["last_hidden_state"], _feeds())[0]
    np.testing.assert_allclose(got, want, atol=0.05)  # float16 rounding


def test_inline_target_runs_and_reports_errors_under_engine_target(
        exported_tiny_bert: Path, workflow: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cpu = {"type": "LocalSystem",
           "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}
    model = {"type": "ONNXModel", "model_path": str(exported_tiny_bert)}
    passes = {"q": {"type": "OnnxDynamicQuantization", "quant_preprocess": False}}
    result = olivine.run(workflow(model, passes, engine={"host": cpu, "target": cpu}))
    assert result.output_dir is not None and (result.output_dir / "model.onnx").is_file()
    bad = workflow(model, passes, engine={"target": {"type": "LocalSystem",
                                                     "accelerator": [{"device": "cpu"}]}})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**bad, "output_dir": str(tmp_path / "bad-out")}))
    assert main(["run", "--config", str(path)]) == 2
    assert "engine.target.accelerator: unknown key (did you mean 'accelerators'?)" in \
        capsys.readouterr().err
    assert not (tmp_path / "bad-out").exists()


def test_recipe_fusion_fp16_and_inline_target_blocks_validate(exported_tiny_bert: Path,
                                                              workflow: Any) -> None:
    recipes = SHARED / "olive-recipes"
    if not recipes.is_dir():
        pytest.skip("../shared/olive-recipes is absent")
    kinds = ("orttransformersoptimization", "onnxfloattofloat16")
    seen = inline = 0
    for path in sorted(recipes.rglob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except ValueError:
            continue
        if not isinstance(raw, dict) or not isinstance(raw.get("passes"), dict):
            continue
        target = (raw.get("engine") or {}).get("target", raw.get("target"))
        blocks = {n: s for n, s in raw["passes"].items()
                  if isinstance(s, dict) and str(s.get("type", "")).lower() in kinds}
        if not blocks and not isinstance(target, dict):
            continue
        gpu = isinstance(target, dict) or any(s.get("float16") or s.get("use_gpu")
                                              for s in blocks.values())
        engine = {"target": target if isinstance(target, dict) else GPU} if gpu else {}
        olivine.validate(workflow({"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
                                  blocks or {"fp16": {"type": "OnnxFloatToFloat16"}},
                                  engine=engine))
        seen += len(blocks)
        inline += isinstance(target, dict)
    assert seen >= 50 and inline >= 12, (seen, inline)
