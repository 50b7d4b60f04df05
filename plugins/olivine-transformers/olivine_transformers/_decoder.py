"""Causal LM export *with* past key values: the graph a generation loop runs step by step.

Inputs: ``input_ids``, ``attention_mask`` (past plus new tokens), ``position_ids`` (when
the model takes them) and ``past_key_values.<i>.key`` / ``.value`` per layer; outputs:
``logits`` and ``present.<i>.key`` / ``.value`` (the names onnxruntime-genai and Olive
use). The transformers 5 cache is a ``DynamicCache`` object, so :class:`CacheWrapper`
rebuilds one from the flat past tensors and flattens the updated cache again.

The export is validated the way it is used: a batch with a past against torch, then a
prefill with an empty past followed by decode steps that feed each step's presents back
in, compared with torch's logits at every step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from olivine import HfModel, OlivineError, OnnxModel, PassContext, UsageError
from olivine_transformers.conversion import KV_NAME_KEYS, ConversionConfig

log = logging.getLogger("olivine.pass.OnnxConversion")

def wants_past(model: HfModel, io: dict[str, Any]) -> bool:
    """Whether this export carries past key values (``io_config.kv_cache`` or the task)."""
    kv = io.get("kv_cache")
    if kv is None:
        return model.task.endswith("-with-past")
    return bool(kv)


def cache_names(io: dict[str, Any]) -> dict[str, str]:
    """The four name templates with ``io_config.kv_cache``'s overrides (validated by the config)."""
    kv = io.get("kv_cache")
    names = dict(KV_NAME_KEYS)
    if isinstance(kv, dict):
        names.update({k: str(v) for k, v in kv.items() if k in KV_NAME_KEYS})
    return names


