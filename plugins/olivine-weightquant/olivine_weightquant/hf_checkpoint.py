"""Hugging Face checkpoints: read tensors lazily, write GPTQ-format folders, load them back.

The output format is the GPTQ checkpoint format (``quant_method: gptq``, AutoGPTQ's v1
packing; see :mod:`olivine_weightquant.packing`) that onnxruntime-genai's model builder
reads through its ``GPTQModel`` loader: every quantized linear ``NAME`` becomes
``NAME.qweight``, ``NAME.qzeros``, ``NAME.scales`` and ``NAME.g_idx``. Linears quantized
with other bits or group size than the rest (an 8-bit ``lm_head`` in a 4-bit model) are
listed under ``quantization_config.dynamic`` (``"+:lm_head": {"bits": 8, ...}``), the
per-module override the builder's loader applies.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from olivine import UsageError

log = logging.getLogger("olivine.pass.weightquant")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
QUANT_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


class TensorSource:
    """Named tensors of a safetensors checkpoint folder, read one at a time.

    Files are opened (memory mapped) per read and closed again, so pages of tensors
    already read do not stay mapped and counted in the process's memory.
    """

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        self.folder = folder
        self.files = sorted(folder.glob("*.safetensors"))
        if not self.files:
            raise UsageError(f"{folder} holds no .safetensors weights; save the model with "
                             "save_pretrained(safe_serialization=True)")
        self._where: dict[str, Path] = {}
        for f in self.files:
            with safe_open(str(f), framework="pt") as fh:
                for name in fh.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
                    self._where[name] = f

    def names(self) -> list[str]:
        """Every tensor name, in file order."""
        return list(self._where)

    def has(self, name: str) -> bool:
        """Whether the checkpoint holds ``name``."""
        return name in self._where

    def get(self, name: str) -> Any:
        """One tensor (a copy in memory)."""
        from safetensors import safe_open

        with safe_open(str(self._where[name]), framework="pt") as fh:
            return fh.get_tensor(name)

    def close(self) -> None:
        """Nothing stays open between reads."""


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model folder."""
    path = folder / "config.json"
    if not path.is_file():
        raise UsageError(f"{folder} is not a Hugging Face model folder: it has no config.json")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def quant_config_of(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``quantization_config`` of a model config, if the model is quantized."""
    qc = config.get("quantization_config")
    return dict(qc) if isinstance(qc, Mapping) else None


def make_quant_config(bits: int, group_size: int, symmetric: bool, *, method: str,
                      damp_percent: float | None = None, act_order: bool = False,
                      true_sequential: bool = False) -> dict[str, Any]:
    """A ``quantization_config`` block in GPTQ form."""
    return {"quant_method": "gptq", "checkpoint_format": "gptq", "bits": bits,
            "group_size": group_size, "sym": symmetric, "desc_act": False,
            "static_groups": act_order, "true_sequential": true_sequential,
            "damp_percent": damp_percent if damp_percent is not None else 0.01,
            "dynamic": {}, "olivine": {"method": method, "act_order": act_order}}


def layer_settings(qc: Mapping[str, Any], module: str) -> tuple[int, int, bool]:
    """``(bits, group_size, symmetric)`` of one module, with ``dynamic`` overrides applied."""
    bits, group, sym = int(qc["bits"]), int(qc["group_size"]), bool(qc.get("sym", True))
    for pattern, override in (qc.get("dynamic") or {}).items():
        if pattern.startswith("-:"):
            continue
        if re.match(pattern.removeprefix("+:"), module):
            bits = int(override.get("bits", bits))
            group = int(override.get("group_size", group))
            sym = bool(override.get("sym", sym))
            break
    return bits, group, sym


def add_override(qc: dict[str, Any], module: str, bits: int, group_size: int, symmetric: bool) -> None:
    """Record a module whose settings differ from the checkpoint's defaults."""
    if (bits, group_size, symmetric) == (qc["bits"], qc["group_size"], qc.get("sym", True)):
        return
    qc.setdefault("dynamic", {})[f"+:{re.escape(module)}"] = {
        "bits": bits, "group_size": group_size, "sym": symmetric}


class CheckpointWriter:
    """Writes a model folder shard by shard, then the index, config and the other files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.weight_map: dict[str, str] = {}
        self.total_bytes = 0

    def write(self, label: str, tensors: Mapping[str, Any]) -> None:
        """Save ``tensors`` as ``model-LABEL.safetensors``."""
        from safetensors.torch import save_file

        if not tensors:
            return
        name = f"model-{label}.safetensors"
        clean = {k: v.contiguous() for k, v in tensors.items()}
        save_file(clean, str(self.folder / name), metadata={"format": "pt"})
        for key, value in clean.items():
            self.weight_map[key] = name
            self.total_bytes += value.numel() * value.element_size()

    def link(self, path: Path, names: list[str]) -> None:
        """Reuse a shard of the input model unchanged (hard link, else copy)."""
        target = self.folder / path.name
        try:
            target.hardlink_to(path)
        except OSError:
            shutil.copy2(path, target)
        for key in names:
            self.weight_map[key] = path.name
        self.total_bytes += path.stat().st_size

    def finish(self, source: Path | None, config: Mapping[str, Any]) -> None:
        """Write the index and ``config.json``; copy the input folder's other files."""
        if source is not None and source.is_dir():
            for item in source.iterdir():
                if item.name in ("config.json", *INDEX_NAMES) or item.suffix in WEIGHT_SUFFIXES:
                    continue
                if item.is_file() and not (self.folder / item.name).exists():
                    shutil.copy2(item, self.folder / item.name)
        index = {"metadata": {"total_size": self.total_bytes},
                 "weight_map": dict(sorted(self.weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        (self.folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def iter_quantized(source: TensorSource) -> Iterator[str]:
    """Module names that a GPTQ checkpoint stores quantized."""
    for name in source.names():
        if name.endswith(".qweight"):
            yield name[: -len(".qweight")]


def dequantized_state(source: TensorSource, qc: Mapping[str, Any] | None, dtype: Any) -> dict[str, Any]:
    """Every tensor of a checkpoint with quantized linears turned back into ``NAME.weight``."""
    from olivine_weightquant.packing import from_gptq_tensors

    state: dict[str, Any] = {}
    quantized = set(iter_quantized(source)) if qc else set()
    embeds = ((qc or {}).get("olivine") or {}).get("embeds") or {}
    for name in source.names():
        module, _, leaf = name.rpartition(".")
        if module == embeds.get("module") and leaf in ("scales", "qzeros"):
            continue  # the table itself is stored dequantized
        if module in quantized and leaf in QUANT_SUFFIXES:
            if leaf != "qweight":
                continue
            assert qc is not None
            bits, group, sym = layer_settings(qc, module)
            parts = {s: source.get(f"{module}.{s}") for s in QUANT_SUFFIXES if source.has(f"{module}.{s}")}
            state[f"{module}.weight"] = from_gptq_tensors(parts, bits, group, sym).dequantize(dtype)
        else:
            state[name] = source.get(name)
    return state


def load_dequantized(folder: str | Path, dtype: Any = None) -> Any:
    """A float transformers model from a folder this plugin wrote (or any unquantized folder).

    For evaluating quantized checkpoints in torch without a GPTQ kernel package: the
    weights are ``(q - zero) * scale`` exactly as ONNX Runtime computes them.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    dtype = dtype or torch.float32
    raw = read_config(folder)
    qc = quant_config_of(raw)
    config = AutoConfig.from_pretrained(str(folder))
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    source = TensorSource(folder)
    state = {k: v.to(dtype) if v.is_floating_point() else v
             for k, v in dequantized_state(source, qc, dtype).items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False) and "lm_head.weight" in missing:
        model.tie_weights()
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"{folder}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    _restore_buffers(model, config)
    return model.eval()


def _restore_buffers(model: Any, config: Any) -> None:
    """Recreate non-persistent buffers (rotary frequencies) that a meta-device model lacks."""
    for name, module in list(model.named_modules()):
        if not any(b.is_meta for b in module.buffers(recurse=False)):
            continue
        try:
            fresh = type(module)(config=config)
        except TypeError as exc:
            raise ValueError(f"cannot rebuild {name} ({type(module).__name__}) outside the meta "
                             f"device: {exc}") from None
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, fresh)
