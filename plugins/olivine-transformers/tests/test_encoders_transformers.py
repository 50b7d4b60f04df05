"""OnnxConversion, OrtTransformersOptimization and OnnxFloatToFloat16 on tiny local models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import olivine
from olivine.testing import cli_main as main


def _torch_outputs(folder: Path, task: str, feeds: dict[str, np.ndarray]) -> Any:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    cls = AutoModel if task == "feature-extraction" else AutoModelForSequenceClassification
    model = cls.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}, return_dict=True)


def _feeds(folder: Path, texts: list[str]) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    return {k: v.astype(np.int64) for k, v in tok(texts, padding=True, return_tensors="np").items()}


def test_export_matches_torch_with_dynamic_axes(tiny_bert: Path, exported_tiny_bert: Path,
                                                ort_session: Any) -> None:
    out = exported_tiny_bert
    report = json.loads((out / "run.json").read_text())
    attrs = report["output_model"]["attributes"]
    assert attrs["exporter"] == "torchscript" and attrs["model_type"] == "bert"
    assert attrs["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert attrs["output_names"] == ["last_hidden_state", "pooler_output"]
    assert dict(attrs["validation_max_abs_diff"])["last_hidden_state"] < 1e-4
    # the tokenizer travels with the model
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    texts = ["the quick brown fox jumps over the lazy dog .", "a cat", "how do i reset it ?",
             "the museum opens at nine", "children were playing"]
    feeds = _feeds(tiny_bert, texts)  # batch 5, another length than the export's
    got = ort_session(out).run(["last_hidden_state"], feeds)[0]
    want = _torch_outputs(tiny_bert, "feature-extraction", feeds).last_hidden_state.numpy()
    assert got.shape == want.shape == (5, feeds["input_ids"].shape[1], 32)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_text_classification_export(tiny_classifier: Path, workflow: Any,
                                     ort_session: Any) -> None:
    result = olivine.run(workflow(
        {"type": "HfModel", "model_path": str(tiny_classifier), "task": "text-classification"},
        {"export": {"type": "OnnxConversion", "target_opset": 14}}))
    assert result.output_dir is not None
    session = ort_session(result.output_dir)
    assert [o.name for o in session.get_outputs()] == ["logits"]
    feeds = _feeds(tiny_classifier, ["a man is playing a guitar", "stocks fell"])
    got = session.run(None, feeds)[0]
    want = _torch_outputs(tiny_classifier, "text-classification", feeds).logits.numpy()
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_fusion_counts_and_optimization_level_all(exported_tiny_bert: Path, workflow: Any,
                                                  ort_session: Any, tiny_bert: Path) -> None:
    result = olivine.run(workflow(
        {"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
        {"fuse": {"type": "OrtTransformersOptimization", "optimization_level": "all",
                  "require_fused": ["Attention"]}}))
    assert result.output_model is not None
    attrs = result.output_model.attrs_dict()
    fused = dict(attrs["fused_ops"])
    assert fused["Attention"] == 2  # one per layer
    assert fused["EmbedLayerNormalization"] == 1
    assert fused["SkipLayerNormalization"] == 4
    assert attrs["fusion_model_type"] == "bert"  # taken from the export's model_type
    step = result.report["steps"][0]
    assert step["config"]["opt_level"] == "all"
    feeds = _feeds(tiny_bert, ["the quick brown fox", "a cat is sleeping on the warm windowsill"])
    got = ort_session(result.output_dir).run(["last_hidden_state"], feeds)[0]
    want = ort_session(exported_tiny_bert).run(["last_hidden_state"], feeds)[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_float16_conversion_halves_weights(exported_tiny_bert: Path, workflow: Any,
                                           ort_session: Any, tiny_bert: Path) -> None:
    import onnx

    result = olivine.run(workflow({"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
                                  {"fp16": {"type": "OnnxFloatToFloat16", "keep_io_types": True}}))
    assert result.output_dir is not None
    proto = onnx.load(str(result.output_dir / "model.onnx"))
    kinds = {i.data_type for i in proto.graph.initializer if len(i.dims) == 2}
    assert kinds == {onnx.TensorProto.FLOAT16}
    feeds = _feeds(tiny_bert, ["a woman is slicing tomatoes"])
    got = ort_session(result.output_dir).run(["last_hidden_state"], feeds)[0]
    want = ort_session(exported_tiny_bert).run(["last_hidden_state"], feeds)[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=5e-2)
    size16 = (result.output_dir / "model.onnx").stat().st_size
    assert size16 < 0.75 * (exported_tiny_bert / "model.onnx").stat().st_size


UNSUPPORTED = '''
import torch

class Whitening(torch.nn.Module):
    def forward(self, x):
        cov = x @ x.transpose(-1, -2) + torch.eye(x.shape[-1])
        return torch.linalg.cholesky(cov)

def load(path):
    return Whitening()
'''

RANDOM = '''
import torch

class Noisy(torch.nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)

def load(path):
    return Noisy()
'''


def _script_workflow(tmp_path: Path, source: str, workflow: Any) -> Path:
    script = tmp_path / "my_model.py"
    script.write_text(source)
    folder = tmp_path / "torch-model"
    folder.mkdir()
    cfg = workflow({"type": "HfModel", "model_path": str(folder), "task": "feature-extraction"},
                   {"export": {"type": "OnnxConversion", "model_script": str(script),
                               "model_loader": "load",
                               "io_config": {"input_names": ["x"], "input_shapes": [[2, 4, 4]],
                                             "input_types": ["float32"]}}})
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(cfg))
    return path


def test_export_with_unsupported_op_fails_clearly(tmp_path: Path, workflow: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = _script_workflow(tmp_path, UNSUPPORTED, workflow)
    assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "step 'export' (pass OnnxConversion) failed" in err
    assert "aten::linalg_cholesky" in err and "not supported" in err


def test_export_mismatch_fails_with_numbers(tmp_path: Path, workflow: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = _script_workflow(tmp_path, RANDOM, workflow)
    assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "does not match torch" in err and "max abs" in err and "atol=0.0001" in err


def test_unknown_fusion_model_type_is_a_config_error(exported_tiny_bert: Path, tmp_path: Path,
                                                     workflow: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = workflow({"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
                   {"fuse": {"type": "OrtTransformersOptimization", "model_type": "bret"}})
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "passes.fuse.model_type" in err and "does not know 'bret'" in err
    assert "did you mean 'bert'" in err and "gpt2" in err


def test_fusion_without_a_model_type_is_skipped_with_a_warning(
        tmp_path: Path, workflow: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Olive's behaviour: no model_type given or recorded -> the model passes through unchanged
    hello = Path(__file__).resolve().parents[3] / "examples" / "hello" / "model"
    cfg = workflow({"type": "ONNXModel", "model_path": str(hello)},
                   {"fuse": {"type": "OrtTransformersOptimization", "model_type": ""}})
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", "--config", str(path)]) == 0
    assert "OrtTransformersOptimization skipped" in caplog.text  # a WARNING on the CLI's stderr


def test_bad_options_are_reported_before_running(tmp_path: Path, workflow: Any, tiny_bert: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = workflow({"type": "HfModel", "model_path": str(tiny_bert), "task": "feature-extraction"},
                   {"export": {"type": "OnnxConversion", "target_opset": 3,
                               "model_loader": "load"},
                    "fuse": {"type": "OrtTransformersOptimization", "opt_level": "fastest"}})
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "target_opset" in err and "opt_level" in err
