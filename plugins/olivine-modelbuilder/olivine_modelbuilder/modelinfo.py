"""Read a Hugging Face model folder and refuse, with a clear message, what cannot be built.

Only ``json`` is used here, so the checks run in a blink before torch is imported:
the CLI runs them before starting the engine and the pass runs them before it
loads the builder.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import attrs

from olivine import UsageError
from olivine_modelbuilder import builder_info

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
#: Any of these lets ``AutoTokenizer`` load (and the builder copy) a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt",
                   "tokenizer.tiktoken")
_GENERATIVE = re.compile(r"(ForCausalLM|LMHeadModel|ForConditionalGeneration)$")
#: Architectures the builder converts with different math than transformers (measured).
KNOWN_INACCURATE = {
    "OlmoForCausalLM": "the builder uses RMSNorm (SimplifiedLayerNormalization) where OLMo uses "
                       "a LayerNorm without weights: logits differ from transformers' by about "
                       "10% of their range on a tiny random model",
}
_ODD_BLOCK_ALGOS = ("k_quant", "k_quant_last", "k_quant_mixed", "k_quant_linear")


@attrs.frozen
class ModelInfo:
    """What olivine knows about an input model before building it."""

    path: str
    local: bool
    architecture: str | None = None
    model_type: str | None = None
    config: dict[str, Any] = attrs.field(factory=dict)

    def text_config(self) -> dict[str, Any]:
        """The decoder's settings (``text_config`` merged over the top level for multimodal models)."""
        merged = dict(self.config)
        nested = self.config.get("text_config")
        if isinstance(nested, dict):
            merged.update(nested)
        return merged

    def head_dim(self) -> int | None:
        """The attention head size, or ``None`` when config.json does not tell."""
        cfg = self.text_config()
        if isinstance(cfg.get("head_dim"), int):
            return int(cfg["head_dim"])
        hidden, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
        if isinstance(hidden, int) and isinstance(heads, int) and heads:
            return hidden // heads
        return None

    def rotary_dim(self) -> int | None:
        """The number of head dimensions that rotary embeddings rotate."""
        head = self.head_dim()
        if head is None:
            return None
        cfg = self.text_config()
        factor = cfg.get("partial_rotary_factor")
        for key in ("rope_parameters", "rope_scaling"):
            section = cfg.get(key)
            if factor is None and isinstance(section, dict):
                factor = section.get("partial_rotary_factor")
        if isinstance(cfg.get("rotary_dim"), int):
            return int(cfg["rotary_dim"])
        return int(head * float(factor if factor is not None else 1.0))

    def norm_epsilon(self) -> float | None:
        """The LayerNorm epsilon of models that do not name it ``rms_norm_eps`` (else ``None``)."""
        cfg = self.text_config()
        if "rms_norm_eps" in cfg:
            return None
        for key in ("layer_norm_eps", "norm_eps", "layer_norm_epsilon", "layernorm_epsilon"):
            if isinstance(cfg.get(key), int | float) and not isinstance(cfg.get(key), bool):
                return float(cfg[key])
        return None

    def matmul_input_sizes(self) -> dict[str, int]:
        """The K (input) dimension of the main projection MatMuls, by name."""
        cfg = self.text_config()
        sizes = {}
        if isinstance(cfg.get("hidden_size"), int):
            sizes["hidden_size"] = cfg["hidden_size"]
        head, heads = self.head_dim(), cfg.get("num_attention_heads")
        if head and isinstance(heads, int):
            sizes["num_attention_heads * head_dim"] = heads * head
        if isinstance(cfg.get("intermediate_size"), int):
            sizes["intermediate_size"] = cfg["intermediate_size"]
        return sizes