class CacheWrapper(torch.nn.Module):
    """Runs a causal LM on flat past tensors; returns logits and the flat present tensors."""

    def __init__(self, model: torch.nn.Module, layers: int, with_positions: bool,
                 past_name: str = "past_key_values") -> None:
        super().__init__()
        self.model = model
        self.model_config: Any = model.config
        self.layers = layers
        self.with_positions = with_positions
        self.past_name = past_name

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``rest`` is ``position_ids`` (when taken) then key, value for each layer."""
        from transformers.cache_utils import DynamicCache

        kwargs: dict[str, Any] = {}
        if self.with_positions:
            kwargs["position_ids"], rest = rest[0], rest[1:]
        pairs = [(rest[2 * i], rest[2 * i + 1]) for i in range(self.layers)]
        cache = DynamicCache(ddp_cache_data=pairs, config=self.model_config)
        kwargs[self.past_name] = cache
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                         return_dict=True, **kwargs)
        flat: list[torch.Tensor] = [out.logits]
        for layer in out.past_key_values.layers:
            flat += [layer.keys, layer.values]
        return tuple(flat)


class CacheLayout:
    """Names and shapes of the past tensors of one model (found by running it once)."""

    def __init__(self, model: torch.nn.Module, names: dict[str, str]) -> None:
        import inspect

        self.with_positions = "position_ids" in inspect.signature(model.forward).parameters
        with torch.no_grad():
            out = model(input_ids=torch.ones(1, 2, dtype=torch.int64), use_cache=True,
                        return_dict=True)
        layers = getattr(out.past_key_values, "layers", None)
        if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
            raise UsageError(f"{type(model).__name__} does not return a key/value cache that can be "
                             "exported (no DynamicCache layers); export it without kv_cache")
        self.layers = len(layers)
        self.key_shape = list(layers[0].keys.shape[1:])  # heads, seq, head dim
        self.value_shape = list(layers[0].values.shape[1:])
        self.dtype = layers[0].keys.dtype
        self.past = [names[f"ort_past_{kind}_name"].replace("<id>", str(i))
                     for i in range(self.layers) for kind in ("key", "value")]
        self.present = [names[f"ort_present_{kind}_name"].replace("<id>", str(i))
                        for i in range(self.layers) for kind in ("key", "value")]
        self.inputs = ["input_ids", "attention_mask",
                       *(["position_ids"] if self.with_positions else []), *self.past]
        self.outputs = ["logits", *self.present]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Batch, sequence and total-sequence axes of every input and output."""
        axes: dict[str, dict[int, str]] = {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
        if self.with_positions:
            axes["position_ids"] = {0: "batch_size", 1: "sequence_length"}
        for name in self.past:
            axes[name] = {0: "batch_size", 2: "past_sequence_length"}
        for name in self.present:
            axes[name] = {0: "batch_size", 2: "total_sequence_length"}
        return axes

    def feeds(self, ids: torch.Tensor, mask: torch.Tensor,
              past: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The positional inputs of :class:`CacheWrapper` (position ids from the mask)."""
        out = [ids, mask]
        if self.with_positions:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, mask.shape[1] - ids.shape[1]:]
            out.append(positions)
        return out + list(past)

    def random_past(self, batch: int, length: int, seed: int) -> list[torch.Tensor]:
        """Random past tensors (the scale of real keys and values)."""
        gen = torch.Generator().manual_seed(seed)
        past = []
        for _ in range(self.layers):
            past.append(torch.randn(batch, self.key_shape[0], length, self.key_shape[2],
                                    generator=gen).to(self.dtype))
            past.append(torch.randn(batch, self.value_shape[0], length, self.value_shape[2],
                                    generator=gen).to(self.dtype))
        return past


def sample(layout: CacheLayout, batch: int, seq: int, past: int, vocab: int,
           seed: int) -> list[torch.Tensor]:
    """Token ids, a mask with left padding in row 1 (inside the past), positions, a past."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(max(vocab // 10, 1), 1000), vocab, (batch, seq), generator=gen)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    if batch > 1 and past >= 2:
        mask[1, :2] = 0
    return layout.feeds(ids, mask, layout.random_past(batch, past, seed))


def convert_with_past(model: HfModel, config: ConversionConfig, context: PassContext) -> OnnxModel:
    """Export ``model`` with past key values into ``context.work_dir``; validate; return it."""
    from olivine.onnxsave import plain_data
    from olivine_transformers._export import _export, load_hf_model, save_exported
    from olivine_transformers._metadata import hf_attributes, write_sidecars

    io = plain_data(dict(config.io_config or model.io_config_dict()))
    names = cache_names(io)
    if not config.dynamic:
        raise UsageError("dynamic: false cannot export a decoder with past key values: its past "
                         "and total sequence axes must grow at every generation step; export it "
                         "with dynamic: true")
    context.progress(0, 5, f"loading {model.path}")
    torch_model = load_hf_model(model, config)
    import inspect

    params = inspect.signature(torch_model.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if config.past_key_value_name not in params and not takes_any:
        cached = [p for p in params if "past" in p or "cache" in p]
        raise UsageError(f"past_key_value_name: {type(torch_model).__name__}.forward has no "
                         f"argument {config.past_key_value_name!r} (its cache arguments: "
                         f"{', '.join(cached) or 'none'})")
    layout = CacheLayout(torch_model, names)
    vocab = int(getattr(torch_model.config, "vocab_size", 1000))
    wrapper = CacheWrapper(torch_model, layout.layers, layout.with_positions,
                           config.past_key_value_name).eval()
    export_inputs = dict(zip(layout.inputs, sample(layout, 2, 7, 4, vocab, seed=0), strict=True))
    with torch.no_grad():
        present = wrapper(*export_inputs.values())[1]
    if present.shape[2] != 4 + 7:  # the past (4) was not used: the name did not reach the cache
        raise UsageError(f"past_key_value_name: {type(torch_model).__name__} ignored the past "
                         f"passed as {config.past_key_value_name!r} (present length "
                         f"{present.shape[2]}, expected 11); transformers models take "
                         "'past_key_values'")
    exporter = "dynamo" if config.use_dynamo_exporter else "torchscript"
    context.progress(1, 5, f"exporting with past key values ({exporter}, {layout.layers} layers, "
                           f"opset {config.target_opset})")
    proto = _export(wrapper, export_inputs, layout.inputs, layout.outputs, layout.dynamic_axes(),
                    config, model.path)
    target = save_exported(proto, context.work_dir, config)
    del proto
    diffs: dict[str, float] = {}
    if config.validate:
        context.progress(2, 5, "validating a step with a past, then prefill and decode steps")
        diffs = validate_with_past(target, wrapper, layout, vocab, config)
        log.info("export validated: max abs difference %s", diffs)
    context.progress(4, 5, "writing tokenizer and config files")
    write_sidecars(model, torch_model, context.work_dir, config)
    attributes: dict[str, Any] = {
        "exporter": exporter, "opset": config.target_opset, "input_names": layout.inputs,
        "output_names": layout.outputs, "validation_max_abs_diff": diffs, "kv_cache": True,
        "num_kv_layers": layout.layers,
        **hf_attributes(model, torch_model, context.work_dir, config)}
    context.progress(5, 5, "done")
    return OnnxModel(path=str(context.work_dir), onnx_file_name=target.name,
                     attributes={**model.attrs_dict(), **attributes})


def _compare(label: str, got: Sequence[np.ndarray], want: Sequence[torch.Tensor],
             names: Sequence[str], config: ConversionConfig, diffs: dict[str, float]) -> list[str]:
    from olivine_transformers._export import to_numpy

    atol, rtol = config.tolerances()
    bad = []
    for name, g, w in zip(names, got, want, strict=True):
        ref = to_numpy(w)
        if g.shape != ref.shape:
            bad.append(f"{label}: {name!r} has shape {list(g.shape)} in ONNX Runtime but "
                       f"{list(ref.shape)} in torch")
            continue
        diff = float(np.max(np.abs(g.astype(np.float64) - ref.astype(np.float64)))) if g.size else 0.0
        diffs[name] = max(diffs.get(name, 0.0), diff)
        if not np.allclose(g, ref, atol=atol, rtol=rtol):
            bad.append(f"{label}: {name!r} differs from torch by max abs {diff:.3g} "
                       f"(atol={atol:g}, rtol={rtol:g})")
    return bad


def validate_with_past(path: Path, wrapper: CacheWrapper, layout: CacheLayout, vocab: int,
                       config: ConversionConfig) -> dict[str, float]:
    """Compare ONNX Runtime with torch: one cached step, then prefill + 3 decode steps."""
    from olivine_transformers._export import cpu_session

    try:
        session = cpu_session(path)
    except Exception as exc:
        raise OlivineError(f"the exported model does not load in ONNX Runtime: "
                           f"{type(exc).__name__}: {exc}") from exc

    def run(inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
        from olivine_transformers._export import to_numpy

        feeds = {n: to_numpy(t) for n, t in zip(layout.inputs, inputs, strict=True)}
        try:
            return list(session.run(layout.outputs, feeds))
        except Exception as exc:
            raise OlivineError(f"the exported model does not run in ONNX Runtime: "
                               f"{type(exc).__name__}: {exc}") from exc

    diffs: dict[str, float] = {}
    bad: list[str] = []
    step = sample(layout, 3, 5, 6, vocab, seed=1)
    with torch.no_grad():
        bad += _compare("batch 3 x 5 tokens after a past of 6", run(step), wrapper(*step),
                        layout.outputs, config, diffs)
    # generation as a runtime does it: empty past, prefill, then one token at a time
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(min(max(vocab // 10, 1), 1000), vocab, (2, 6), generator=gen)
    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[1, :2] = 0  # left padding
    past_ort: list[Any] = layout.random_past(2, 0, seed=0)
    past_torch = list(past_ort)
    for n in range(4):
        inputs_ort = layout.feeds(ids, mask, [torch.from_numpy(np.asarray(p)) for p in past_ort])
        inputs_torch = layout.feeds(ids, mask, past_torch)
        got = run(inputs_ort)
        with torch.no_grad():
            want = wrapper(*inputs_torch)
        label = "prefill" if n == 0 else f"decode step {n}"
        bad += _compare(label, got[:1], want[:1], ["logits"], config, diffs)
        past_ort, past_torch = got[1:], list(want[1:])
        ids = want[0][:, -1:].argmax(-1)
        mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.int64)], dim=1)
    if bad:
        raise OlivineError("exported model does not match torch: " + "; ".join(bad))
    return diffs
