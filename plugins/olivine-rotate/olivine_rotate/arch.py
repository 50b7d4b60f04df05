"""Where a Hugging Face decoder keeps its residual-stream readers and writers.

Llama-shaped models (``llama``, ``mistral``, ``qwen2``, ``qwen3``, ``phi3``, ``granite``:
RMSNorm before attention and MLP) are described by :class:`Decoder`. LayerNorm models
(OPT) are refused, as Olive's QuaRot refuses them. Weights are ``[out, in]`` (torch's
``nn.Linear``); a rotation ``Q`` of the residual stream turns a reader ``W`` into ``W Q`` and
a writer into ``Q^T W`` (and its bias ``b`` into ``b Q``). Every product is taken in float64
and cast back to the weight's dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from olivine import UsageError

#: model_type values with a Llama-shaped decoder (RMSNorm with a plain ``weight``)
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "phi3", "granite")


@attrs.define
class Layer:
    """One decoder layer's modules (packed projections where the model packs them)."""

    attn_norm: Any
    mlp_norm: Any
    attn_inputs: list[Any]
    attn_output: Any
    mlp_inputs: list[Any]
    mlp_output: Any
    #: (linear, first row, rows) of the value projection inside ``attn_inputs``
    value: tuple[Any, int, int]


@attrs.define
class Decoder:
    """A Llama-shaped causal LM: embeddings, layers, final norm and LM head."""

    model: Any
    embed: Any
    layers: list[Layer]
    final_norm: Any
    lm_head: Any
    head_dim: int

    @property
    def hidden_size(self) -> int:
        """The residual stream's width."""
        return int(self.embed.weight.shape[1])

    def norms(self) -> Iterator[tuple[Any, list[Any]]]:
        """Each norm and the linears that read its output."""
        for layer in self.layers:
            yield layer.attn_norm, layer.attn_inputs
            yield layer.mlp_norm, layer.mlp_inputs
        yield self.final_norm, [self.lm_head]


def _norm_problem(norm: Any) -> str | None:
    name = type(norm).__name__
    if "LayerNorm" in name and "RMS" not in name:
        return "the model uses LayerNorm; only RMSNorm models can be rotated here"
    if "Gemma" in name or "RMS" not in name or getattr(norm, "bias", None) is not None:
        return f"its norm {name} is not a plain RMSNorm (x / rms(x) * weight)"
    return None


def describe(model: Any, pass_name: str) -> Decoder:
    """The residual-stream modules of a loaded ``*ForCausalLM``; :class:`UsageError` for
    architectures olivine cannot rotate."""
    config = model.config
    kind = getattr(config, "model_type", "?")
    if kind == "opt":
        why = ("OPT uses LayerNorm; only RMSNorm models can be rotated (as in Olive)"
               if pass_name != "SliceGPT" else
               "OPT is not supported yet: its attention projections are hidden x hidden, so a "
               "sliced OPT is no longer an OPT checkpoint (olivine's SliceGPT writes ordinary "
               "checkpoints, and takes Llama-shaped models: " + ", ".join(LLAMA_LIKE) + ")")
        raise UsageError(f"{pass_name}: {why}")
    if kind not in LLAMA_LIKE:
        raise UsageError(f"{pass_name}: model type {kind!r} is not supported; supported: "
                         f"{', '.join(LLAMA_LIKE)}")
    inner = model.model
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    layers = []
    for block in inner.layers:
        attn, mlp = block.self_attn, block.mlp
        if hasattr(attn, "qkv_proj"):
            inputs = [attn.qkv_proj]
            value = (attn.qkv_proj, (heads + kv) * head_dim, kv * head_dim)
        else:
            inputs = [attn.q_proj, attn.k_proj, attn.v_proj]
            value = (attn.v_proj, 0, kv * head_dim)
        mlp_in = [mlp.gate_up_proj] if hasattr(mlp, "gate_up_proj") else [mlp.gate_proj, mlp.up_proj]
        layers.append(Layer(block.input_layernorm, block.post_attention_layernorm, inputs,
                            attn.o_proj, mlp_in, mlp.down_proj, value))
    decoder = Decoder(model, inner.embed_tokens, layers, inner.norm, model.lm_head, head_dim)
    for norm, _ in decoder.norms():
        problem = _norm_problem(norm)
        if problem:
            raise UsageError(f"{pass_name}: {problem}")
    return decoder


# -- weight algebra ---------------------------------------------------------------------------


def _set(param: Any, value: Any) -> None:
    param.data = value.to(param.dtype).contiguous()


def untie(model: Any) -> None:
    """Give the LM head its own weight (rotations treat embeddings and head differently)."""
    import torch

    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    if head.weight.data_ptr() == embed.weight.data_ptr() or head.weight is embed.weight:
        head.weight = torch.nn.Parameter(embed.weight.detach().clone())
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False


def fuse_norm(norm: Any, readers: list[Any]) -> None:
    """Fold the RMSNorm's scale into the linears reading it; the norm is left as scale 1."""
    g = norm.weight.data.double()
    for linear in readers:
        _set(linear.weight, linear.weight.data.double() * g[None, :])
    norm.weight.data.fill_(1.0)


def read_rotated(linear: Any, q: Any) -> None:
    """A reader of the rotated stream: ``W <- W Q`` (``Q`` may be ``[d, d']``: sliced)."""
    _set_weight(linear, linear.weight.data.double() @ q)


def write_rotated(linear: Any, q: Any) -> None:
    """A writer into the rotated stream: ``W <- Q^T W``, ``b <- b Q``."""
    _set_weight(linear, q.T @ linear.weight.data.double())
    if linear.bias is not None:
        _set_bias(linear, linear.bias.data.double() @ q)


def _set_weight(linear: Any, w: Any) -> None:
    import torch

    linear.weight = torch.nn.Parameter(w.to(linear.weight.dtype).contiguous(),
                                       requires_grad=False)
    if hasattr(linear, "in_features"):
        linear.out_features, linear.in_features = w.shape


def _set_bias(linear: Any, b: Any) -> None:
    import torch

    linear.bias = torch.nn.Parameter(b.to(linear.bias.dtype).contiguous(), requires_grad=False)


def rotate_heads_out(linear: Any, start: int, rows: int, r: Any) -> None:
    """Rotate each head's rows ``[start, start + rows)`` of a projection's output by ``r``."""
    hd = r.shape[0]
    w = linear.weight.data.double().clone()
    part = w[start:start + rows].reshape(-1, hd, w.shape[1])  # [heads, hd, in]
    w[start:start + rows] = (r.T[None] @ part).reshape(rows, w.shape[1])
    _set(linear.weight, w)
    if linear.bias is not None:
        b = linear.bias.data.double().clone()
        b[start:start + rows] = (b[start:start + rows].reshape(-1, hd) @ r).reshape(rows)
        _set(linear.bias, b)


def rotate_heads_in(linear: Any, r: Any) -> None:
    """Rotate each head's input columns of the attention output projection by ``r``."""
    hd = r.shape[0]
    w = linear.weight.data.double()
    out = (w.reshape(w.shape[0], -1, hd) @ r).reshape(w.shape)
    _set(linear.weight, out)
