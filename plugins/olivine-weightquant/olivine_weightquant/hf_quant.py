"""Quantize a Hugging Face model's linears into a GPTQ-format folder.

Two drivers:

:func:`calibrated`
    GPTQ and AWQ. Layer by layer: run the calibration windows through the layer
    (collecting what the algorithm needs from each linear's input), quantize its
    linears, run the windows through the quantized layer to get the next layer's
    inputs, write the layer's shard, drop the layer.
:func:`streamed`
    RTN and HQQ (no calibration). Tensor by tensor straight from the safetensors
    files; a folder that is already quantized (GPTQ format) keeps its quantized
    linears and gets the others (``lm_head``) added.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch

from olivine import UsageError
from olivine_weightquant import core
from olivine_weightquant.hf_checkpoint import (
    CheckpointWriter,
    add_override,
    make_quant_config,
)
from olivine_weightquant.packing import gptq_tensors

log = logging.getLogger("olivine.pass.weightquant")
Progress = Callable[[float, "float | None", str], None]
SHARD_BYTES = 1 << 30


@attrs.frozen
class HfOptions:
    """What to quantize and how."""

    algorithm: str
    bits: int = 4
    group_size: int = 128
    symmetric: bool = True
    damp_percent: float = 0.01
    act_order: bool = False
    lm_head: bool = False
    lm_head_bits: int | None = None
    only_lm_head: bool = False
    #: quantize a layer's linears group by group, each from inputs through the groups done
    true_sequential: bool = False
    batch_tokens: int = 2048
    awq_grid: int = 20
    embeds: bool = False
    #: module name -> {bits, symmetric, group_size} (Olive's ``overrides``, merged with the input's
    #: ``mixed_precision_info``)
    overrides: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def settings(self, module: str) -> tuple[int, int, bool]:
        """``(bits, group_size, symmetric)`` of one module: the pass's values, ``lm_head_bits``
        for the LM head, then the module's entry in ``overrides``."""
        bits, group, sym = self.bits, self.group_size, self.symmetric
        if module == "lm_head" and self.lm_head_bits:
            bits = self.lm_head_bits
        override = self.overrides.get(module) or {}
        if override.get("bits") is not None:
            bits = int(override["bits"])
        if override.get("group_size") is not None:
            group = int(override["group_size"])
        if override.get("symmetric") is not None:
            sym = bool(override["symmetric"])
        return bits, group, sym


def release_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps freed tensors' pages otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def resolve_group(name: str, k: int, group_size: int) -> int:
    """The block size of a linear with ``k`` inputs: ``group_size``, or ``k`` for -1 (one block
    per row), which MatMulNBits runs only when ``k`` is a power of two of at least 16."""
    if group_size != -1:
        return group_size
    if k < 16 or k & (k - 1):
        sizes = [g for g in (16, 32, 64, 128, 256) if k % g == 0]
        raise UsageError(f"{name}: group_size -1 makes one block of its {k} inputs, and "
                         "MatMulNBits runs only power-of-two blocks of at least 16; set group_size "
                         f"to a block size that divides {k} ({', '.join(map(str, sizes)) or 'none'})")
    return k


def check_shape(name: str, n: int, k: int, bits: int, group_size: int) -> None:
    """Refuse a linear the GPTQ format or ONNX Runtime's loader cannot hold."""
    group_size = resolve_group(name, k, group_size)
    per = 32 // bits
    if k % group_size:
        sizes = [g for g in (16, 32, 64, 128, 256) if k % g == 0]
        raise UsageError(f"{name}: its {k} inputs are not a multiple of the block size {group_size}; "
                         f"the GPTQ checkpoint format and the genai builder's loader need whole blocks "
                         f"(block sizes that divide {k}: {', '.join(map(str, sizes)) or 'none'})")
    if k % per or n % per:
        raise UsageError(f"{name}: a {n}x{k} weight cannot be packed {per} values per int32 word at "
                         f"{bits} bits")


def _tie_off(config: dict[str, Any]) -> None:
    config["tie_word_embeddings"] = False
    if isinstance(config.get("text_config"), dict):
        config["text_config"]["tie_word_embeddings"] = False


# -- calibrated: GPTQ and AWQ ---------------------------------------------------------------------


#: Above this width ``X^T X`` is summed block by block over its upper triangle only.
GRAM_BLOCK = 1280


