"""SelectiveMixedPrecision: choose which modules keep more bits, as Olive chooses them.

The result is Olive's ``mixed_precision_info`` model attribute::

    {"default": {"bits": 4, ...}, "overrides": {"lm_head": {"bits": 8}, ...}}

which the following ``Gptq``/``Rtn`` passes read (:func:`olivine_weightquant.passes.hf_options`)
and which reaches ModelBuilder through the GPTQ checkpoint's per-module overrides.

Two families, as in Olive:

* ``k_quant_*``: by layer position (llama.cpp's k-quant mixes). The LM head always; for
  ``k_quant_down`` also ``down_proj`` of the first and last eighth of the decoder layers and
  of every third layer between; ``k_quant_mixed`` adds those layers' q/k/v projections.
* scored: every linear gets a sensitivity score (lower is more sensitive); q/k/v of one
  layer form one unit (ModelBuilder fuses them into one MatMul, so they must share bits).
  Units are promoted in score order until ``1 - ratio`` of the scored weights are high.
  Scores use Olive's fake-quantization grid, so the choice is Olive's.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("olivine.pass.SelectiveMixedPrecision")

EPS = 1e-12
ATTENTION = ("self_attn", "self_attention", "attn", "attention")
ATTENTION_INPUTS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv")
MLP = ("mlp", "feed_forward", "ffn")
MLP_OUTPUTS = ("down_proj", "dense_4h_to_h", "c_proj", "w2", "fc2")


def natural_key(name: str) -> list[Any]:
    """Sort key: numbers inside module names compare as numbers (layers.10 after layers.9)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


# -- structure ---------------------------------------------------------------------------------


class Structure:
    """Module names of a decoder-only model: layers, LM head, embeddings, q/k/v and down_proj."""

    def __init__(self, model: Any, tied: bool) -> None:
        self.model = model
        self.tied = tied
        names = {id(m): n for n, m in model.named_modules()}
        head = model.get_output_embeddings()
        embed = model.get_input_embeddings()
        self.lm_head = names.get(id(head), "lm_head") if head is not None else "lm_head"
        self.embeddings = names.get(id(embed), "model.embed_tokens") if embed is not None else None
        layers = _decoder_layers(model)
        self.prefix = names[id(layers)]
        self.layers = list(layers)

    def attention_inputs(self, index: int) -> list[str]:
        """Full names of layer ``index``'s q/k/v projections (one name when fused)."""
        layer = self.layers[index]
        for attn_name in ATTENTION:
            attn = getattr(layer, attn_name, None)
            if isinstance(attn, torch.nn.Module):
                found = [f"{self.prefix}.{index}.{attn_name}.{n}" for n in ATTENTION_INPUTS
                         if isinstance(getattr(attn, n, None), torch.nn.Linear)]
                if found:
                    return found
        return []  # a layer without attention (hybrid models)

    def mlp_outputs(self, index: int) -> list[str]:
        """Full names of layer ``index``'s MLP output projection."""
        layer = self.layers[index]
        for mlp_name in (*MLP, ""):
            mlp = getattr(layer, mlp_name, None) if mlp_name else layer
            if not isinstance(mlp, torch.nn.Module):
                continue
            found = [f"{self.prefix}.{index}.{mlp_name + '.' if mlp_name else ''}{n}" for n in MLP_OUTPUTS
                     if isinstance(getattr(mlp, n, None), torch.nn.Linear)]
            if found:
                return found[:1]
        return []

    def qkv_groups(self) -> list[tuple[str, ...]]:
        """q/k/v projections of each layer that must share precision (groups of two or more)."""
        return [tuple(g) for g in (self.attention_inputs(i) for i in range(len(self.layers))) if len(g) > 1]


def _decoder_layers(model: Any) -> torch.nn.ModuleList:
    try:
        layers = model.get_decoder().layers
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    except AttributeError:
        pass
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        from olivine import UsageError

        raise UsageError("SelectiveMixedPrecision: cannot find the decoder layers of this model")
    return max(lists, key=len)


def finish(structure: Structure, default: dict[str, Any], overrides: dict[str, dict[str, Any]]
           ) -> dict[str, Any]:
    """Olive's ``mixed_precision_info``: tied embeddings follow the LM head; names sorted."""
    if structure.tied and structure.lm_head in overrides and structure.embeddings:
        overrides[structure.embeddings] = dict(overrides[structure.lm_head])
    ordered = {name: overrides[name] for name in sorted(overrides, key=natural_key)}
    return {"default": default, "overrides": ordered}


# -- k-quant heuristics ------------------------------------------------------------------------


