"""The files ``OnnxConversion`` writes beside an exported transformers model.

Always: the tokenizer and ``config.json`` of a local checkpoint are copied (later passes and
evaluators tokenize with them). With ``save_metadata_for_token_generation`` (Olive's option),
the three kinds of files a generation runtime reads are guaranteed: ``config.json``,
``generation_config.json`` (when the model has one) and the tokenizer files (with the pad
token set to the end-of-sequence token when the tokenizer has none, as Olive does); their
names (in the model folder) are listed in the model attribute ``additional_files``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from olivine import HfModel, UsageError
from olivine_transformers.conversion import ConversionConfig
from olivine_transformers.onnx_io import copy_hf_sidecar_files

log = logging.getLogger("olivine.pass.OnnxConversion")

#: Load options that belong to the weights, not to configs or tokenizers.
WEIGHT_OPTIONS = ("torch_dtype", "dtype", "device_map", "max_memory", "quantization_config",
                  "attn_implementation")


def _hub_options(model: HfModel) -> dict[str, Any]:
    return {k: v for k, v in model.load_options().items()
            if k in ("trust_remote_code", "revision", "token", "cache_dir")}


def write_sidecars(model: HfModel, torch_model: torch.nn.Module, dest: Path,
                   config: ConversionConfig) -> None:
    """Copy (or, for a hub id, save) the tokenizer and config beside the ONNX model; with
    ``save_metadata_for_token_generation``, also the generation config and a tokenizer that
    a runtime can pad with."""
    copied = copy_hf_sidecar_files(Path(model.path), dest) if model.is_local() else []
    metadata = config.save_metadata_for_token_generation
    if "config.json" not in copied:
        hf_config: Any = torch_model.config
        if hasattr(hf_config, "quantization_config"):
            del hf_config.quantization_config
        hf_config.save_pretrained(str(dest))
    if metadata and not (dest / "generation_config.json").exists():
        _save_generation_config(model, torch_model, dest)
    if "tokenizer_config.json" in copied and not metadata:
        return
    if "tokenizer_config.json" in copied and _has_pad_token(dest):
        return
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.path, **_hub_options(model))
    except (OSError, ValueError) as exc:
        if metadata:
            raise UsageError(f"save_metadata_for_token_generation: no tokenizer can be loaded "
                             f"from {model.path!r}: {exc}") from exc
        log.warning("no tokenizer saved beside the ONNX model: %s", exc)
        return
    if metadata and getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(str(dest))


def _has_pad_token(dest: Path) -> bool:
    import json

    try:
        cfg = json.loads((dest / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return cfg.get("pad_token") is not None


def _save_generation_config(model: HfModel, torch_model: torch.nn.Module, dest: Path) -> None:
    """The checkpoint's ``generation_config.json``; else the loaded model's, if it generates."""
    from transformers import GenerationConfig

    generation: Any
    try:
        generation = GenerationConfig.from_pretrained(model.path, **_hub_options(model))
    except OSError:
        can_generate = getattr(torch_model, "can_generate", None)
        generation = getattr(torch_model, "generation_config", None) \
            if callable(can_generate) and can_generate() else None
    if generation is not None:
        generation.save_pretrained(str(dest))


#: Files of a generation runtime's metadata (tokenizer files by these names or suffixes).
METADATA_FILES = ("config.json", "generation_config.json", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                  "merges.txt", "tokenizer.model", "spiece.model", "added_tokens.json",
                  "chat_template.jinja")


def hf_attributes(model: HfModel, torch_model: torch.nn.Module, dest: Path,
                  config: ConversionConfig) -> dict[str, Any]:
    """Handle attributes of a converted transformers model (Olive's ``hf_task``, ``type`` and,
    with ``save_metadata_for_token_generation``, ``additional_files``)."""
    cfg: Any = torch_model.config
    out: dict[str, Any] = {
        "hf_model_path": model.path, "task": model.task, "hf_task": model.task,
        "model_type": getattr(cfg, "model_type", None), "type": getattr(cfg, "model_type", None),
        "num_attention_heads": getattr(cfg, "num_attention_heads", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
    }
    if config.torch_dtype:
        out["torch_dtype"] = config.torch_dtype.removeprefix("torch.")
    if model.adapter_path:
        out["adapter_merged"] = config.merge_adapter_weights
    if config.save_metadata_for_token_generation:
        previous = list(model.attrs_dict().get("additional_files") or [])
        # names in the model's folder: the step's folder moves into the cache after the run
        files = [n for n in METADATA_FILES if (dest / n).is_file()]
        out["additional_files"] = previous + [f for f in files if f not in previous]
    return out
