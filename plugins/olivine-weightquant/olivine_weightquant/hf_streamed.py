"""RTN (and HQQ) of a Hugging Face checkpoint, tensor by tensor, into a GPTQ-format folder.

No calibration, so nothing is run: each weight is read from the safetensors files,
quantized and written. A folder that is already quantized (GPTQ format, from ``Gptq``)
keeps its quantized linears and gets the others added (``lm_head``, and with
``embeds`` the input embeddings), as Olive's ``Rtn`` does on its own format.

Quantized embeddings: the genai builder's loader reads ``model.embed_tokens.weight``
in float and skips ``.scales``/``.qzeros`` beside it. So the embedding is stored as its
dequantized values in float32 (exactly ``(q - zero) * scale``), its scales (float16)
and integer zero points (uint8) beside it, and ``quantization_config.olivine.embeds``
records module, bits, group size and symmetry; ``ModelBuilder`` recovers ``q`` exactly
from these and writes ``GatherBlockQuantized``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from olivine import UsageError
from olivine_weightquant import core
from olivine_weightquant.hf_checkpoint import (
    CheckpointWriter,
    TensorSource,
    add_override,
    iter_quantized,
    make_quant_config,
    quant_config_of,
    read_config,
)
from olivine_weightquant.hf_quant import SHARD_BYTES, HfOptions, _tie_off, check_shape, resolve_group
from olivine_weightquant.packing import gptq_tensors

Progress = Callable[[float, "float | None", str], None]


def _linear_shapes(folder: Path, trust_remote_code: bool) -> tuple[dict[str, tuple[int, int]], str | None]:
    """``{name: (out, in)}`` of every nn.Linear in model order (built on the meta device), and the
    embedding's name."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    embed = model.get_input_embeddings()
    embed_name = next((n for n, m in model.named_modules() if m is embed), None)
    return ({n: (m.out_features, m.in_features) for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear)}, embed_name)


def _plan(options: HfOptions, linears: dict[str, tuple[int, int]], already: set[str],
          quantized_input: bool, folder: Path) -> dict[str, tuple[int, int, bool]]:
    """Module -> (bits, group_size, symmetric) of every linear this pass quantizes."""
    todo: dict[str, tuple[int, int, bool]] = {}
    for name in linears:
        if name in already:
            continue
        is_head = name == "lm_head"
        if is_head and not options.lm_head:
            continue
        if not is_head and quantized_input:
            continue  # a quantized folder: add only the LM head
        todo[name] = options.settings(name)
    if options.only_lm_head and not quantized_input:
        raise UsageError(f"only_lm_head: {folder} is a float model, and the genai builder reads every "
                         "decoder-layer linear of a quantized checkpoint as quantized; quantize the "
                         "layers first (Gptq or Rtn), then add the LM head")
    for name, (bits, group, sym) in todo.items():
        check_shape(name, *linears[name], bits, group)
        todo[name] = (bits, resolve_group(name, linears[name][1], group), sym)
    return todo


