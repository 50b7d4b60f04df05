"""The ``OnnxConversion`` pass: a Hugging Face (or user-loaded torch) model to ONNX.

This module is light: torch and transformers are imported by :mod:`._export`
when the pass runs.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from olivine import Accelerator, ModelHandle, OnnxModel, Pass, PassContext, option
from olivine.onnxsave import ExternalDataOptions

#: Tasks whose export and validation are implemented (others export like feature-extraction).
TASKS = ("feature-extraction", "text-classification", "sequence-classification",
         "token-classification", "fill-mask", "question-answering", "text-generation",
         "text-generation-with-past", "image-classification", "zero-shot-image-classification")


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
    from olivine.config import IO_CONFIG_KEYS

    allowed = set(IO_CONFIG_KEYS)
    for key in value or {}:
        if key not in allowed:
            raise ValueError(f"io_config: unknown key {key!r}; expected some of "
                             f"{', '.join(sorted(allowed))}")
    if value:
        _kv_cache(value.get("kv_cache"), value)


#: torch device types ``device`` may name (``cuda:1`` picks a card).
DEVICE = re.compile(r"^(cpu|cuda|xpu|mps|hpu|npu|mtia|privateuseone)(:\d+)?$")
#: ``torch_dtype`` names (Olive also takes them with a ``torch.`` prefix).
TORCH_DTYPES = ("float32", "float", "float16", "half", "bfloat16", "float64", "double")


def _device(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not DEVICE.match(value):
        raise ValueError(f"device: {value!r} is not a torch device; expected cpu, cuda or "
                         "cuda:<index> (or xpu, mps, ...)")


def _dtype(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and value.removeprefix("torch.") not in TORCH_DTYPES:
        raise ValueError(f"torch_dtype: {value!r} is not a floating torch dtype; expected one of "
                         f"{', '.join(TORCH_DTYPES)}")


def _name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.isidentifier():
        raise ValueError(f"{attribute.name}: {value!r} is not a Python argument name")


def _optional_positive(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None:
        _positive(instance, attribute, value)


@attrs.frozen
class ConversionConfig(ExternalDataOptions):
    """Options of ``OnnxConversion``: every option of Olive 0.13's (names and defaults), then
    olivine's own (validation, attention implementation, model_script)."""

    target_opset: int = attrs.field(default=20, validator=_opset,
                                    metadata=option(help="ONNX opset of the exported model"))
    use_dynamo_exporter: bool = attrs.field(
        default=False, metadata=option(help="torch.onnx dynamo exporter (needs onnxscript); the "
                                            "default TorchScript exporter gives graphs that ONNX "
                                            "Runtime's transformer fusions recognize"))
    past_key_value_name: str = attrs.field(
        default="past_key_values", validator=_name,
        metadata=option(help="the forward argument that takes the past key values (exports with "
                             "io_config.kv_cache or a -with-past task)"))
    device: str | None = attrs.field(
        default=None, validator=_device,
        metadata=option(help="torch device the export runs on (default cpu); a device torch cannot "
                             "see on this machine is an error when the pass runs"))
    torch_dtype: str | None = attrs.field(
        default=None, validator=_dtype,
        metadata=option(help="cast the model (and float sample inputs) to this dtype before export "
                             "(float32, float16, bfloat16); default: as loaded"))
    parallel_jobs: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0)),
        metadata=option(help="Olive's parallel export of a DistributedHfModel's ranks; olivine has "
                             "no distributed models, so setting it is refused"))
    merge_adapter_weights: bool = attrs.field(
        default=False, metadata=option(help="with an adapter (an HfModel's adapter_path, or the "
                                            "output of LoRA, DoRA, LoHa, LoKr, QLoRA): merge it "
                                            "into the base weights (true) or export the adapter's "
                                            "ops beside them (false, needs peft either way)"))
    save_metadata_for_token_generation: bool = attrs.field(
        default=False, metadata=option(help="write config.json, generation_config.json and the "
                                            "tokenizer files beside the model (HfModel inputs); "
                                            "listed in the model's additional_files"))
    optimize: bool = attrs.field(
        default=True, metadata=option(help="constant folding and redundancy elimination: the dynamo "
                                           "exporter's onnxscript optimizer, the TorchScript "
                                           "exporter's constant folding"))
    dynamic: bool = attrs.field(
        default=True, metadata=option(help="export with dynamic axes (io_config's, else batch and "
                                           "sequence); false: every axis fixed at the sample's size"))
    user_script: str | None = attrs.field(
        default=None, metadata=option(input_path=True,
                                help="a Python file imported before the export (Olive's "
                                     "user_script; it may register data components)"))
    script_dir: str | None = attrs.field(
        default=None, metadata=option(input_path=True,
                                help="a folder put on sys.path before user_script is imported"))
    io_config: dict[str, Any] | None = attrs.field(
        default=None, validator=_io_config,
        metadata=option(help="input_names, output_names, dynamic_axes ({name: {axis: label}}), "
                             "input_shapes and input_types (for models loaded by model_loader); "
                             "kv_cache: true (or Olive's ort_*_name templates) exports a causal "
                             "LM with past_key_values.<i>.key/value inputs and present.<i>.key/"
                             "value outputs; default: derived from the model's forward"))
    attn_implementation: str | None = attrs.field(
        default="eager", metadata=option(help="transformers attention implementation used for the "
                                              "export; eager lets the fuser find attention"))
    validate: bool = attrs.field(
        default=True, metadata=option(help="compare ONNX Runtime outputs with torch outputs on sample "
                                           "inputs of a shape other than the export's; fail on mismatch"))
    atol: float | None = attrs.field(
        default=None, validator=_optional_positive,
        metadata=option(help="absolute tolerance of the validation (default 1e-4; 1e-2 with "
                             "torch_dtype float16/bfloat16)"))
    rtol: float | None = attrs.field(
        default=None, validator=_optional_positive,
        metadata=option(help="relative tolerance of the validation (default 1e-3; 1e-2 with "
                             "torch_dtype float16/bfloat16)"))
    model_script: str | None = attrs.field(
        default=None, metadata=option(input_path=True,
                                help="a Python file defining model_loader (for torch models "
                                     "that are not transformers checkpoints)"))
    model_loader: str | None = attrs.field(
        default=None, metadata=option(help="function in model_script: loader(model_path) -> "
                                           "torch.nn.Module; io_config names its inputs"))

    def half(self) -> bool:
        """Whether the export runs in a 16-bit float dtype."""
        return (self.torch_dtype or "").removeprefix("torch.") in ("float16", "half", "bfloat16")

    def tolerances(self) -> tuple[float, float]:
        """(atol, rtol) of the validation: the given ones, else the defaults for the dtype."""
        default = 1e-2 if self.half() else None
        atol = self.atol if self.atol is not None else (default or 1e-4)
        rtol = self.rtol if self.rtol is not None else (default or 1e-3)
        return atol, rtol