def read_model(path: str) -> ModelInfo:
    """Check that ``path`` is a Hugging Face causal LM folder the builder converts (or a hub id)."""
    folder = Path(path).expanduser()
    if folder.is_file():
        raise UsageError(f"model path {path!r} is a file; give a Hugging Face model folder (with "
                         "config.json, weights and tokenizer) or a hub id such as org/name")
    if not folder.is_dir():
        if HUB_ID.match(path) and not path.startswith((".", "/", "~")):
            return ModelInfo(path=path, local=False)
        raise UsageError(f"model path {path!r}: no such folder (and it is not a Hugging Face hub "
                         "id of the form org/name)")
    config_file = folder / "config.json"
    if not config_file.is_file():
        onnx = " It holds .onnx files: ModelBuilder converts Hugging Face models, not ONNX ones." \
            if any(folder.glob("*.onnx")) else ""
        raise UsageError(f"model folder {str(folder)!r} has no config.json, so it is not a Hugging "
                         f"Face model folder (save one with model.save_pretrained(folder)).{onnx}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{config_file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise UsageError(f"{config_file}: expected a JSON object")
    archs = config.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    info = ModelInfo(path=str(folder.resolve()), local=True, architecture=arch,
                     model_type=config.get("model_type"), config=config)
    _check_architecture(info, config_file)
    if not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
        raise UsageError(f"model folder {str(folder)!r} has no weights (model.safetensors or "
                         "pytorch_model.bin); save them with model.save_pretrained(folder)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UsageError(
            f"model folder {str(folder)!r} has no tokenizer files (expected tokenizer.json, or "
            "tokenizer.model / vocab.json with tokenizer_config.json); onnxruntime-genai needs the "
            "tokenizer beside the model: save it with tokenizer.save_pretrained(folder)")
    return info


def supported_list() -> str:
    """The builder's architectures, comma-separated."""
    return ", ".join(sorted(builder_info.supported_architectures()))


def _check_architecture(info: ModelInfo, config_file: Path) -> None:
    arch = info.architecture
    supported = builder_info.supported_architectures()
    if arch in supported:
        return
    kind = f" (model_type {info.model_type!r})" if info.model_type else ""
    if arch is None:
        raise UsageError(f"{config_file} names no architectures{kind}, so the model builder cannot "
                         f"tell how to convert it; it converts: {supported_list()}")
    if not _GENERATIVE.search(arch):
        raise UsageError(
            f"{info.path!r} is a {arch}{kind}, not a causal language model: ModelBuilder converts "
            f"text-generation models (architectures ending in ForCausalLM), such as "
            f"LlamaForCausalLM, Qwen2ForCausalLM and Phi3ForCausalLM")
    raise UsageError(
        f"architecture {arch}{kind} is not supported by the model builder of onnxruntime-genai "
        f"{builder_info.genai_version()}; it converts: {supported_list()}")


def check_buildable(info: ModelInfo, *, precision: str, provider: str, block_size: int,
                    algo: str, symmetric: bool) -> None:
    """Refuse settings that the builder accepts but that fail for this model's shapes."""
    if not info.local:
        return
    head, rotary = info.head_dim(), info.rotary_dim()
    if provider == "cpu" and head is not None and head % 16:
        raise UsageError(
            f"{info.architecture} has head size {head}; ONNX Runtime's CPU GroupQueryAttention "
            "needs a multiple of 16, so this model cannot run on the cpu provider")
    if provider == "cpu" and rotary is not None and rotary % 16:
        raise UsageError(
            f"{info.architecture} with head size {head} rotates {rotary} dimensions; ONNX "
            "Runtime's CPU GroupQueryAttention needs a multiple of 16 (its cos/sin cache width, "
            f"{rotary // 2}, must be a multiple of 8), so this model cannot run on the cpu provider")
    uses_zero_points = algo in _ODD_BLOCK_ALGOS or (algo.startswith("rtn") and not symmetric)
    if precision != "int4" or not uses_zero_points:
        return
    sizes = info.matmul_input_sizes()
    odd = {name: k for name, k in sizes.items() if math.ceil(k / block_size) % 2}
    if not odd:
        return
    fits = [b for b in (16, 32, 64, 128, 256)
            if all(math.ceil(k / b) % 2 == 0 for k in sizes.values())]
    name, k = next(iter(odd.items()))
    hint = f"use int4_block_size {' or '.join(map(str, fits))}, or " if fits else "use "
    raise UsageError(
        f"int4_algo {algo}{'' if symmetric else ' (asymmetric)'} with int4_block_size "
        f"{block_size}: {name} {k} spans {math.ceil(k / block_size)} blocks, an odd number, and "
        f"ONNX Runtime's {'k_quant' if algo.startswith('k_quant') else 'rtn'} quantizer then fails "
        "packing 4-bit zero points; "
        f"{hint}int4_algo default")
