"""Every decoder family the installed builder converts, as a tiny random model.

Each model (hidden 64, 2 layers, head size 16 unless noted) is made from its
transformers config with the Sonnets tokenizer, converted to fp32 for CPU, and
run in onnxruntime-genai: its last-token logits match torch's and it generates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mb_helpers import genai_greedy, make_family

from olivine_modelbuilder import builder_info

#: model_type -> config overrides that keep the model tiny and convertible on CPU.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {},
    "qwen2": {},
    "qwen3": {},
    "phi3": {"original_max_position_embeddings": 256},
    # partial rotary (0.5): head size 32 so that 16 dimensions rotate (the CPU kernel's minimum)
    "phi": {"hidden_size": 128, "partial_rotary_factor": 0.5},
    "nemotron": {"hidden_size": 128, "partial_rotary_factor": 0.5},
    "gemma": {},
    "gemma2": {"sliding_window": 8},
    "granite": {},
    "smollm3": {},
    "ernie4_5": {},
    "hunyuan_v1_dense": {},
    "lfm2": {},
    "lfm2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
                 "layer_types": ["full_attention", "conv"], "num_dense_layers": 1},
    "gpt_oss": {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 8},
}

#: Families the builder lists but that fail with a transformers-5 config (reported upstream-style).
BROKEN = {
    "gemma3_text": ({"sliding_window": 8},
                    "builder 0.18 reads rope_parameters['rope_type'], which transformers 5 nests "
                    "per layer type for Gemma 3 (KeyError: 'rope_type')"),
}

#: Families the builder converts with different math than transformers (see modelinfo).
INACCURATE = {"olmo": {}}

#: Architectures the builder lists that these tests do not build, and why.
NOT_COVERED = {
    "ChatGLMForConditionalGeneration": "remote code only (no transformers class)",
    "ChatGLMModel": "remote code only (no transformers class)",
    "InternLM2ForCausalLM": "remote code only (no transformers class)",
    "Phi3SmallForCausalLM": "remote code only (no transformers class)",
    "Phi3VForCausalLM": "remote code only; multimodal",
    "Phi4MMForCausalLM": "remote code only; multimodal",
    "PhiMoEForCausalLM": "the builder forces the CUDA provider (MoE)",
    "GraniteMoeHybridForCausalLM": "a tiny config fails transformers' validation of its mamba "
                                   "layers",
    "Gemma3ForConditionalGeneration": "multimodal (text part only)",
    "Gemma4ForConditionalGeneration": "multimodal (text part only)",
    "Gemma4UnifiedForConditionalGeneration": "multimodal (text part only)",
    "Lfm2VlForConditionalGeneration": "multimodal",
    "Lfm2AudioForConditionalGeneration": "multimodal",
    "Mistral3ForConditionalGeneration": "multimodal",
    "Qwen2_5_VLForConditionalGeneration": "multimodal",
    "Qwen3VLForConditionalGeneration": "multimodal",
    "Qwen3_5ForConditionalGeneration": "multimodal",
    "Qwen3_5MoeForConditionalGeneration": "multimodal",
    "VideoChatFlashQwenForCausalLM": "remote code only; multimodal",
    "WhisperForConditionalGeneration": "speech encoder-decoder, not a decoder-only LM",
}

ARCHITECTURE_OF = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM", "phi": "PhiForCausalLM",
    "nemotron": "NemotronForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
    "granite": "GraniteForCausalLM", "olmo": "OlmoForCausalLM", "smollm3": "SmolLM3ForCausalLM",
    "ernie4_5": "Ernie4_5ForCausalLM", "hunyuan_v1_dense": "HunYuanDenseV1ForCausalLM",
    "lfm2": "Lfm2ForCausalLM", "lfm2_moe": "Lfm2MoeForCausalLM", "gpt_oss": "GptOssForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}


def genai_last_logits(folder: str, ids: list[int]) -> np.ndarray:
    """onnxruntime-genai's logits for the last prompt token."""
    import onnxruntime_genai as og

    from olivine_modelbuilder.generate import load_model

    model, _, _ = load_model(folder, threads=1)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 4)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    return np.asarray(generator.get_logits()).reshape(-1)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_family_converts_and_matches_torch(model_type: str, tokenizer: Any, build: Any,
                                           tmp_path: Path) -> None:
    import torch

    folder = tmp_path / model_type
    model = make_family(model_type, FAMILIES[model_type], tokenizer, folder)
    handle = build(folder, precision="fp32")
    assert handle.attrs_dict()["architecture"] == ARCHITECTURE_OF[model_type]
    ids = tokenizer.encode("Shall I compare thee to a summer's day?")
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0, -1].numpy()
    got = genai_last_logits(handle.path, ids)
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(scale, 1.0), rtol=0)
    assert len(genai_greedy(handle.path, ids, 4, suppress_eos=True)) == 4


