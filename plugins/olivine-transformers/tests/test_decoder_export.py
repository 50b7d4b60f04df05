"""OnnxConversion of causal LMs with past key values, and fusion of the exported GPT-2.

A model exported with a KV cache must do what a generation loop does with it: prefill
with an empty past, then one token per step feeding the presents back. The tests run
that loop in ONNX Runtime and compare the greedy tokens with transformers' generate.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import olivine
from olivine import OlivineError


@pytest.fixture(scope="module")
def tiny_qwen2(tiny_gpt2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Qwen2 with grouped-query attention (4 heads, 2 KV heads), random weights."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("tiny-qwen2")
    for item in tiny_gpt2.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy(item, folder / item.name)
    vocab = len((tiny_gpt2 / "vocab.txt").read_text().splitlines())
    torch.manual_seed(3)
    config = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128)
    Qwen2ForCausalLM(config).save_pretrained(str(folder))
    return folder


def export(model: Path, workflow: Any, tmp_path: Path, task: str = "text-generation",
           io_config: dict[str, Any] | None = None, **passes: Any) -> Any:
    """Run OnnxConversion (and ``passes`` after it); return the run's result."""
    conversion: dict[str, Any] = {"type": "OnnxConversion"}
    if io_config is not None:
        conversion["io_config"] = io_config
    result = olivine.run(workflow({"type": "HfModel", "model_path": str(model), "task": task},
                                  {"export": conversion, **passes},
                                  output_dir=str(tmp_path / "out"),
                                  cache_dir=str(tmp_path / "cache")))
    assert result.output_dir is not None and result.output_model is not None
    return result


