"""Olive's INC passes (IncStaticQuantization with SmoothQuant, IncDynamicQuantization) run by
onnx-neural-compressor on the tiny exported BERT of tests/encoders, checked in ONNX Runtime
against the float model; and the options this quantizer cannot honour, refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import olivine
from olivine.cli import main
from olivine_testutil import SHARED, record_quality

pytest.importorskip("onnx_neural_compressor", reason="pip install 'olivine-inc[inc]'")

SENTENCES = Path(__file__).resolve().parents[2] / "examples" / "minilm" / "sentences.jsonl"
CALIBRATION = {"name": "calib", "type": "HuggingfaceContainer",
               "load_dataset_config": {"data_name": "json", "data_files": str(SENTENCES)},
               "pre_process_data_config": {"input_cols": ["text"], "max_length": 16,
                                           "padding": "max_length", "max_samples": 8},
               "dataloader_config": {"batch_size": 1}}
#: the quantization block of olive-recipes' intel-bert-base-uncased-mrpc/oci/cpu/inc_smooth_quant
RECIPE_METRIC = {"name": "accuracy", "type": "custom",
                 "sub_types": [{"name": "accuracy_custom", "priority": 1,
                                "higher_is_better": True}]}


def _feeds(model: Path) -> dict[str, np.ndarray]:
    """Eight sentences the calibration did not see, tokenized as it was (16 tokens)."""
    from transformers import AutoTokenizer

    texts = [json.loads(line)["text"] for line in SENTENCES.read_text().splitlines()[8:16]]
    enc = AutoTokenizer.from_pretrained(str(model))(texts, max_length=16, padding="max_length",
                                                    truncation=True, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in enc.items()}


def _compare(folder: Path, reference: Path, ort_session: Any) -> tuple[float, float]:
    """(max abs difference, smallest per-token cosine) of last_hidden_state against float."""
    feeds = _feeds(reference)
    got = ort_session(folder).run(["last_hidden_state"], feeds)[0]
    want = ort_session(reference).run(["last_hidden_state"], feeds)[0]
    cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    return float(np.abs(got - want).max()), float(cos.min())


def _ops(folder: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}


def _run(workflow: Any, model: Path, step: dict[str, Any]) -> Any:
    return olivine.run(workflow({"type": "ONNXModel", "model_path": str(model)}, {"q": step},
                                data_configs=[CALIBRATION]))


@pytest.mark.quality
def test_static_smooth_quant_as_the_recipe(exported_tiny_bert: Path, workflow: Any,
                                           ort_session: Any) -> None:
    result = _run(workflow, exported_tiny_bert, {
        "type": "IncStaticQuantization", "quant_format": "QOperator", "data_config": "calib",
        "recipes": {"smooth_quant": True, "smooth_quant_args": {"alpha": 0.7}},
        "metric": RECIPE_METRIC})
    assert result.output_dir is not None and result.output_model is not None
    ops = _ops(result.output_dir)
    assert {"QLinearMatMul", "QuantizeLinear", "DequantizeLinear"} <= ops, ops
    assert result.output_model.attrs_dict()["quantization"] == "inc-static"
    diff, cos = _compare(result.output_dir, exported_tiny_bert, ort_session)
    record_quality("inc_static_smooth_quant", max_abs=diff, min_cosine=cos)
    assert cos > 0.9 and diff < 1.5, (diff, cos)


@pytest.mark.quality
def test_dynamic(exported_tiny_bert: Path, workflow: Any, ort_session: Any, tmp_path: Path) -> None:
    workspace = tmp_path / "nc_workspace"
    result = _run(workflow, exported_tiny_bert, {
        "type": "IncDynamicQuantization", "workspace": str(workspace),
        "recipes": {"last_conv_or_matmul_quantization": False}})
    assert result.output_dir is not None
    assert "MatMulInteger" in _ops(result.output_dir)
    kept = json.loads((workspace / "inc_quantization.json").read_text())
    # the tiny BERT's two 2-D inputs make it an NLP model: ENABLE_EXTENDED (INC's domain auto)
    assert kept["graph_optimization_level"] == "ENABLE_EXTENDED"
    assert len(kept["excluded_nodes"]) == 1
    diff, cos = _compare(result.output_dir, exported_tiny_bert, ort_session)
    record_quality("inc_dynamic", max_abs=diff, min_cosine=cos)
    assert cos > 0.9 and diff < 1.5, (diff, cos)