@pytest.mark.parametrize("model_type", sorted(INACCURATE))
def test_inaccurate_family_converts_but_differs(model_type: str, tokenizer: Any, build: Any,
                                                tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                ) -> None:
    """OLMo gets RMSNorm for its LayerNorm: it runs, and is off. When fixed, this fails."""
    import torch

    from olivine_modelbuilder.modelinfo import KNOWN_INACCURATE

    folder = tmp_path / model_type
    model = make_family(model_type, INACCURATE[model_type], tokenizer, folder)
    handle = build(folder, precision="fp32")
    assert ARCHITECTURE_OF[model_type] in KNOWN_INACCURATE
    assert any(ARCHITECTURE_OF[model_type] in r.getMessage() for r in caplog.records)
    ids = tokenizer.encode("Shall I compare thee to a summer's day?")
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0, -1].numpy()
    got = genai_last_logits(handle.path, ids)
    assert np.abs(got - expected).max() > 1e-2 * np.abs(expected).max()
    assert len(genai_greedy(handle.path, ids, 4, suppress_eos=True)) == 4


@pytest.mark.parametrize("model_type,key", [("phi", "layer_norm_eps"), ("nemotron", "norm_eps")])
def test_layernorm_epsilon_is_taken_from_config(model_type: str, key: str, tokenizer: Any,
                                                tmp_path: Path) -> None:
    """The builder alone writes epsilon 1e-6 for these (logits off by ~1%); olivine writes 1e-5."""
    import torch
    from mb_helpers import node_attrs

    from olivine import OnnxModel
    from olivine_modelbuilder.build import build_model

    folder = tmp_path / model_type
    model = make_family(model_type, FAMILIES[model_type], tokenizer, folder)
    assert model.config.to_dict()[key] == 1e-5
    raw = build_model(str(folder), tmp_path / "raw", precision="fp32", provider="cpu", options={})
    handle = OnnxModel(path=str(raw.parent), onnx_file_name=raw.name)
    epsilons = {round(a["epsilon"], 9) for a in node_attrs(handle, "LayerNormalization")
                + node_attrs(handle, "SkipLayerNormalization")}
    assert epsilons == {1e-6}
    ids = tokenizer.encode("Shall I compare thee")
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0, -1].numpy()
    assert np.abs(genai_last_logits(str(raw.parent), ids) - expected).max() > 1e-3


@pytest.mark.parametrize("model_type", sorted(BROKEN))
def test_known_broken_family_still_fails(model_type: str, tokenizer: Any, build: Any,
                                         tmp_path: Path) -> None:
    """When the builder fixes one of these, this fails: move it to FAMILIES."""
    overrides, reason = BROKEN[model_type]
    folder = tmp_path / model_type
    make_family(model_type, overrides, tokenizer, folder)
    with pytest.raises(KeyError, match="rope_type"):
        build(folder, precision="fp32")
    assert reason


def test_every_builder_architecture_is_tested_or_explained() -> None:
    supported = builder_info.supported_architectures()
    tested = set(ARCHITECTURE_OF.values())
    missing = supported - tested - set(NOT_COVERED)
    assert not missing, f"new architectures in the builder, add them to FAMILIES: {missing}"
    assert tested <= supported
    for family in ("llama", "qwen2", "qwen3", "mistral", "phi3", "gemma"):
        assert family in FAMILIES


def test_sliding_window_model_generates_fewer_tokens_than_its_window(
        tokenizer: Any, build: Any, tmp_path: Path) -> None:
    """onnxruntime-genai refuses max_length < window; ``olivine generate`` works around it."""
    import io

    import onnxruntime_genai as og

    from olivine_modelbuilder.generate import run_generate

    folder = tmp_path / "gemma2"
    make_family("gemma2", {"sliding_window": 32}, tokenizer, folder)
    handle = build(folder, precision="fp32")
    ids = tokenizer.encode("Shall I")
    model = og.Model(handle.path)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 4)
    with pytest.raises(Exception, match="local_window_size"):
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        generator.generate_next_token()
    out = io.StringIO()
    result = run_generate(handle.path, "Shall I", max_length=len(ids) + 4, threads=1, stream=out,
                          report=io.StringIO())
    assert result.prompt_tokens + len(result.tokens) <= len(ids) + 4
    assert len(result.tokens) >= 1