def greedy_onnx(folder: Path, prompt: np.ndarray, new_tokens: int) -> list[int]:
    """Greedy decoding with the KV cache in ONNX Runtime (batch 1)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    present_names = [o.name for o in session.get_outputs() if o.name.startswith("present.")]
    assert len(past_names) == len(present_names) > 0
    past = {n: np.zeros((1, inputs[n].shape[1], 0, inputs[n].shape[3]), np.float32)
            for n in past_names}
    ids, tokens = prompt[None, :], []
    total = ids.shape[1]
    for _ in range(new_tokens):
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64), **past}
        if "position_ids" in inputs:
            feeds["position_ids"] = np.arange(total - ids.shape[1], total, dtype=np.int64)[None]
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds),
                           strict=True))
        token = int(outputs["logits"][0, -1].argmax())
        tokens.append(token)
        past = {p: outputs[q] for p, q in zip(past_names, present_names, strict=True)}
        ids = np.array([[token]], np.int64)
        total += 1
    return tokens


def greedy_torch(model: Path, prompt: np.ndarray, new_tokens: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(model)).eval()
    with torch.no_grad():
        out = lm.generate(torch.from_numpy(prompt)[None], max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return [int(t) for t in out[0, len(prompt):]]


PROMPT = np.array([7, 21, 40, 11, 63, 5], np.int64)


@pytest.mark.parametrize("fixture", [pytest.param("tiny_gpt2", marks=pytest.mark.slow), "tiny_qwen2"])
def test_export_with_past_generates_like_torch(fixture: str, request: pytest.FixtureRequest,
                                               workflow: Any, tmp_path: Path) -> None:
    model = request.getfixturevalue(fixture)
    result = export(model, workflow, tmp_path, io_config={"kv_cache": True})
    out = Path(result.output_dir)
    attributes = result.output_model.attrs_dict()
    assert attributes["kv_cache"] is True
    names = list(attributes["input_names"])
    assert names[:2] == ["input_ids", "attention_mask"]
    assert "past_key_values.1.value" in names and "present.1.value" in attributes["output_names"]
    assert max(attributes["validation_max_abs_diff"].values()) < 1e-4
    assert greedy_onnx(out, PROMPT, 12) == greedy_torch(model, PROMPT, 12)


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_task_with_past_and_olive_name_templates(tiny_qwen2: Path, workflow: Any,
                                                 tmp_path: Path) -> None:
    """Olive's task suffix turns the cache on; its KVCacheConfig name templates are honoured."""
    import onnxruntime as ort

    result = export(tiny_qwen2, workflow, tmp_path, task="text-generation-with-past",
                    io_config={"kv_cache": {"ort_past_key_name": "past_key_<id>",
                                            "ort_past_value_name": "past_value_<id>",
                                            "num_hidden_layers": 2}})
    out = Path(result.output_dir)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    assert inputs == ["input_ids", "attention_mask", "position_ids", "past_key_0", "past_value_0",
                      "past_key_1", "past_value_1"]
    shape = session.get_inputs()[3].shape
    assert shape[1] == 2 and shape[3] == 8  # 2 KV heads of size 32 / 4


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_perplexity_is_the_same_with_and_without_past(tiny_gpt2: Path, workflow: Any,
                                                      tmp_path: Path) -> None:
    """The evaluator feeds an empty past: the cached export scores like the plain one."""
    from test_encoders_evaluators import SENTENCES, _data

    values = []
    for n, io in enumerate(({"kv_cache": True}, {})):
        result = olivine.run(workflow(
            {"type": "HfModel", "model_path": str(tiny_gpt2), "task": "text-generation"},
            {"export": {"type": "OnnxConversion", "io_config": io}},
            output_dir=str(tmp_path / f"out{n}"), cache_dir=str(tmp_path / f"cache{n}"),
            data_configs=[_data("sents", SENTENCES, max_samples=8, padding="longest")],
            evaluators={"e": {"metrics": [{"name": "ppl", "type": "perplexity",
                                           "data_config": "sents"}]}},
            evaluator="e"))
        values.append(result.metrics["output_model"]["ppl"]["perplexity"])
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert values[0] > 10


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_gpt2_with_past_fuses(tiny_gpt2: Path, workflow: Any, tmp_path: Path) -> None:
    """onnxruntime's gpt2 fusion on the cached export: fused ops counted, tokens unchanged."""
    result = export(tiny_gpt2, workflow, tmp_path, io_config={"kv_cache": True},
                    fuse={"type": "OrtTransformersOptimization", "model_type": "gpt2",
                          "num_heads": 4, "hidden_size": 32})
    out = Path(result.output_dir)
    fused = dict(result.output_model.attrs_dict()["fused_ops"])
    # onnxruntime 1.32's gpt2 attention patterns are those of its own legacy export (one
    # stacked past tensor per layer); the MLP and the norms fuse in this export
    assert fused["FastGelu"] == 2 and fused["SkipLayerNormalization"] == 4
    assert greedy_onnx(out, PROMPT, 8) == greedy_torch(tiny_gpt2, PROMPT, 8)


@pytest.mark.parametrize("io_config,message", [
    ({"kv_cache": {"past_name": "x"}}, "kv_cache: unknown key 'past_name'; expected some of "
                                       "ort_past_key_name"),
    ({"kv_cache": {"ort_past_key_name": "past_key"}}, "has no '<id>' for the layer number"),
    ({"kv_cache": True, "input_names": ["input_ids"]}, "cannot be combined with kv_cache"),
    ({"kv_cache": "yes"}, "expected true, false or a mapping"),
])
def test_kv_cache_config_errors_before_running(tiny_qwen2: Path, tmp_path: Path,
                                               io_config: dict[str, Any], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from olivine.testing import cli_main as main

    config = tmp_path / "wf.json"
    config.write_text(json.dumps({
        "input_model": {"type": "HfModel", "model_path": str(tiny_qwen2)},
        "passes": {"export": {"type": "OnnxConversion", "io_config": io_config}},
        "output_dir": str(tmp_path / "out")}))
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and "passes.export.io_config" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_kv_cache_on_an_encoder_fails_clearly(tiny_bert: Path, workflow: Any,
                                              tmp_path: Path) -> None:
    with pytest.raises(OlivineError, match="does not return a key/value cache"):
        export(tiny_bert, workflow, tmp_path, task="feature-extraction",
               io_config={"kv_cache": True})