def add_gram_upper(h: torch.Tensor, x: torch.Tensor) -> None:
    """Add ``x^T x`` to ``h`` (float32 ``[K, K]``); wide inputs fill only the upper block triangle.

    ``X^T X`` is symmetric, so for ``K`` above :data:`GRAM_BLOCK` only the blocks on and
    above the diagonal are computed (10 of 16 for Qwen2.5-0.5B's 4864-wide down_proj
    input); :func:`mirror_upper` completes the matrix once at the end. bf16 activations
    multiply as a bf16 GEMM (fp32 accumulation, twice the speed on CPUs with
    AVX512-BF16); each partial sum is rounded to bf16, an error (2**-9 relative) of the
    size the activations themselves carry.
    """
    if x.dtype != torch.bfloat16:
        x = x.float()
    k = x.shape[1]
    if k <= GRAM_BLOCK:
        h.add_((x.t() @ x).float())
        return
    edges = [*range(0, k, GRAM_BLOCK), k]
    for a in range(len(edges) - 1):
        rows = x[:, edges[a]:edges[a + 1]].t()
        h[edges[a]:edges[a + 1], edges[a]:].add_((rows @ x[:, edges[a]:]).float())


def mirror_upper(h: torch.Tensor) -> torch.Tensor:
    """Complete a matrix filled by :func:`add_gram_upper` (no-op for narrow ones)."""
    k = h.shape[0]
    if k <= GRAM_BLOCK:
        return h
    edges = [*range(0, k, GRAM_BLOCK), k]
    for a in range(1, len(edges) - 1):
        h[edges[a]:, edges[a - 1]:edges[a]] = h[edges[a - 1]:edges[a], edges[a]:].t()
    return h


