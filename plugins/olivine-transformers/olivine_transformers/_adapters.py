"""Adapters for ``OnnxConversion``: a LoRA-family step's output as an HfModel with
``adapter_path``, the peft model merged or kept, and a traceable Kronecker product for LoKr.

The TorchScript exporter has no ``aten::kron`` (torch 2.13), which peft's LoKr layers call to
build their weight update; :func:`exportable_kron` swaps in the same product written with
broadcasting while an export runs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from olivine import AdapterModel, HfModel, UsageError


def adapter_as_hf(model: AdapterModel) -> HfModel:
    """The base HfModel of an adapter handle (a LoRA-family step's output) with ``adapter_path``
    set to its peft adapter folder: the folder itself or its ``adapter/`` sub-folder."""
    import attrs

    if not isinstance(model.base, HfModel):
        kind = model.base.kind if model.base is not None else "missing"
        raise UsageError(f"OnnxConversion takes adapters of Hugging Face models; the base model "
                         f"of adapter {model.path} is a {kind} model")
    folder = Path(model.path)
    for candidate in (folder, folder / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return attrs.evolve(model.base, adapter_path=str(candidate))
    raise UsageError(f"adapter {model.path}: no adapter_config.json in it or in its adapter/ "
                     "folder (a peft adapter, as LoRA, DoRA, LoHa, LoKr and QLoRA write)")


@torch.no_grad()
def with_adapter(model: torch.nn.Module, adapter_path: str, merge: bool) -> torch.nn.Module:
    """``model`` with the peft adapter at ``adapter_path``: merged into the weights, or kept as
    separate ops. LoRA and DoRA keep their lora_A/lora_B MatMuls with the scaling folded into
    lora_B (what Olive exports); LoHa and LoKr are traced as peft computes them (their weight
    update is built from the factors in the graph, then applied beside the base MatMul)."""
    try:
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
    except ImportError as exc:
        raise UsageError("OnnxConversion of an HfModel with adapter_path needs peft: pip install "
                         "peft (or olivine-lora)") from exc
    try:
        peft_model = PeftModel.from_pretrained(model, adapter_path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"adapter_path {adapter_path!r}: not a PEFT adapter for this model: "
                         f"{exc}") from exc
    if merge:
        merged: torch.nn.Module = peft_model.merge_and_unload()
        return merged
    base: torch.nn.Module = peft_model.get_base_model()
    for module in base.modules():
        if not isinstance(module, LoraLayer) or len(module.active_adapters) != 1:
            continue
        name = module.active_adapters[0]
        holder: Any = module.lora_B or module.lora_embedding_B
        if name not in holder:
            continue
        lora_b = holder[name]
        weight = lora_b.weight if isinstance(lora_b, torch.nn.Linear) else lora_b
        if not isinstance(weight, torch.Tensor):
            continue
        weight.data.mul_(module.scaling[name])
        module.scaling[name] = 1
    return base


def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.kron(a, b)`` for tensors of equal rank, with reshape and broadcasting only."""
    a_shape = [d for s in a.shape for d in (s, 1)]
    b_shape = [d for s in b.shape for d in (1, s)]
    out = a.reshape(a_shape) * b.reshape(b_shape)
    return out.reshape([x * y for x, y in zip(a.shape, b.shape, strict=True)])


def _make_kron(w1: torch.Tensor, w2: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """peft's ``make_kron`` (LoKr's weight update) with :func:`kron`."""
    if w2.dim() == 4:
        w1 = w1.unsqueeze(2).unsqueeze(2)
    return kron(w1, w2.contiguous()) * scale


@contextlib.contextmanager
def exportable_kron() -> Iterator[None]:
    """While exporting: peft's LoKr layers (if peft is loaded) build their update with
    :func:`kron`, which the TorchScript exporter can trace (the same numbers)."""
    module: Any = sys.modules.get("peft.tuners.lokr.layer")
    original = getattr(module, "make_kron", None)
    if original is None:
        yield
        return
    module.make_kron = _make_kron
    try:
        yield
    finally:
        module.make_kron = original
