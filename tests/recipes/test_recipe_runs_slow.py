"""More Olive recipe shapes end to end (slow: each trains a tiny model once and runs every pass).

One workflow per distinct pass sequence of the CPU LLM recipes that pass the dry run (see
``CPU_LLM_SHAPES``), on a tiny trained model of the recipe's architecture: the output
generates in onnxruntime-genai and its first-token logits agree with torch within the
tolerance stated per shape (measured spread beside it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from recipes import recipe_runner as rr

from olivine_testutil import (
    sonnet_prompt_ids,
    tiny_random_llm,
    tiny_random_vl,
    trained_llm,
    write_calibration_text,
)

pytestmark = pytest.mark.slow

#: recipe -> (tiny model type, relative logit tolerance). The measured max|diff|/max|logit| of
#: the first-token logits (10 Sonnets prompts, seed 0) is in the comment of each.
CPU_LLM_SHAPES: dict[str, tuple[str, float]] = {
    # SelectiveMixedPrecision(k_quant_mixed) -> gptq -> rtn -> ModelBuilder int4: 0.0056-0.0096
    "Qwen-Qwen3-14B/cpu/Qwen-Qwen3-14B_cpu_int4.json": ("qwen3", 0.05),
    # ModelBuilder fp32 -> GraphSurgeries(TieWordEmbeddings, external data options): < 1e-5
    "tencent-HY-MT1.5-1.8B/cpu/tencent-HY-MT1.5-1.8B_cpu_fp32.json": ("hunyuan_v1_dense", 1e-3),
    # gptq(4 bit, group 32) -> rtn(4 bit, LM head and embeddings) -> ModelBuilder int4 ->
    # GraphSurgeries: 0.035-0.036
    "tencent-HY-MT1.5-1.8B/cpu/tencent-HY-MT1.5-1.8B_cpu_int4.json": ("hunyuan_v1_dense", 0.1),
    # (CUDA target, built on the CPU, run here on the CPU) ModelBuilder fp16 ->
    # OnnxHqqQuantization: 0.032-0.034
    "meta-llama-Llama-3.2-1B-Instruct/olive/hqq.json": ("llama", 0.1),
    # (CUDA target) ModelBuilder fp16 -> OnnxBlockWiseRtnQuantization: 0.044-0.048
    "meta-llama-Llama-3.2-1B-Instruct/olive/rtn.json": ("llama", 0.1),
    # (NvTensorRTRTX target, built on the CPU, run here on the CPU) ModelBuilder int4 (symmetric,
    # block 32) -> MatMulNBitsToQDQ (DequantizeLinear + MatMul): 0.045-0.057
    "Qwen-Qwen2.5-Coder-14B-Instruct/NvTensorRtRtx/Qwen2.5-Coder-14B-Instruct_model_builder_int4"
    ".json": ("qwen2", 0.15),
}
#: Tiny-model changes where the recipe's model differs from RECIPE_LLM's shape.
MODEL_CHANGES: dict[str, dict[str, object]] = {
    # Qwen2.5-Coder-14B has untied embeddings; with tied ones the builder's QDQ int4 path fails
    # in onnxruntime's quantizer ("Gather only supports QOperator format currently")
    "Qwen-Qwen2.5-Coder-14B-Instruct/NvTensorRtRtx/Qwen2.5-Coder-14B-Instruct_model_builder_int4"
    ".json": {"tie_word_embeddings": False},
}

QWEN3_VL_TEXT = "Qwen-Qwen3-VL-2B-Instruct/builtin/cpu_and_mobile/text.json"

#: CPU LLM recipes that cannot run here, and why (the test below checks the first one's error).
UNSUPPORTED: dict[str, str] = {
    "allenai-Olmo-3-7B-Instruct/cpu/allenai-Olmo-3-7B-Instruct_cpu_fp32.json":
        "Olmo3ForCausalLM is not in onnxruntime-genai 0.18's model builder (upstream)",
    "allenai-Olmo-3-7B-Instruct/cpu/allenai-Olmo-3-7B-Instruct_cpu_int4.json":
        "as the fp32 one; SelectiveMixedPrecision, gptq and rtn run, then ModelBuilder fails "
        "(exit 1) as the builder lacks Olmo3ForCausalLM",
    "google-translategemma-4b-it/builtin/cpu_and_mobile/text.json":
        "Gemma3ForConditionalGeneration: the builder (0.18) fails with KeyError 'rope_type' on a "
        "transformers-5 Gemma 3 config (as the model-builder tests' BROKEN gemma3_text)",
    "google-translategemma-4b-it/builtin/cpu_and_mobile_fp32/text.json": "as the int4 one",
}


@pytest.mark.parametrize("recipe", sorted(CPU_LLM_SHAPES))
def test_cpu_llm_recipe_generates_and_matches_torch(recipe: str, tmp_path: Path,
                                                    cache_root: Path) -> None:
    """The recipe's output generates greedily and its logits agree with torch's."""
    rr.recipes_root()
    model_type, tolerance = CPU_LLM_SHAPES[recipe]
    model = trained_llm(cache_root, model_type, **MODEL_CHANGES.get(recipe, {}))
    prepared = rr.prepare(recipe, tmp_path, model,
                          calibration=write_calibration_text(tmp_path / "calibration.jsonl"))
    out = rr.run_ok(prepared, timeout=900)
    folder = rr.find_one(out, "genai_config.json").parent
    errors = []
    for line in (0, 40, 80):
        ids = sonnet_prompt_ids(model, line)
        got, want = rr.genai_first_logits(folder, ids), rr.torch_first_logits(model, ids)
        errors.append(rr.relative_error(got, want))
        assert int(np.argmax(got)) == int(np.argmax(want)), (line, errors)
    print(f"{recipe}: relative logit errors {[round(e, 5) for e in errors]}")
    assert max(errors) < tolerance, errors
    ids = sonnet_prompt_ids(model, 0)
    tokens = rr.genai_greedy(folder, ids, 4)
    assert len(tokens) == 4 and tokens == rr.genai_greedy(folder, ids, 4)
    assert json.loads((out / "run.json").read_text())


def test_olmo3_recipe_fails_before_running_with_the_builder_architectures(tmp_path: Path) -> None:
    """Olmo 3 (model_type olmo3) is not in the installed builder: exit 2 before any pass runs,
    naming the architecture and the ones it converts (no traceback)."""
    rr.recipes_root()
    recipe = "allenai-Olmo-3-7B-Instruct/cpu/allenai-Olmo-3-7B-Instruct_cpu_fp32.json"
    prepared = rr.prepare(recipe, tmp_path, tiny_random_llm(tmp_path / "olmo3", "olmo3"))
    result = rr.run(prepared)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Olmo3ForCausalLM" in result.stderr and "Qwen3ForCausalLM" in result.stderr
    assert "Traceback" not in result.stderr
    assert not prepared.output_dir.exists()


#: Vision-language recipes' text parts: recipe -> (tiny model type, relative logit tolerance).
VL_TEXT_SHAPES: dict[str, tuple[str, float]] = {
    # ModelBuilder int4 (extra_options filename text.onnx): 0.11-0.16
    QWEN3_VL_TEXT: ("qwen3_vl", 0.35),
    # ModelBuilder int4 (rtn, block 32, accuracy level 4, prune_lm_head) -> GraphSurgeries
    # (TieWordEmbeddings finds no LM head to tie: pruned): 0.11-0.15
    "Qwen-Qwen3.5-4B/builtin/cpu_and_mobile/text.json": ("qwen3_5", 0.35),
    # Fara-7B (Qwen2.5-VL): ModelBuilder int4 (filename text.onnx): 0.18-0.23
    "microsoft-Fara-7B/builtin/cpu_and_mobile/text.json": ("qwen2_5_vl", 0.45),
}


@pytest.mark.parametrize("recipe", sorted(VL_TEXT_SHAPES))
def test_vl_text_recipe_generates_and_matches_torch(recipe: str, tmp_path: Path) -> None:
    """A vision-language recipe's text part (output_dir ending in text.onnx) from a tiny random
    model of the recipe's architecture: it generates in onnxruntime-genai and its first-token
    logits agree with the torch model's text-only forward. The tolerance is for int4 of
    untrained Gaussian weights (seed 0 measured in VL_TEXT_SHAPES), the argmax kept."""
    import torch
    from transformers import AutoModelForImageTextToText

    rr.recipes_root()
    model_type, tolerance = VL_TEXT_SHAPES[recipe]
    model = tiny_random_vl(tmp_path / model_type, model_type)
    prepared = rr.prepare(recipe, tmp_path, model)
    out = rr.run_ok(prepared)
    assert out.name == "text.onnx" and (out / "text.onnx").is_file()
    torch_model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32).eval()
    errors = []
    for line in (0, 40, 80):
        ids = sonnet_prompt_ids(model, line)
        with torch.no_grad():
            want = torch_model(input_ids=torch.tensor([ids])).logits[0, -1].double().numpy()
        got = rr.genai_first_logits(out, ids)
        errors.append(rr.relative_error(got, want))
        assert int(np.argmax(got)) == int(np.argmax(want))
    assert max(errors) < tolerance, errors
    assert len(rr.genai_greedy(out, sonnet_prompt_ids(model, 0), 4)) == 4


#: intel-bert-base-uncased-mrpc recipes whose evaluation provider is missing here:
#: recipe -> (provider, passes, relative tolerance of the last pass's model vs torch).
BERT_ELSEWHERE: dict[str, tuple[str, tuple[str, ...], float]] = {
    # fp32 throughout: max|diff| / max|logit| measured 4.5e-7 (seed 0)
    "intel-bert-base-uncased-mrpc/aitk/bert_qnn_gpu.json": (
        "QNNExecutionProvider", ("OnnxConversion", "OnnxPeepholeOptimizer", "DynamicToFixedShape",
                                 "GraphSurgeries"), 1e-4),
    "intel-bert-base-uncased-mrpc/QNN/config_gpu_fp32.json": (
        "QNNExecutionProvider", ("OnnxConversion", "OnnxPeepholeOptimizer", "DynamicToFixedShape",
                                 "GraphSurgeries"), 1e-4),
    # fused for the GPU in float16 (MultiHeadAttention, packed QKV options of other model types
    # accepted as Olive does), run here on the CPU: measured 5.2e-4
    "intel-bert-base-uncased-mrpc/aitk/bert_dml.json": (
        "DmlExecutionProvider", ("OnnxConversion", "OrtTransformersOptimization"), 5e-3),
    "intel-bert-base-uncased-mrpc/aitk/bert_migraphx.json": (
        "MIGraphXExecutionProvider", ("OnnxConversion", "OrtTransformersOptimization"), 5e-3),
}


@pytest.mark.parametrize("recipe", sorted(BERT_ELSEWHERE))
def test_bert_recipe_for_another_provider_runs_its_passes_on_the_cpu(recipe: str,
                                                                     tmp_path: Path) -> None:
    """The passes run here, then evaluation on the recipe's provider stops the run (exit 2,
    the provider named); the model the passes made agrees with torch on the CPU."""
    from recipes.test_recipe_runs import run_bert_recipe_without_its_provider

    provider, passes, tolerance = BERT_ELSEWHERE[recipe]
    error, scale, agree = run_bert_recipe_without_its_provider(recipe, tmp_path, provider, passes)
    assert error < tolerance * scale, (error, scale)
    assert agree == 1.0