class OnnxConversion(Pass):
    """Export a transformers model, or Olive's PyTorchModel (a user-loaded torch module), to
    ONNX and validate it against torch.

    An adapter (the output of LoRA, QLoRA, DoRA, LoHa or LoKr, or an HfModel's
    ``adapter_path``) is applied with peft to its base model and exported merged or not
    (``merge_adapter_weights``).
    """

    name = "OnnxConversion"
    aliases = ("onnx_conversion", "ConvertToOnnx")
    Config = ConversionConfig
    accepts = ("hf", "pytorch", "adapter")
    produces = "onnx"
    libraries = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript")
    isolate = True
    preload = ("olivine_transformers._export", "transformers", "onnx", "onnxruntime")
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
        if config.parallel_jobs is not None:
            problems.append("parallel_jobs: applies to a DistributedHfModel's ranks (Olive's "
                            "tensor-parallel export), which olivine does not have; remove it")
        kind = getattr(model, "kind", None)
        if config.save_metadata_for_token_generation and (kind == "pytorch" or config.model_loader):
            problems.append("save_metadata_for_token_generation: writes a transformers model's "
                            "config, generation config and tokenizer; the input is a torch "
                            "module (PyTorchModel/model_loader) with none of them")
        if config.merge_adapter_weights and model is not None and kind not in ("hf", "adapter"):
            problems.append("merge_adapter_weights: merges an adapter (an HfModel's adapter_path "
                            f"or a LoRA-family step's output); the input is a {kind} model")
        if kind == "adapter" and config.model_loader:
            problems.append("model_script/model_loader: the input is an adapter of a Hugging "
                            "Face model, loaded with transformers and peft; remove them")
        if config.script_dir and not config.user_script:
            problems.append("script_dir: only used with user_script (it is put on sys.path "
                            "before user_script is imported)")
        return problems

    def run(self, model: ModelHandle, config: ConversionConfig, context: PassContext) -> OnnxModel:
        """Load the model, export it, validate it, write it with its tokenizer files."""
        from olivine_transformers._export import convert

        return convert(model, config, context)
