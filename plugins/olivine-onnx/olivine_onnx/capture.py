"""``CaptureSplitInfo``: which split each module of a Hugging Face model goes to.

The model is built on torch's ``meta`` device from its config (no weights are read). Needs
torch and transformers (``pip install olivine-onnx[split]``).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import attrs

from olivine import HfModel, ModelHandle, PassContext, UsageError

log = logging.getLogger("olivine.pass.capture_split_info")

_TASK_CLASSES = {"text-generation": "AutoModelForCausalLM",
                 "text-classification": "AutoModelForSequenceClassification",
                 "token-classification": "AutoModelForTokenClassification",
                 "question-answering": "AutoModelForQuestionAnswering",
                 "fill-mask": "AutoModelForMaskedLM", "feature-extraction": "AutoModel"}
_LAYER_NAMES = ("layers", "h", "layer", "blocks", "block")


def _meta_model(handle: HfModel) -> Any:
    try:
        import torch
        import transformers
    except ImportError:
        raise UsageError("CaptureSplitInfo needs torch and transformers: "
                         "pip install olivine-onnx[split]") from None
    options = handle.load_options()
    try:
        config = transformers.AutoConfig.from_pretrained(
            handle.path, trust_remote_code=bool(options.get("trust_remote_code")))
    except OSError as exc:
        raise UsageError(f"cannot read the transformers config of {handle.path!r}: {exc}") from exc
    cls = getattr(transformers, _TASK_CLASSES.get(handle.task, "AutoModel"))
    with torch.device("meta"):
        return cls.from_config(config, trust_remote_code=bool(options.get("trust_remote_code")))


def _layers_block(model: Any) -> str:
    """The dotted name of the transformer layers (the longest ModuleList named like layers)."""
    import torch

    lists = [(name, m) for name, m in model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in _LAYER_NAMES]
    if not lists:
        raise UsageError("CaptureSplitInfo: cannot find the model's transformer layers; set "
                         "block_to_split")
    return max(lists, key=lambda item: len(item[1]))[0]


def _module(model: Any, name: str) -> Any:
    if name == "":
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise UsageError(f"block_to_split: the model has no module {name!r}") from None


def _embed_names(model: Any) -> list[str]:
    embeds = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    names = [n for n, m in model.named_modules() if m is embeds and embeds is not None]
    return names or ["model.embed_tokens"]


def _start(model: Any, unique: bool) -> tuple[dict[str, int], int, set[str]]:
    """Assignments with the embeddings in split 0 when ``unique``; the next split; excluded."""
    if not unique:
        return {}, 0, set()
    names = _embed_names(model)
    return {n: 0 for n in names}, 1, {*names, "lm_head"}


def by_num_splits(model: Any, num_splits: int, block_to_split: str | list[str] | None,
                  unique: bool) -> dict[str, int]:
    """The children of the block(s), in order, cut into ``num_splits`` near-equal runs."""
    import numpy as np

    blocks = [_layers_block(model)] if block_to_split is None else (
        block_to_split if isinstance(block_to_split, list) else [block_to_split])
    members = [f"{b}.{child}".lstrip(".") for b in blocks
               for child, _ in _module(model, b).named_children()]
    if len(members) < num_splits:
        raise UsageError(f"num_splits: {num_splits} splits of {len(members)} blocks "
                         f"({', '.join(blocks)})")
    assignments, used, excluded = _start(model, unique)
    for index, part in enumerate(np.array_split(np.array(members, dtype=object), num_splits)):
        for name in part:
            if name not in excluded:
                assignments[str(name)] = index + used
    if unique:
        assignments["lm_head"] = num_splits + used
    return assignments


def _whole(text: str) -> int:
    """A csv count as an int; Olive's generate-cost-model writes 4-bit bytes as ``12.0`` or ``12.5``
    (rounded up, as olivine's writes them)."""
    import math

    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return math.ceil(value)


def by_cost_model(model: Any, cost_model: Path, memory: int, unique: bool) -> dict[str, int]:
    """Leaf modules in order; a new split when a module switches between memory- and
    compute-bound, or the split would exceed ``memory`` bytes."""
    costs: dict[str, tuple[int, int, int]] = {}
    try:
        with cost_model.open(newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                try:
                    costs[row["module"]] = (_whole(row["num_params"]), _whole(row["num_bytes"]),
                                            _whole(row["num_flops"]))
                except (KeyError, TypeError, ValueError):
                    raise UsageError(f"cost_model: row {i + 2} of {cost_model} is not "
                                     "module,num_params,num_bytes,num_flops") from None
    except OSError as exc:
        raise UsageError(f"cost_model: cannot read {cost_model}: {exc}") from None
    assignments, split, excluded = _start(model, unique)
    size, count, memory_bound = 0, 0, False
    for name, _ in model.named_modules():
        if name not in costs or name in excluded or name.lower().endswith("dropout"):
            continue
        params, nbytes, flops = costs[name]
        bound = params > flops > 0
        if count and (bound != memory_bound or size + nbytes > memory):
            split += 1
            size = 0
        assignments[name] = split
        size += nbytes
        count += 1
        memory_bound = bound
    if unique:
        split += 1
        assignments["lm_head"] = split
    log.info("cost model: %d splits", split + 1)
    return assignments


def capture_split_info(model: ModelHandle, config: Any, context: PassContext) -> HfModel:
    """The pass: the input handle with ``split_assignments`` among its attributes."""
    if not isinstance(model, HfModel):
        raise UsageError(f"CaptureSplitInfo takes Hugging Face models, got a {model.kind} model")
    loaded = _meta_model(model)
    if config.num_splits:
        assignments = by_num_splits(loaded, config.num_splits, config.block_to_split,
                                    config.unique_embeds_lm_head_splits)
    else:
        assignments = by_cost_model(loaded, Path(config.cost_model), config.memory,
                                    config.unique_embeds_lm_head_splits)
    context.logger.info("split assignments: %s", assignments)
    return attrs.evolve(model, attributes={**model.attrs_dict(),
                                           "split_assignments": assignments})
