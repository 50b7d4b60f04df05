"""What the installed onnxruntime-genai model builder supports, read from its source.

The builder silently ignores option names it does not know, and its list of
architectures lives in an ``if/elif`` chain. Both are read here from the installed
source text (never imported: importing the builder pulls in torch and puts its
folder on ``sys.path``), so olivine's checks follow whichever version is installed.
When the source cannot be found, the lists recorded from onnxruntime-genai 0.18
are used.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: Distributions that ship the ``onnxruntime_genai`` package (CPU, CUDA, DirectML builds).
GENAI_DISTRIBUTIONS = ("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")

#: Execution providers the builder's ``-e`` flag accepts.
BUILDER_PROVIDERS = ("cpu", "cuda", "dml", "webgpu", "NvTensorRtRtx")

#: Base weight-quantization methods (``algo_config``) and the compound aliases of 0.18.
ALGORITHMS = ("default", "rtn", "k_quant", "rtn_last", "k_quant_last", "k_quant_mixed",
              "k_quant_linear")

#: Option names of onnxruntime-genai 0.18 (used when the source cannot be read).
FALLBACK_OPTIONS = frozenset((
    "accuracy_level", "adapter_path", "algo_config", "aux_hidden_state_layers", "block_size",
    "config_only", "dflash2_fuse_gate_up", "dflash2_fuse_qkv", "dflash2_num_draft_tokens",
    "dflash2_path", "dflash2_precision", "disable_qkv_fusion", "dspark_num_draft_tokens",
    "dspark_path", "dspark_top_k", "enable_cuda_fpa_intb_gemm", "enable_cuda_graph",
    "enable_dml_graph", "enable_webgpu_graph", "exclude_embeds", "exclude_lm_head", "exclude_mtp",
    "filename", "fuse_mlp_gate_up", "fuse_qk_norm_gqa", "fuse_qkv", "gpu_utilization_factor",
    "hf_remote", "hf_token", "include_hidden_states", "is_symmetric", "kv_cache_quant_scheme",
    "kv_cache_rotation", "kv_cache_scale_file", "linear_attn_op", "matmul_mixed_precision",
    "matmulnbits_weights_prepacked", "max_batch_size", "max_draft_tokens", "max_scheduled_tokens",
    "moe_quant_type", "mtp_quant_config", "nodes_to_exclude", "num_blocks", "num_hidden_layers",
    "op_types_to_quantize", "paged_block_size", "paged_chunk_size", "prune_lm_head",
    "qmoe_block_size", "qmoe_weights_prepacked", "shared_embeddings", "state_update_capacity",
    "state_window", "use_8bits_moe", "use_cuda_bf16", "use_device_allocator_for_initializers",
    "use_paged_attention", "use_qdq", "use_webgpu_fp32", "windowed_kv_cache",
))

#: Architectures (``config.json`` ``architectures[0]``) of onnxruntime-genai 0.18.
FALLBACK_ARCHITECTURES = frozenset((
    "ChatGLMForConditionalGeneration", "ChatGLMModel", "Ernie4_5ForCausalLM", "Gemma2ForCausalLM",
    "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Gemma4ForConditionalGeneration",
    "Gemma4UnifiedForConditionalGeneration", "GemmaForCausalLM", "GptOssForCausalLM",
    "GraniteForCausalLM", "GraniteMoeHybridForCausalLM", "HunYuanDenseV1ForCausalLM",
    "InternLM2ForCausalLM", "Lfm2AudioForConditionalGeneration", "Lfm2ForCausalLM",
    "Lfm2MoeForCausalLM", "Lfm2VlForConditionalGeneration", "LlamaForCausalLM",
    "Mistral3ForConditionalGeneration", "MistralForCausalLM", "NemotronForCausalLM",
    "OlmoForCausalLM", "Phi3ForCausalLM", "Phi3SmallForCausalLM", "Phi3VForCausalLM",
    "Phi4MMForCausalLM", "PhiForCausalLM", "PhiMoEForCausalLM", "Qwen2ForCausalLM",
    "Qwen2_5_VLForConditionalGeneration", "Qwen3ForCausalLM", "Qwen3VLForConditionalGeneration",
    "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration", "SmolLM3ForCausalLM",
    "VideoChatFlashQwenForCausalLM", "WhisperForConditionalGeneration",
))

_ACCESS = re.compile(
    r"""extra_options(?:\.get|\.pop|\.setdefault)?\(?\[?\s*["']([A-Za-z0-9_]+)["']"""
    r"""|["']([A-Za-z0-9_]+)["']\s+(?:not\s+)?in\s+(?:self\.)?extra_options""")
_HELP_LINE = re.compile(r"^\s{16}([a-z][a-z0-9_]*) = ", re.MULTILINE)
_ARCH = re.compile(r"""config\.architectures\[0\]\s*==\s*["'](\w+)["']""")


def genai_version() -> str:
    """The installed onnxruntime-genai version (``"not installed"`` when absent)."""
    for dist in GENAI_DISTRIBUTIONS:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "not installed"


@functools.lru_cache(maxsize=1)
def builder_dir() -> Path | None:
    """The folder holding the installed builder's source (``onnxruntime_genai/models``)."""
    try:
        spec = importlib.util.find_spec("onnxruntime_genai")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if (folder / "builder.py").is_file() else None


@functools.lru_cache(maxsize=1)
def known_options() -> frozenset[str]:
    """Every ``extra_options`` name the installed builder reads or documents.

    Names are collected from the places the builder's code reads ``extra_options``
    and from the ``--extra_options`` help text; private names (``_quant_config``)
    and ``hf_details`` (set by the builder itself) are left out.
    """
    folder = builder_dir()
    if folder is None:
        return FALLBACK_OPTIONS
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for a, b in _ACCESS.findall(text):
            found.add(a or b)
    try:
        documented = set(_HELP_LINE.findall((folder / "builder.py").read_text(encoding="utf-8")))
    except OSError:
        documented = set()
    # help-text words like "value = ..." are not options: keep documented names with an underscore
    found |= {n for n in documented if "_" in n or n in found}
    names = {n for n in found if not n.startswith("_") and n != "hf_details"}
    return frozenset(names) if names else FALLBACK_OPTIONS


@functools.lru_cache(maxsize=1)
def supported_architectures() -> frozenset[str]:
    """The ``architectures[0]`` values the installed builder converts."""
    folder = builder_dir()
    if folder is None:
        return FALLBACK_ARCHITECTURES
    try:
        names = set(_ARCH.findall((folder / "builder.py").read_text(encoding="utf-8")))
    except OSError:
        return FALLBACK_ARCHITECTURES
    return frozenset(names) if names else FALLBACK_ARCHITECTURES


#: Precision/provider pairs the builder's help lists as valid, plus WebGPU fp16/fp32, for which
#: it has attention kernels (``is_gqa_supported``). Others build but fail at run time: fp16 on
#: CPU stops in a Cast kernel at the first decode step, bf16 on CPU at session creation (measured).
VALID_COMBINATIONS = {
    "cpu": ("fp32", "int8", "int4"),
    "cuda": ("fp32", "fp16", "bf16", "int8", "int4"),
    "dml": ("fp16", "int4"),
    "webgpu": ("fp32", "fp16", "int8", "int4"),
    "NvTensorRtRtx": ("fp16", "bf16", "int4"),
}
