"""Fold an adapter into its base model's weights and save the result.

LoRA: W + B @ A * scaling; DoRA rescales each output feature to its trained magnitude; LoHa
and LoKr add their Hadamard / Kronecker products. peft computes each.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from olivine import AdapterModel, HfModel, ModelHandle, UsageError
from olivine_lora.adapters import check_adapter_fits, find_adapter_dir, read_adapter

#: Files besides the weights that make a model folder usable (copied when present).
EXTRA_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
               "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
               "generation_config.json")


def base_and_adapter(model: ModelHandle) -> tuple[HfModel, Path]:
    """The base model and adapter folder of an adapter handle or an HfModel with adapter_path."""
    if isinstance(model, AdapterModel):
        if not isinstance(model.base, HfModel):
            raise UsageError("the adapter's base model is not a Hugging Face model; LoRA adapters "
                             "are merged into Hugging Face models")
        return model.base, find_adapter_dir(model.path)
    if isinstance(model, HfModel):
        if not model.adapter_path:
            raise UsageError(f"{model.path} has no adapter to merge; set input_model.adapter_path "
                             "or put a LoRA step before this one")
        return model, find_adapter_dir(model.adapter_path)
    raise UsageError(f"cannot merge an adapter into a {model.kind} model")


def merged_model(model: ModelHandle, dtype_name: str = "auto", progress: Any = None) -> Any:
    """The base model of ``model`` with its adapter folded in, as a transformers model in memory.

    ``model``: an adapter handle (the output of LoRA, QLoRA, DoRA, LoHa, LoKr) or an HfModel with
    ``adapter_path``. Any peft adapter peft can merge works (LoRA, DoRA, LoHa, LoKr); one made
    for another base model is a :class:`UsageError` naming the layers that do not fit. For
    exporters that take adapter models: merging first is what Olive's conversion computes.
    """
    import torch
    from peft import PeftModel

    from olivine_lora.train import linear_layers, load_model

    base, adapter_dir = base_and_adapter(model)
    adapter = read_adapter(adapter_dir)
    report = progress or (lambda *a: None)
    report(0, 3, f"loading {Path(base.path).name}")
    dtype = "auto" if dtype_name == "auto" else getattr(torch, dtype_name)
    plain = HfModel(path=base.path, task=base.task, load_kwargs=base.load_kwargs)
    net = load_model(plain, dtype)
    check_adapter_fits(adapter, linear_layers(net), base.path)
    report(1, 3, "merging the adapter")
    try:
        merged = PeftModel.from_pretrained(net, str(adapter_dir)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot apply adapter {adapter_dir} to {base.path}: {exc}") from None
    merged.config.use_cache = True
    return merged


def merge_adapter(model: ModelHandle, dtype_name: str, output: Path,
                  progress: Any = None) -> HfModel:
    """Merge the adapter of ``model`` into its base, save into ``output``, return the handle."""
    base, adapter_dir = base_and_adapter(model)
    report = progress or (lambda *a: None)
    merged = merged_model(model, dtype_name, report)
    plain = HfModel(path=base.path, task=base.task, load_kwargs=base.load_kwargs)
    report(2, 3, "saving the merged model")
    output.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(output))
    source = Path(base.path)
    if source.is_dir():
        for name in EXTRA_FILES:
            if (source / name).is_file() and not (output / name).exists():
                shutil.copy2(source / name, output / name)
    else:  # a hub id: save its tokenizer
        from olivine_lora.train import load_tokenizer

        load_tokenizer(plain).save_pretrained(str(output))
    report(3, 3, "done")
    attributes = {"merged_adapter": str(adapter_dir), "base_model": base.path}
    return HfModel(path=str(output), task=base.task, load_kwargs=base.load_kwargs,
                   attributes=attributes)