def streamed(folder: Path, target: Path, options: HfOptions, progress: Progress | None = None,
             trust_remote_code: bool = False) -> dict[str, Any]:
    """RTN (or HQQ with integer zero points) of the linears, tensor by tensor, into ``target``."""
    config = read_config(folder)
    qc_in = quant_config_of(config)
    if qc_in is not None and qc_in.get("quant_method") != "gptq":
        raise UsageError(f"{folder} is quantized with {qc_in.get('quant_method')!r}; only float "
                         "models and GPTQ-format folders can be (further) quantized here")
    linears, embed_name = _linear_shapes(folder, trust_remote_code)
    source = TensorSource(folder)
    already = set(iter_quantized(source))
    todo = _plan(options, linears, already, qc_in is not None, folder)
    embeds = _embeds_plan(options, qc_in, embed_name, source)
    tied = "lm_head" in todo and not source.has("lm_head.weight")
    if not todo and embeds is None:
        raise UsageError(f"nothing to quantize in {folder}: every linear is already quantized"
                         + ("" if options.lm_head or options.embeds
                            else " (set lm_head or embeds to quantize the LM head or embeddings)"))
    qc = dict(qc_in) if qc_in else make_quant_config(options.bits, options.group_size, options.symmetric,
                                                     method=options.algorithm)
    qc["dynamic"] = dict(qc.get("dynamic") or {})
    writer = CheckpointWriter(target)
    shard: dict[str, torch.Tensor] = {}
    size = 0
    count = 0

    def add(name: str, tensor: torch.Tensor) -> None:
        nonlocal shard, size, count
        shard[name] = tensor
        size += tensor.numel() * tensor.element_size()
        if size > SHARD_BYTES:
            count += 1
            writer.write(f"{count:05d}", shard)
            shard, size = {}, 0

    replaced = {f"{m}.weight" for m in todo}
    if embeds is not None:
        replaced.add(f"{embed_name}.weight")
    for name in source.names():
        if name not in replaced:
            add(name, source.get(name))
    untie_head = embeds is not None and "lm_head" not in todo and "lm_head" not in already \
        and not source.has("lm_head.weight") and "lm_head" in linears
    if untie_head:  # the head keeps the float table the embeddings shared with it
        add("lm_head.weight", source.get(f"{embed_name}.weight"))
    for done, (module, (bits, group, sym)) in enumerate(todo.items(), 1):
        weight_name = f"{embed_name}.weight" if module == "lm_head" and tied else f"{module}.weight"
        qw = _quantize_plain(source.get(weight_name).float(), bits, group, sym, options.algorithm)
        for key, value in gptq_tensors(qw).items():
            add(f"{module}.{key}", value)
        add_override(qc, module, bits, group, sym)  # no-op where the defaults apply
        if progress:
            progress(done, len(todo), module)
    if embeds is not None:
        assert embed_name is not None
        for key, value in _quantized_embedding(source.get(f"{embed_name}.weight"), *embeds).items():
            add(f"{embed_name}.{key}", value)
        bits, group, sym = embeds
        qc["olivine"] = {**(qc.get("olivine") or {}),
                         "embeds": {"module": embed_name, "bits": bits, "group_size": group, "sym": sym}}
    if shard:
        writer.write(f"{count + 1:05d}", shard)
    if "lm_head" in todo or untie_head:
        _tie_off(config)
    config["quantization_config"] = qc
    writer.finish(folder, config)
    source.close()
    return {"linears": len(todo), "kept_quantized": len(already),
            "embeds": None if embeds is None else {"bits": embeds[0], "group_size": embeds[1]}}


def _embeds_plan(options: HfOptions, qc_in: dict[str, Any] | None, embed_name: str | None,
                 source: TensorSource) -> tuple[int, int, bool] | None:
    """(bits, group_size, symmetric) of the input embeddings, or ``None`` when they stay float."""
    if not options.embeds:
        return None
    if qc_in is not None and (qc_in.get("olivine") or {}).get("embeds"):
        return None  # already quantized by an earlier step
    if embed_name is None or not source.has(f"{embed_name}.weight"):
        raise UsageError("embeds: the model has no input embedding table to quantize")
    bits, group, sym = options.settings(embed_name)
    hidden = int(source.get(f"{embed_name}.weight").shape[1])
    group = resolve_group(embed_name, hidden, group)
    if hidden % group:
        raise UsageError(f"embeds: the embedding width {hidden} is not a multiple of the block size "
                         f"{group}; set group_size (or overrides.{embed_name}.group_size) to one "
                         "that divides it")
    return bits, group, sym


def _quantized_embedding(weight: torch.Tensor, bits: int, group: int, sym: bool) -> dict[str, torch.Tensor]:
    """The dequantized table (float32, exact), its scales (float16) and zero points (uint8)."""
    qw = core.rtn(weight.float(), bits, group, sym, torch.float16)
    return {"weight": qw.dequantize(torch.float32).contiguous(),
            "scales": qw.scales.to(torch.float16).contiguous(),
            "qzeros": qw.zeros.to(torch.uint8).contiguous()}


def _quantize_plain(w: torch.Tensor, bits: int, group: int, sym: bool,
                    algorithm: str) -> core.QuantizedWeight:
    if algorithm == "hqq":
        return core.hqq(w, bits, group, integer_zeros=True, scale_dtype=torch.float16)
    return core.rtn(w, bits, group, sym, torch.float16)
