"""int8 quantization passes (olivine-quantization) on the tiny exported BERT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import olivine
from olivine.testing import cli_main as main
from olivine.testing import record_quality

SENTENCES = Path(__file__).resolve().parents[3] / "examples" / "minilm" / "sentences.jsonl"


def _op_types(folder: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}


def _close_to_float(folder: Path, reference: Path, ort_session: Any) -> float:
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(5, 200, (2, 16)).astype(np.int64),
             "attention_mask": np.ones((2, 16), np.int64),
             "token_type_ids": np.zeros((2, 16), np.int64)}
    got = ort_session(folder).run(["last_hidden_state"], feeds)[0].reshape(-1, 32)
    want = ort_session(reference).run(["last_hidden_state"], feeds)[0].reshape(-1, 32)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return float(cos.mean())


@pytest.mark.quality
def test_dynamic_quantization(exported_tiny_bert: Path, workflow: Any, ort_session: Any) -> None:
    result = olivine.run(workflow({"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
                                  {"fuse": {"type": "OrtTransformersOptimization"},
                                   "q": {"type": "OnnxDynamicQuantization", "per_channel": True}}))
    assert result.output_dir is not None and result.output_model is not None
    ops = dict(result.output_model.attrs_dict()["quantized_ops"])
    assert ops.get("QAttention") == 2 and ops.get("MatMulInteger", 0) >= 4
    assert "QAttention" in _op_types(result.output_dir)
    assert (result.output_dir / "tokenizer.json").is_file()  # sidecars travel along
    cosine = _close_to_float(result.output_dir, exported_tiny_bert, ort_session)
    record_quality("tiny_bert_dynamic_int8_cosine", cosine=cosine)
    assert cosine > 0.98  # 12 runs: 0.99997


@pytest.mark.quality
def test_static_qdq_from_text_file(exported_tiny_bert: Path, workflow: Any,
                                   ort_session: Any) -> None:
    result = olivine.run(workflow(
        {"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
        {"q": {"type": "OnnxStaticQuantization", "calibration_file": str(SENTENCES),
               "calibration_samples": 8, "calibration_seq_len": 16, "per_channel": True}}))
    assert result.output_dir is not None and result.output_model is not None
    attrs = result.output_model.attrs_dict()
    assert attrs["calibration_samples"] == 8 and attrs["quant_format"] == "QDQ"
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(result.output_dir)
    cosine = _close_to_float(result.output_dir, exported_tiny_bert, ort_session)
    record_quality("tiny_bert_static_qdq_cosine", cosine=cosine)
    assert cosine > 0.95  # 12 runs: 0.9993 .. 0.9995


def test_onnx_quantization_dispatch_qoperator_on_fused_model(exported_tiny_bert: Path,
                                                             workflow: Any, tmp_path: Path,
                                                             ort_session: Any) -> None:
    data = tmp_path / "calib.csv"
    data.write_text("sentence,label\n" + "\n".join(
        f"{json.loads(line)['text'].replace(',', '')},0"
        for line in SENTENCES.read_text().splitlines()[:20]) + "\n")
    cfg = workflow(
        {"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
        {"fuse": {"type": "OrtTransformersOptimization"},
         "q": {"type": "OnnxQuantization", "quant_mode": "static", "quant_format": "QOperator",
               "calibrate_method": "Percentile", "data_config": "calib",
               # random-init biases are all zero and share one initializer; leave Gemm out
               "op_types_to_quantize": ["MatMul"],
               "nodes_to_exclude": ["*/output/dense/MatMul"]}},
        data_configs=[{"name": "calib", "type": "HuggingfaceContainer",
                       "load_dataset_config": {"data_files": str(data)},
                       "pre_process_data_config": {"input_cols": ["sentence"], "max_length": 16,
                                                   "max_samples": 6}}])
    result = olivine.run(cfg)
    assert result.output_dir is not None and result.output_model is not None
    assert result.output_model.attrs_dict()["calibration_samples"] == 6
    ops = _op_types(result.output_dir)
    assert "QLinearMatMul" in ops
    # the glob kept every */output/dense/MatMul (attention output and FFN output) in float
    import onnx

    names = [n.name for n in onnx.load(str(result.output_dir / "model.onnx")).graph.node
             if n.op_type == "MatMul"]
    assert sum(name.endswith("/output/dense/MatMul") for name in names) == 4
    ort_session(result.output_dir)  # loads


def test_onnx_quantization_dynamic_mode(exported_tiny_bert: Path, workflow: Any) -> None:
    result = olivine.run(workflow({"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
                                  {"q": {"type": "OnnxQuantization", "quant_mode": "dynamic"}}))
    assert result.output_model is not None
    assert result.output_model.attrs_dict()["quantization"] == "dynamic"


def _run_cli(cfg: dict[str, Any], tmp_path: Path) -> int:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    return main(["run", "--config", str(path)])


def test_data_config_without_samples_fails_clearly(exported_tiny_bert: Path, workflow: Any,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n{"text": "   "}\n')
    cfg = workflow({"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
                   {"q": {"type": "OnnxStaticQuantization", "data_config": "calib"}},
                   data_configs=[{"name": "calib", "type": "HuggingfaceContainer",
                                  "load_dataset_config": {"data_files": str(empty)}}])
    assert _run_cli(cfg, tmp_path) == 2
    err = capsys.readouterr().err
    assert "step 'q' (pass OnnxStaticQuantization) failed" in err
    assert "data config 'calib' yields no samples" in err and "empty.jsonl" in err


def test_static_without_calibration_data_is_a_config_error(
        exported_tiny_bert: Path, workflow: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = workflow({"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
                   {"q": {"type": "OnnxQuantization", "weight_type": "Int8"}})
    assert _run_cli(cfg, tmp_path) == 2
    err = capsys.readouterr().err
    assert "passes.q.weight_type" in err and "'QInt8'" in err


def test_glob_that_matches_nothing(exported_tiny_bert: Path, workflow: Any, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = workflow({"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
                   {"q": {"type": "OnnxDynamicQuantization", "nodes_to_exclude": ["*/nope/*"]}})
    assert _run_cli(cfg, tmp_path) == 2
    assert "pattern '*/nope/*' matches no node" in capsys.readouterr().err