class InputCollector:
    """Forward hooks that sum ``X^T X`` of each linear's input (one sum per distinct input)."""

    def __init__(self, linears: dict[str, torch.nn.Linear], keep_tokens: int = 0) -> None:
        self.linears = linears
        self.leader: dict[str, str] = {}
        self.hessian: dict[str, torch.Tensor] = {}
        self.abs_mean: dict[str, torch.Tensor] = {}
        self.samples: dict[str, list[torch.Tensor]] = {}
        self.tokens: dict[str, int] = {}
        self.keep_tokens = keep_tokens
        self._seen: dict[int, str] = {}
        self._refs: list[torch.Tensor] = []
        self._first_batch = True
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in linears.items()]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            x = args[0]
            if self._first_batch:
                leader = self._seen.get(id(x))
                if leader is not None:
                    self.leader[name] = leader
                    return
                self._seen[id(x)] = name
                self._refs.append(x)  # keep alive: ids must not be reused within the batch
                self.leader[name] = name
            elif self.leader[name] != name:
                return
            flat = x.reshape(-1, x.shape[-1])
            h = self.hessian.get(name)
            if h is None:
                h = self.hessian[name] = torch.zeros(flat.shape[1], flat.shape[1])
            add_gram_upper(h, flat)
            self.tokens[name] = self.tokens.get(name, 0) + flat.shape[0]
            if self.keep_tokens:
                flat = flat.float()
                self.abs_mean[name] = self.abs_mean.get(name, 0) + flat.abs().sum(0)
                kept = sum(s.shape[0] for s in self.samples.get(name, []))
                if kept < self.keep_tokens:
                    step = max(1, flat.shape[0] // self.keep_tokens)
                    self.samples.setdefault(name, []).append(flat[::step][: self.keep_tokens - kept].clone())

        return hook

    def take_hessian(self, name: str) -> torch.Tensor:
        """The finished ``X^T X`` of ``name``'s input (removed from the collector)."""
        return mirror_upper(self.hessian.pop(name))

    def end_batch(self) -> None:
        """Call after each batch's forward."""
        self._first_batch = False
        self._seen.clear()
        self._refs.clear()

    def close(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()

    def groups(self) -> dict[str, list[str]]:
        """Leader -> the linears that read the same input."""
        out: dict[str, list[str]] = {}
        for name, leader in self.leader.items():
            out.setdefault(leader, []).append(name)
        return out


def calibrated(folder: Path, target: Path, options: HfOptions, windows: torch.Tensor,
               progress: Progress | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """GPTQ or AWQ of every decoder-layer linear (and the LM head if asked) into ``target``."""
    from olivine_weightquant.hf_model import LayerwiseModel, run_layer

    lm = LayerwiseModel(folder, trust_remote_code=trust_remote_code)
    if options.algorithm == "awq":
        from olivine_weightquant.awq import check_awq_model

        check_awq_model(lm)
    plans = _layer_plans(lm, options)
    per_batch = max(1, options.batch_tokens // windows.shape[1])
    batches = list(windows.split(per_batch))
    total = lm.num_layers + (1 if options.lm_head else 0)
    if progress:
        progress(0, total, f"embedding {windows.shape[0]} calibration windows of {windows.shape[1]} tokens")
    captured = lm.capture(batches)
    hidden = [h for h, _ in captured]
    kwargs = [k for _, k in captured]
    del captured
    writer = CheckpointWriter(target)
    qc = make_quant_config(options.bits, options.group_size, options.symmetric, method=options.algorithm,
                           damp_percent=options.damp_percent, act_order=options.act_order,
                           true_sequential=options.true_sequential)
    summary: dict[str, Any] = {"layers": lm.num_layers, "linears": 0, "lean_loading": lm.lean}
    for i in range(lm.num_layers):
        clock = time.perf_counter()
        layer = lm.load_layer(i)
        names = {n: m for n, m in layer.named_modules() if f"{lm.prefix}.{i}.{n}" in plans}
        layer_kwargs = [k[i] for k in kwargs]
        if options.true_sequential and options.algorithm == "gptq":
            tensors = _true_sequential(layer, names, hidden, layer_kwargs, options, lm.dtype,
                                       f"{lm.prefix}.{i}.", qc)
            times = [0.0, time.perf_counter() - clock]
        else:
            keep = 512 if options.algorithm == "awq" else 0
            collector = _collect(layer, names, hidden, layer_kwargs, keep)
            times = [time.perf_counter() - clock]
            if options.algorithm == "awq":
                from olivine_weightquant.awq import scale_layer

                scale_layer(layer, collector, options)
            tensors = _quantize_layer(layer, names, collector, options, lm.dtype, f"{lm.prefix}.{i}.", qc)
            del collector
            times.append(time.perf_counter() - clock - sum(times))
        summary["linears"] += len(names)
        with torch.no_grad():
            for b in range(len(hidden)):
                hidden[b] = run_layer(layer, hidden[b], kwargs[b][i])
        times.append(time.perf_counter() - clock - sum(times))
        log.info("layer %d: statistics %.1f s, quantization %.1f s, forward %.1f s", i, *times)
        for pname, param in layer.named_parameters():
            full = f"{lm.prefix}.{i}.{pname}"
            module = pname.rpartition(".")[0]
            if module in names and pname.endswith("weight"):
                continue
            original = lm.source.get(full)
            tensors[full] = param.detach().to(original.dtype) if options.algorithm == "awq" else original
        writer.write(f"{i + 1:05d}-of-{lm.num_layers:05d}", tensors)
        count = len(names)
        del tensors, layer, names
        lm.release_layer(i)
        release_memory()
        if progress:
            progress(i + 1, total, f"layer {i + 1}/{lm.num_layers}: {count} linears")
    config = dict(lm.raw_config)
    rest: dict[str, torch.Tensor] = {}
    head_name = lm.lm_head_weight_name() if options.lm_head else None
    if options.lm_head:
        rest.update(_quantize_lm_head(lm, hidden, options, qc))
        _tie_off(config)
        summary["linears"] += 1
        if progress:
            progress(total, total, "lm_head")
    for name in lm.non_layer_names():
        if name == "lm_head.weight" and head_name == "lm_head.weight":
            continue
        rest[name] = lm.source.get(name)
    writer.write("embeddings-and-head", rest)
    config["quantization_config"] = qc
    writer.finish(folder, config)
    lm.source.close()
    return summary


def _layer_plans(lm: Any, options: HfOptions) -> set[str]:
    plans = set()
    for i in range(lm.num_layers):
        for name, module in lm.layers[i].named_modules():
            full = f"{lm.prefix}.{i}.{name}"
            if isinstance(module, torch.nn.Linear):
                bits, group, _ = options.settings(full)
                check_shape(full, module.out_features, module.in_features, bits, group)
                plans.add(full)
    if not plans:
        raise UsageError("no linear layer to quantize in the decoder layers")
    if options.lm_head:
        head = lm.model.get_output_embeddings()
        bits, group, _ = options.settings("lm_head")
        check_shape("lm_head", head.out_features, head.in_features, bits, group)
    return plans


def _collect(layer: torch.nn.Module, names: dict[str, Any], hidden: list[torch.Tensor],
             layer_kwargs: list[Any], keep_tokens: int = 0) -> InputCollector:
    """Run the calibration batches through ``layer`` with hooks on the linears ``names``."""
    from olivine_weightquant.hf_model import run_layer

    collector = InputCollector(names, keep_tokens=keep_tokens)
    try:
        with torch.no_grad():
            for h, kw in zip(hidden, layer_kwargs):
                run_layer(layer, h, kw)
                collector.end_batch()
    finally:
        collector.close()
    return collector


def _true_sequential(layer: torch.nn.Module, names: dict[str, Any], hidden: list[torch.Tensor],
                     layer_kwargs: list[Any], options: HfOptions, dtype: torch.dtype, prefix: str,
                     qc: dict[str, Any]) -> dict[str, torch.Tensor]:
    """GPTQ's ``true_sequential``: the linears that read one input form a group; groups are
    quantized in the order the layer's forward reaches them, and each group's statistics are
    gathered from a forward through the groups already quantized."""
    collector = _collect(layer, names, hidden, layer_kwargs)
    order = list(collector.groups().items())
    tensors: dict[str, torch.Tensor] = {}
    for n, (_, members) in enumerate(order):
        group_names = {m: names[m] for m in members}
        if n:
            collector = _collect(layer, group_names, hidden, layer_kwargs)
        tensors.update(_quantize_layer(layer, group_names, collector, options, dtype, prefix, qc))
    missing = set(names) - {m for _, members in order for m in members}
    if missing:
        raise UsageError(f"linears {sorted(missing)} received no calibration input (unused by the "
                         "layer's forward?)")
    return tensors


def _quantize_layer(layer: torch.nn.Module, names: dict[str, Any], collector: InputCollector,
                    options: HfOptions, dtype: torch.dtype, prefix: str,
                    qc: dict[str, Any]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for leader, members in collector.groups().items():
        if leader not in names:  # another group's (true_sequential quantizes one group at a time)
            continue
        factor = core.factor_hessian(collector.take_hessian(leader), options.damp_percent,
                                     options.act_order) if options.algorithm == "gptq" else None
        for name in members:
            module = names[name]
            w = module.weight.detach().float()
            bits, group, sym = options.settings(prefix + name)
            group = resolve_group(prefix + name, w.shape[1], group)
            if factor is not None:
                qw, _ = core.gptq(w, factor, bits, group, sym, scale_dtype=torch.float16)
            else:
                qw = core.rtn(w, bits, group, sym, torch.float16)
            add_override(qc, prefix + name, bits, group, sym)
            module.weight.data = qw.dequantize(dtype)
            for key, value in gptq_tensors(qw).items():
                tensors[f"{prefix}{name}.{key}"] = value
        del factor
    missing = set(names) - set(collector.leader)
    if missing:
        raise UsageError(f"linears {sorted(missing)} received no calibration input (unused by the "
                         "layer's forward?)")
    return tensors


def _quantize_lm_head(lm: Any, hidden: list[torch.Tensor], options: HfOptions,
                      qc: dict[str, Any]) -> dict[str, torch.Tensor]:
    bits, group, sym = options.settings("lm_head")
    w = lm.lm_head_matrix().float()
    group = resolve_group("lm_head", w.shape[1], group)
    if options.algorithm == "gptq":
        norm = lm.final_norm()
        h = torch.zeros(w.shape[1], w.shape[1])
        with torch.no_grad():
            for x in hidden:
                y = norm(x) if norm is not None else x
                flat = y.reshape(-1, y.shape[-1]).float()
                h.addmm_(flat.t(), flat)
        factor = core.factor_hessian(h, options.damp_percent, options.act_order)
        qw, _ = core.gptq(w, factor, bits, group, sym, scale_dtype=torch.float16)
    else:
        qw = core.rtn(w, bits, group, sym, torch.float16)
    add_override(qc, "lm_head", bits, group, sym)
    return {f"lm_head.{k}": v for k, v in gptq_tensors(qw).items()}


# -- streamed: RTN and HQQ -----------------------------------------------------------------------


def __getattr__(name: str) -> Any:
    """``streamed`` (the RTN/HQQ driver) lives in :mod:`olivine_weightquant.hf_streamed`."""
    if name == "streamed":
        from olivine_weightquant.hf_streamed import streamed

        return streamed
    raise AttributeError(name)