def k_quant(structure: Structure, algorithm: str, bits: int, high_bits: int) -> dict[str, Any]:
    """``mixed_precision_info`` of ``k_quant_last``, ``k_quant_down`` or ``k_quant_mixed``."""
    high = {"bits": high_bits}
    overrides: dict[str, dict[str, Any]] = {structure.lm_head: dict(high)}
    if algorithm != "k_quant_last":
        n = len(structure.layers)
        for i in range(n):
            if not (i < n / 8 or i >= 7 * n / 8 or (i - n // 8) % 3 == 2):
                continue
            chosen = structure.mlp_outputs(i)
            if algorithm == "k_quant_mixed":
                chosen = structure.attention_inputs(i) + chosen
            for name in chosen:
                overrides[name] = dict(high)
    return finish(structure, {"bits": bits}, overrides)


# -- scores ------------------------------------------------------------------------------------


def fake_quantize(w: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> torch.Tensor:
    """``W[N, K]`` through Olive's weight quantizer grid (unsigned, range always holding 0).

    Symmetric blocks span ``[-max|w|, max|w|]`` (``[0, max]`` when none is negative) with
    the zero point at the midpoint; asymmetric ones ``[min(w, 0), max(w, 0)]``.
    """
    n, k = w.shape
    g = k if group_size == -1 else group_size
    x = w.float().reshape(n, k // g, g)
    zero_t = torch.zeros((), dtype=x.dtype)
    lo = torch.minimum(x.amin(-1), zero_t)
    hi = torch.maximum(x.amax(-1), zero_t)
    if symmetric:
        hi = torch.maximum(lo.abs(), hi)
        lo = torch.where(lo < 0, -hi, lo)
    both = (lo == 0) & (hi == 0)
    lo = torch.where(both, -torch.ones_like(lo), lo)
    hi = torch.where(both, torch.ones_like(hi), hi)
    maxq = (1 << bits) - 1
    scale = (hi - lo) / maxq
    mid = torch.full_like(scale, float((maxq + 1) // 2))
    zero = (mid if symmetric else torch.round(-lo / scale)).clamp(0, maxq)
    q = torch.round(x / scale.unsqueeze(-1) + zero.unsqueeze(-1)).clamp(0, maxq)
    return ((q - zero.unsqueeze(-1)) * scale.unsqueeze(-1)).reshape(n, k).to(w.dtype)


Grid = Callable[[torch.Tensor], torch.Tensor]


def _snr_db(signal: float, noise: float) -> float:
    return 10 * math.log10(max(signal, EPS * EPS) / max(noise, EPS * EPS))


def weight_stats(algorithm: str, w: torch.Tensor, low: Grid, high: Grid) -> dict[str, float]:
    """The per-module statistics of the weight-only scores (snr, iqe and their relatives)."""
    x = w.float()
    if algorithm.startswith("snr"):
        stats = {"signal": float((x * x).sum()), "noise": float(((x - low(x)) ** 2).sum())}
        if algorithm == "snr_relative":
            stats["high_noise"] = float(((x - high(x)) ** 2).sum())
        return stats
    stats = {"iqe": float(((x - low(x)) ** 2).mean(-1).max())}
    if algorithm == "iqe_relative":
        stats["high_iqe"] = float(((x - high(x)) ** 2).mean(-1).max())
    return stats


def combine(algorithm: str, members: list[dict[str, float]]) -> dict[str, float]:
    """Statistics of a fused q/k/v unit from its members' (sums of norms; max of row errors)."""
    if algorithm.startswith("iqe"):
        return {key: max(m[key] for m in members) for key in members[0]}
    return {key: sum(m[key] for m in members) for key in members[0]}


def score(algorithm: str, stats: dict[str, float], numel: int) -> float:
    """A unit's sensitivity: lower means more sensitive (promoted first)."""
    if algorithm == "snr":
        return _snr_db(stats["signal"], stats["noise"])
    if algorithm == "snr_relative":
        return _snr_db(stats["signal"], stats["noise"]) - _snr_db(stats["signal"], stats["high_noise"])
    if algorithm == "iqe":
        return 1.0 / (stats["iqe"] + EPS)
    if algorithm == "iqe_relative":
        return (1.0 / (stats["iqe"] + EPS)) / (1.0 / (stats["high_iqe"] + EPS))
    return -stats["alignment"] / (max(numel, 1) / 1e6)  # kld_gradient, per million weights


def linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Every ``nn.Linear`` by full module name (the LM head included)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def kld_alignment(model: torch.nn.Module, windows: torch.Tensor, low: Grid, high: Grid,
                  progress: Callable[[float, float | None, str], None] | None = None) -> dict[str, float]:
    """Per linear, the mean over windows of ``<dKL/dW_low, W_low - W_high>``.

    The student is the model with every linear at the low grid; the loss is the KL
    divergence of its next-token distributions from the float model's, averaged over the
    window's positions, one window at a time (Olive's batch size 1). A large positive
    alignment means moving the weights to the high grid lowers the loss most.
    """
    import copy

    model.eval()
    student = copy.deepcopy(model).eval()
    for p in student.parameters():
        p.requires_grad_(False)
    targets = linears(student)
    originals = linears(model)
    with torch.no_grad():
        for module in targets.values():
            module.weight.data = low(module.weight.data)
    for module in targets.values():
        module.weight.requires_grad_(True)
    sums = dict.fromkeys(targets, 0.0)
    with torch.no_grad():
        deltas = {n: (m.weight.data.float() - high(originals[n].weight.data).float())
                  for n, m in targets.items()}
    total = windows.shape[0]
    for i in range(total):
        ids = windows[i:i + 1]
        with torch.no_grad():
            teacher = model(input_ids=ids).logits.float()
        logits = student(input_ids=ids).logits.float()
        kl = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), torch.softmax(teacher, -1),
                                        reduction="none").sum(-1)
        kl.mean().backward()
        with torch.no_grad():
            for name, module in targets.items():
                grad = module.weight.grad
                if grad is None:
                    raise ValueError(f"no gradient reached {name} while scoring sensitivity")
                sums[name] += float((grad.float() * deltas[name]).sum())
            for module in targets.values():
                module.weight.grad = None
        if progress:
            progress(i + 1, total, f"sensitivity: window {i + 1}/{total}")
    return {name: value / total for name, value in sums.items()}


def select(unit_numels: dict[tuple[str, ...], int], unit_scores: dict[tuple[str, ...], float],
           high: dict[str, Any], ratio: float) -> tuple[dict[str, dict[str, Any]], int]:
    """Promote units in score order until ``1 - ratio`` of all scored weights are high."""
    threshold = sum(unit_numels.values()) * (1 - ratio)
    overrides: dict[str, dict[str, Any]] = {}
    promoted = 0
    for unit in sorted(unit_scores, key=lambda u: unit_scores[u]):
        promoted += unit_numels[unit]
        for name in unit:
            overrides[name] = dict(high)
        if promoted >= threshold:
            break
    return overrides, promoted


def scored(structure: Structure, algorithm: str, *, bits: int, group_size: int, sym: bool,
           high_bits: int, high_group_size: int, high_sym: bool, ratio: float,
           windows: torch.Tensor | None = None,
           progress: Callable[[float, float | None, str], None] | None = None) -> dict[str, Any]:
    """``mixed_precision_info`` of a score-based algorithm."""
    def low(w: torch.Tensor) -> torch.Tensor:
        return fake_quantize(w, bits, group_size, sym)

    def high(w: torch.Tensor) -> torch.Tensor:
        return fake_quantize(w, high_bits, high_group_size, high_sym)

    modules = linears(structure.model)
    for name, module in modules.items():
        k = module.in_features
        for g in (group_size, high_group_size):
            if g != -1 and k % g:
                from olivine import UsageError

                raise UsageError(f"group_size: {g} does not divide the {k} inputs of {name}")
    numels = {n: m.weight.numel() for n, m in modules.items()}
    if algorithm == "kld_gradient":
        assert windows is not None
        alignment = kld_alignment(structure.model, windows, low, high, progress)
        stats = {n: {"alignment": alignment[n]} for n in modules}
    else:
        with torch.no_grad():
            stats = {n: weight_stats(algorithm, m.weight.data, low, high) for n, m in modules.items()}
    unit_numels: dict[tuple[str, ...], int] = {}
    unit_scores: dict[tuple[str, ...], float] = {}
    grouped: set[str] = set()
    for group in structure.qkv_groups():
        if all(n in stats for n in group):
            numel = sum(numels[n] for n in group)
            unit_numels[group] = numel
            unit_scores[group] = score(algorithm, combine(algorithm, [stats[n] for n in group]), numel)
            grouped.update(group)
    for name in stats:
        if name not in grouped:
            unit_numels[(name,)] = numels[name]
            unit_scores[(name,)] = score(algorithm, stats[name], numels[name])
    high_cfg = {"bits": high_bits, "group_size": high_group_size, "symmetric": high_sym}
    overrides, promoted = select(unit_numels, unit_scores, high_cfg, ratio)
    log.info("%s: %d of %d units at %d bits; %.4f of the weights stay at %d bits", algorithm,
             sum(1 for u in unit_numels if u[0] in overrides), len(unit_numels), high_bits,
             1 - promoted / sum(unit_numels.values()), bits)
    return finish(structure, {"bits": bits, "group_size": group_size, "symmetric": sym}, overrides)
