"""AWQ (Lin et al., 2023): protect the weights that see large activations by scaling them up.

For each group of linears that read the same input, the input channels are scaled by
``s = mean|x| ** alpha`` (normalized), the weights multiplied by ``s`` and the
operation before them (an RMSNorm, or the linear that produces the input) divided by
``s``: the float model computes the same function, but rounding now spends its
precision on the channels that matter. ``alpha`` is chosen per group on a grid, by the
output error of the rounded weights on calibration inputs. The scaled model is then
rounded to nearest. Llama-style decoder layers only (Llama, Qwen2/3, Mistral).
"""

from __future__ import annotations

from typing import Any

import torch

from olivine import UsageError
from olivine_weightquant import core

MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")
NAMES = ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
         "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def check_awq_model(lm: Any) -> None:
    """Refuse models whose layers do not have the Llama layout AWQ's scale folding assumes."""
    model_type = str(lm.raw_config.get("model_type", ""))
    modules = dict(lm.layers[0].named_modules())
    missing = [n for n in NAMES if n not in modules]
    if model_type not in MODEL_TYPES or missing:
        raise UsageError(f"awq folds its scales into Llama-style layers ({', '.join(MODEL_TYPES)}); "
                         f"this model is {model_type or 'of unknown type'}"
                         + (f" and its layers lack {', '.join(missing)}" if missing else "")
                         + "; use gptq instead")


def _groups(layer: torch.nn.Module) -> list[tuple[torch.nn.Module, list[str]]]:
    m = dict(layer.named_modules())
    groups = [(m["input_layernorm"], ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
              (m["post_attention_layernorm"], ["mlp.gate_proj", "mlp.up_proj"]),
              (m["mlp.up_proj"], ["mlp.down_proj"])]
    v, o = m["self_attn.v_proj"], m["self_attn.o_proj"]
    if v.out_features == o.in_features:  # no grouped-query attention: o_proj's input is v_proj's output
        groups.insert(1, (v, ["self_attn.o_proj"]))
    return groups


@torch.no_grad()
def _best_scale(x: torch.Tensor, mean_abs: torch.Tensor, weights: list[torch.Tensor], options: Any
                ) -> torch.Tensor:
    ref = [x @ w.t() for w in weights]
    best, best_err = torch.ones_like(mean_abs), None
    for step in range(options.awq_grid):
        alpha = step / options.awq_grid
        s = mean_abs.clamp(min=1e-4).pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        err = 0.0
        for w, r in zip(weights, ref):
            q = core.rtn(w * s, options.bits, options.group_size, options.symmetric).dequantize() / s
            err += float((x @ q.t() - r).pow(2).mean())
        if best_err is None or err < best_err:
            best, best_err = s, err
    return best


@torch.no_grad()
def clip_weight(w: torch.Tensor, x: torch.Tensor, options: Any, ratios: int = 10) -> torch.Tensor:
    """Clip each block of ``W[N, K]`` to the fraction of its range whose rounding gives the
    smallest output error on the inputs ``x`` (AWQ's clipping search)."""
    n, k = w.shape
    gs = options.group_size
    g = core.grouped(w.float(), gs)  # [N, G, gs]
    xg = core.grouped(x.float(), gs)  # [T, G, gs]
    hi, lo = g.amax(-1, keepdim=True), g.amin(-1, keepdim=True)
    best_err = torch.full(g.shape[:2], float("inf"))
    best = g.clone()
    for step in range(ratios):
        r = 1.0 - step * 0.5 / ratios
        c = torch.maximum(torch.minimum(g, hi * r), lo * r)
        q = core.rtn(c.reshape(n, -1)[:, :k], options.bits, gs, options.symmetric).dequantize()
        diff = g - core.grouped(q, gs)  # [N, G, gs]
        err = torch.einsum("tgs,ngs->tng", xg, diff).pow(2).sum(0)  # [N, G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better.unsqueeze(-1), c, best)
    return best.reshape(n, -1)[:, :k]


@torch.no_grad()
def scale_layer(layer: torch.nn.Module, collector: Any, options: Any) -> None:
    """Find and fold AWQ scales into ``layer`` (in place), from the collector's inputs."""
    modules = dict(layer.named_modules())
    for prev, names in _groups(layer):
        leader = collector.leader.get(names[0])
        if leader is None or leader not in collector.samples:
            continue
        x = torch.cat(collector.samples[leader])
        mean_abs = collector.abs_mean[leader] / collector.tokens[leader]
        weights = [modules[n].weight.float() for n in names]
        s = _best_scale(x, mean_abs, weights, options)
        for n in names:
            w = modules[n].weight
            w.data = (w.float() * s).to(w.dtype)
        if isinstance(prev, torch.nn.Linear):
            prev.weight.data = (prev.weight.float() / s.unsqueeze(1)).to(prev.weight.dtype)
            bias: Any = prev.bias
            if bias is not None:
                bias.data = (bias.float() / s).to(bias.dtype)
        else:
            weight: Any = prev.weight
            weight.data = (weight.float() / s).to(weight.dtype)
        for n in names:
            if n.endswith(("q_proj", "k_proj")):
                continue  # attention scores amplify q/k clipping errors; AWQ leaves them unclipped
            w = modules[n].weight
            w.data = clip_weight(w.float(), x / s, options).to(w.dtype)
