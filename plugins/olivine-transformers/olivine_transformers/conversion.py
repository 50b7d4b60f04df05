"""The ``OnnxConversion`` pass: a Hugging Face (or user-loaded torch) model to ONNX.

This module is light: torch and transformers are imported by :mod:`._export`
when the pass runs.
"""

from __future__ import annotations

from typing import Any

import attrs

from olivine.accelerator import Accelerator
from olivine.models import ModelHandle, OnnxModel
from olivine.passes import Pass, PassContext

#: Tasks whose export and validation are implemented (others export like feature-extraction).
TASKS = ("feature-extraction", "text-classification", "sequence-classification",
         "token-classification", "fill-mask", "question-answering", "text-generation",
         "text-generation-with-past")


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name}: expected a number >= 0, got {value}")


def _opset(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 9 <= value <= 23:
        raise ValueError(f"target_opset: expected an ONNX opset between 9 and 23, got {value}")


#: Olive's KV-cache name templates (``<id>`` is the layer number) and olivine's defaults.
KV_NAME_KEYS = {"ort_past_key_name": "past_key_values.<id>.key",
                "ort_past_value_name": "past_key_values.<id>.value",
                "ort_present_key_name": "present.<id>.key",
                "ort_present_value_name": "present.<id>.value"}
#: Olive KVCacheConfig keys accepted but read from the model's config instead.
KV_DERIVED_KEYS = ("num_hidden_layers", "num_attention_heads", "hidden_size", "batch_size",
                   "dtype", "past_sequence_length", "shared_kv", "sequence_length_idx")


def _kv_cache(value: Any, io: dict[str, Any]) -> None:
    if value is None or isinstance(value, bool):
        if value and any(io.get(k) for k in ("input_names", "output_names", "dynamic_axes")):
            raise ValueError("io_config: input_names, output_names and dynamic_axes cannot be "
                             "combined with kv_cache (a cached decoder's inputs and outputs are "
                             "fixed; rename them with kv_cache's ort_*_name templates)")
        return
    if not isinstance(value, dict):
        raise ValueError(f"io_config.kv_cache: expected true, false or a mapping of "
                         f"{', '.join(KV_NAME_KEYS)}; got {value!r}")
    for key, template in value.items():
        if key in KV_NAME_KEYS:
            if "<id>" not in str(template):
                raise ValueError(f"io_config.kv_cache.{key}: {template!r} has no '<id>' for the "
                                 "layer number (e.g. 'past_key_<id>')")
        elif key not in KV_DERIVED_KEYS:
            raise ValueError(f"io_config.kv_cache: unknown key {key!r}; expected some of "
                             f"{', '.join(KV_NAME_KEYS)} (sizes come from the model's config)")
    _kv_cache(True, io)


def _io_config(instance: Any, attribute: attrs.Attribute, value: dict[str, Any] | None) -> None:
    from olivine.config.sections import IO_CONFIG_KEYS

    allowed = set(IO_CONFIG_KEYS)
    for key in value or {}:
        if key not in allowed:
            raise ValueError(f"io_config: unknown key {key!r}; expected some of "
                             f"{', '.join(sorted(allowed))}")
    if value:
        _kv_cache(value.get("kv_cache"), value)


@attrs.frozen
class ConversionConfig:
    """Options of ``OnnxConversion`` (Olive's names where Olive has them)."""

    target_opset: int = attrs.field(default=17, validator=_opset,
                                    metadata={"help": "ONNX opset of the exported model"})
    use_dynamo_exporter: bool = attrs.field(
        default=False, metadata={"help": "torch.onnx dynamo exporter (needs onnxscript); the "
                                         "default TorchScript exporter gives graphs that ONNX "
                                         "Runtime's transformer fusions recognize"})
    io_config: dict[str, Any] | None = attrs.field(
        default=None, validator=_io_config,
        metadata={"help": "input_names, output_names, dynamic_axes ({name: {axis: label}}), "
                          "input_shapes and input_types (for models loaded by model_loader); "
                          "kv_cache: true (or Olive's ort_*_name templates) exports a causal "
                          "LM with past_key_values.<i>.key/value inputs and present.<i>.key/"
                          "value outputs; default: derived from the model's forward"})
    dynamic_axes: bool = attrs.field(
        default=True, metadata={"help": "make batch and sequence axes dynamic (when io_config "
                                        "gives no dynamic_axes)"})
    attn_implementation: str | None = attrs.field(
        default="eager", metadata={"help": "transformers attention implementation used for the "
                                           "export; eager lets the fuser find attention"})
    torch_dtype: str | None = attrs.field(
        default=None, metadata={"help": "load the model in this dtype (float32, float16)"})
    validate: bool = attrs.field(
        default=True, metadata={"help": "compare ONNX Runtime outputs with torch outputs on sample "
                                        "inputs of a shape other than the export's; fail on mismatch"})
    atol: float = attrs.field(default=1e-4, validator=_positive,
                              metadata={"help": "absolute tolerance of the validation"})
    rtol: float = attrs.field(default=1e-3, validator=_positive,
                              metadata={"help": "relative tolerance of the validation"})
    model_script: str | None = attrs.field(
        default=None, metadata={"input_path": True,
                                "help": "a Python file defining model_loader (for torch models "
                                        "that are not transformers checkpoints)"})
    model_loader: str | None = attrs.field(
        default=None, metadata={"help": "function in model_script: loader(model_path) -> "
                                        "torch.nn.Module; io_config names its inputs"})
    save_as_external_data: bool = attrs.field(
        default=False, metadata={"help": "always write weights to model.onnx.data (models over "
                                         "1.8 GB always are)"})


class OnnxConversion(Pass):
    """Export a transformers model, or Olive's PyTorchModel (a user-loaded torch module), to
    ONNX and validate it against torch."""

    name = "OnnxConversion"
    aliases = ("onnx_conversion", "ConvertToOnnx")
    Config = ConversionConfig
    accepts = ("hf", "pytorch")
    produces = "onnx"
    libraries = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript")
    isolate = True
    version = "1"

    @classmethod
    def check(cls, config: ConversionConfig, accelerator: Accelerator,
              model: Any = None) -> list[str]:
        """Option combinations that cannot work."""
        problems = []
        if (config.model_script is None) != (config.model_loader is None):
            problems.append("model_script and model_loader go together: model_script names a "
                            "Python file, model_loader a function in it")
        if config.model_loader and not (config.io_config or {}).get("input_names"):
            problems.append("io_config.input_names is required with model_loader (the names of "
                            "the model's forward arguments)")
        if getattr(model, "kind", None) == "pytorch" and config.model_loader:
            problems.append("model_script and model_loader come from the PyTorchModel input; "
                            "leave them out of the pass")
        return problems

    def run(self, model: ModelHandle, config: ConversionConfig, context: PassContext) -> OnnxModel:
        """Load the model, export it, validate it, write it with its tokenizer files."""
        from olivine_transformers._export import convert

        return convert(model, config, context)
