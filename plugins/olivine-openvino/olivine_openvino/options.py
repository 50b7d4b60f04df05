"""Options of Olive 0.13's OpenVINO passes: names, defaults and checks.

Every option Olive declares is here; an unknown one is a config error (the host derives
that from these attrs classes). Nested dictionaries Olive hands to OpenVINO, NNCF or
optimum-intel are checked key by key against what those libraries take.
"""

from __future__ import annotations

from typing import Any

import attrs

import olivine
from olivine import did_you_mean

DEVICES = ("cpu", "cpu_spr", "gpu", "npu", "vpu", "intel_myriad", "any")
SCOPE_TYPES = ("names", "types", "patterns")
LIBRARIES = ("transformers", "diffusers", "timm", "sentence_transformers", "open_clip")
FRAMEWORKS = ("pt", "tf")
WEIGHT_FORMATS = ("fp32", "fp16", "int8", "int4", "mxfp4", "nf4")
QUANT_MODES = ("int8", "f8e4m3", "f8e5m2", "nf4_f8e4m3", "nf4_f8e5m2", "int4_f8e4m3",
               "int4_f8e5m2")
BACKUP_MODES = ("none", "int8_sym", "int8_asym")
SENSITIVITY = ("weight_quantization_error", "hessian_input_activation",
               "mean_activation_variance", "max_activation_variance", "mean_activation_magnitude")

#: ov_quant_config keys (Olive hands them to optimum-intel's OVWeightQuantizationConfig /
#: OVQuantizationConfig). ``all-layers`` is optimum-cli's spelling of all_layers; ``task``
#: names the export task when extra_args gives none.
OV_QUANT_KEYS = ("weight_format", "quant_mode", "ratio", "group_size", "sym", "all_layers",
                 "all-layers", "dataset", "num_samples", "awq", "scale_estimation", "gptq",
                 "lora_correction", "sensitivity_metric", "backup_precision", "statistics_path",
                 "quantization_statistics_path", "group_size_fallback", "smooth_quant_alpha",
                 "cache_dir", "trust_remote_code", "task")
#: optimum.exporters.openvino.main_export keyword arguments, plus Olive's own extra_args
EXPORT_KEYS = ("task", "device", "framework", "cache_dir", "trust_remote_code", "pad_token_id",
               "subfolder", "revision", "force_download", "local_files_only", "token",
               "model_kwargs", "custom_export_configs", "fn_get_submodels", "ov_config",
               "stateful", "convert_tokenizer", "variant", "model_loading_kwargs",
               "library", "disable_stateful", "disable_convert_tokenizer")
#: nncf.compress_weights keyword arguments (compress_config)
COMPRESS_KEYS = ("mode", "ratio", "group_size", "all_layers", "sensitivity_metric",
                 "subset_size", "awq", "scale_estimation", "gptq", "lora_correction",
                 "backup_mode", "compression_format")
COMPRESS_MODES = ("int8_sym", "int8_asym", "int4_sym", "int4_asym", "nf4", "cb4", "mxfp4",
                  "mxfp8_e4m3", "fp8_e4m3", "fp4", "int8", "int4")
COMPRESSION_FORMATS = ("dequantize", "fq", "fq_lora", "fq_lora_nls", "codebook")
#: OpenVINOWeightCompression extra_args keys Olive reads, and main_export's for HF inputs
WC_EXTRA_KEYS = ("model_type", "preset", "library", "advanced_compression_parameters",
                 "tokenizer", "use_onnx", "target_opset", *EXPORT_KEYS)
#: openvino.convert_model keyword arguments (OpenVINOConversion.extra_configs)
CONVERT_KEYS = ("input", "output", "example_input", "extension", "verbose", "share_weights")
#: keys of one OpenVINOQuantization extra_configs entry
QUANT_EXTRA_KEYS = ("advanced_quantization_parameters",)
GENAI_OVERRIDE_KEYS = ("model", "search")


def _unknown_keys(name: str, value: dict[str, Any] | None, known: tuple[str, ...],
                  what: str) -> None:
    for key in value or {}:
        if key not in known:
            raise ValueError(f"{name}.{key}: unknown key{did_you_mean(key, known)}; {what} takes "
                             f"{', '.join(known)}")


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value is not None and str(value).lower() not in {c.lower() for c in choices}:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}"
                         f"{did_you_mean(str(value), choices)}")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _device(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    _one_of(attribute.name, value, DEVICES)


def _scope(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    scope, kind = instance.ignored_scope, instance.ignored_scope_type
    if attribute.name != "ignored_scope_type":
        return
    if bool(scope) != bool(kind):
        raise ValueError("ignored_scope and ignored_scope_type go together: give both or neither")
    if isinstance(kind, list):
        for k in kind:
            _one_of("ignored_scope_type", k, SCOPE_TYPES)
        if len(set(kind)) != len(kind):
            raise ValueError("ignored_scope_type: each type at most once")
        if not (isinstance(scope, list) and all(isinstance(s, list) for s in scope)
                and len(scope) == len(kind)):
            raise ValueError("ignored_scope: with a list of ignored_scope_type, a list of lists, "
                             "one per type")
    elif kind is not None:
        _one_of("ignored_scope_type", kind, SCOPE_TYPES)
        if not (isinstance(scope, list) and all(isinstance(s, str) for s in scope)):
            raise ValueError("ignored_scope: a list of names (one ignored_scope_type)")


def _path(help_: str) -> Any:
    return attrs.field(default=None, metadata=olivine.option(input_path=True, help=help_))


@attrs.frozen
class UserScriptOptions:
    """Olive's ``user_script`` / ``script_dir`` (where named functions live)."""

    user_script: str | None = _path("Python file defining the functions other options name")
    script_dir: str | None = _path("folder put on sys.path while user_script runs")


@attrs.frozen
class ConversionConfig(UserScriptOptions):
    """Options of ``OpenVINOConversion`` (``openvino.convert_model``)."""

    input_shapes: list[Any] | str | None = attrs.field(default=None, metadata=olivine.option(
        help="input shapes (list of lists), or the name of a user_script function returning "
                "them; with static, the IR gets these shapes"))
    example_input_func: str | None = attrs.field(default=None, metadata=olivine.option(
        help="user_script function returning example inputs for tracing a torch model"))
    compress_to_fp16: bool = attrs.field(default=True, metadata=olivine.option(
        help="store weights as fp16 in the .bin"))
    extra_configs: dict[str, Any] | None = attrs.field(default=None, metadata=olivine.option(
        help="more openvino.convert_model arguments: " + ", ".join(CONVERT_KEYS)))
    model_name: str = attrs.field(default="ov_model", metadata=olivine.option(
        help="file stem of the written .xml/.bin"))
    static: bool = attrs.field(default=True, metadata=olivine.option(
        help="give the IR input_shapes (static shapes); false keeps them dynamic"))

    def __attrs_post_init__(self) -> None:
        _unknown_keys("extra_configs", self.extra_configs, CONVERT_KEYS, "openvino.convert_model")
        from olivine import component_problem

        problem = component_problem(self.model_name)
        if problem:
            raise ValueError(f"model_name: {problem}")


@attrs.frozen
class IoUpdateConfig(UserScriptOptions):
    """Options of ``OpenVINOIoUpdate`` (names for unnamed inputs/outputs; static reshape)."""

    extra_configs: dict[str, Any] | None = attrs.field(default=None, metadata=olivine.option(
        help="declared by Olive but read by no code of this pass: must stay unset"))
    input_shapes: list[list[int]] | None = attrs.field(default=None, metadata=olivine.option(
        help="with static: one shape per model input"))
    input_names: list[str] | None = attrs.field(default=None, metadata=olivine.option(
        help="new names of the model's inputs, one per input, in order"))
    static: bool = attrs.field(default=False, metadata=olivine.option(
        help="reshape the IR to input_shapes (written <name>_st); else <name>_dy"))
    reuse_cache: bool = attrs.field(default=False, metadata=olivine.option(
        help="Olive: overwrite the input's files to save disk; olivine's cache never "
                "changes an earlier step, so the output is written apart either way"))

    def __attrs_post_init__(self) -> None:
        if self.extra_configs:
            raise ValueError("extra_configs: Olive's OpenVINOIoUpdate declares it but never reads "
                             "it; remove it")
        if self.static and not self.input_shapes:
            raise ValueError("input_shapes: required with static: true (one shape per input)")


@attrs.frozen
class EncapsulationConfig:
    """Options of ``OpenVINOEncapsulation`` (an ONNX model with one EPContext node)."""

    target_device: str = attrs.field(
        default="cpu", converter=_lower, validator=_device, metadata=olivine.option(
        help="device the encapsulated model runs on (EPContext DeviceClass): cpu, gpu, npu"))
    ov_version: str | None = attrs.field(default=None, metadata=olivine.option(
        help="OpenVINO version written as ep_sdk_version (default: the installed one)"))
    opset_imports: list[list[Any]] = attrs.field(factory=lambda: [
        ["com.microsoft.nchwc", 1], ["", 11], ["ai.onnx.ml", 5], ["com.ms.internal.nhwc", 11],
        ["ai.onnx.training", 1], ["ai.onnx.preview.training", 1],
        ["com.microsoft.experimental", 1], ["com.microsoft", 1], ["org.pytorch.aten", 1]],
        metadata=olivine.option(help="[domain, version] pairs of the context model"))
    keep_ov_dynamic_dims: bool = attrs.field(default=False, metadata=olivine.option(
        help="dynamic dims as -1 (true) or as named symbolic dims (false)"))
    reuse_cache: bool = attrs.field(default=False, metadata=olivine.option(
        help="Olive: move instead of copy the IR; olivine writes the output apart either way"))
    genai_config_override: dict[str, Any] | None = attrs.field(default=None, metadata=olivine.option(
        help="overrides merged into the written genai_config.json (keys model, search)"))

    def __attrs_post_init__(self) -> None:
        for pair in self.opset_imports:
            if not (isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str)
                    and isinstance(pair[1], int)):
                raise ValueError(f"opset_imports: {pair!r} is not a [domain, version] pair")
        _unknown_keys("genai_config_override", self.genai_config_override, GENAI_OVERRIDE_KEYS,
                      "genai_config.json")
        if self.ov_version is not None:
            parts = self.ov_version.split(".")
            ok = all(p.isdigit() for p in parts)
            if not ok or (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) < (2025, 1):
                raise ValueError(f"ov_version: {self.ov_version!r} is not an OpenVINO version of "
                                 "2025.1 or later (like \"2025.1\")")


@attrs.frozen
class QuantizationConfig(UserScriptOptions):
    """Options of ``OpenVINOQuantization`` and ``OpenVINOQuantizationWithAccuracy`` (NNCF PTQ)."""

    data_config: str = attrs.field(kw_only=True, metadata=olivine.option(
        data_config=True, help="calibration data (an entry of data_configs)"))
    model_type: str | None = attrs.field(default=None, converter=_upper, metadata=olivine.option(
        help="TRANSFORMER: NNCF's transformer scheme (keeps some ops float)"))
    preset: str = attrs.field(default="PERFORMANCE", converter=_upper, metadata=olivine.option(
        help="PERFORMANCE (symmetric) or MIXED (asymmetric activations)"))
    ignored_scope: list[Any] | None = attrs.field(default=None, metadata=olivine.option(
        help="nodes to keep float: names/types/patterns (see ignored_scope_type)"))
    ignored_scope_type: Any = attrs.field(default=None, validator=_scope, metadata=olivine.option(
        help="names, types or patterns (or a list of them, with a list of lists)"))
    target_device: str = attrs.field(default="cpu", converter=_lower, validator=_device,
                                     metadata=olivine.option(help="NNCF target device: cpu, gpu, npu, ..."))
    transform_fn: str | None = attrs.field(default=None, metadata=olivine.option(
        help="user_script function: dataloader item -> model inputs (default: the inputs of "
                "an (inputs, label) item)"))
    validation_func: str | None = attrs.field(default=None, metadata=olivine.option(
        help="WithAccuracy: user_script function (compiled_model, validation data) -> metric"))
    max_drop: float = attrs.field(default=0.01, metadata=olivine.option(
        help="WithAccuracy: largest accepted drop of the validation metric"))
    drop_type: str = attrs.field(default="ABSOLUTE", converter=_upper, metadata=olivine.option(
        help="WithAccuracy: ABSOLUTE or RELATIVE max_drop"))
    extra_configs: list[dict[str, Any]] | None = attrs.field(default=None, metadata=olivine.option(
        help="[{\"advanced_quantization_parameters\": {...}}]: nncf.AdvancedQuantizationParameters"))
    reuse_cache: bool = attrs.field(default=False, metadata=olivine.option(
        help="Olive: overwrite the input's files; olivine writes the output apart either way"))

    def __attrs_post_init__(self) -> None:
        _one_of("model_type", self.model_type, ("TRANSFORMER",))
        _one_of("preset", self.preset, ("PERFORMANCE", "MIXED"))
        _one_of("drop_type", self.drop_type, ("ABSOLUTE", "RELATIVE"))
        for i, entry in enumerate(self.extra_configs or []):
            if not isinstance(entry, dict):
                raise ValueError(f"extra_configs[{i}]: expected an object")
            _unknown_keys(f"extra_configs[{i}]", entry, QUANT_EXTRA_KEYS, "an entry")
        if self.transform_fn and not self.user_script:
            raise ValueError("transform_fn: names a function, so user_script is required")
        if self.validation_func and not self.user_script:
            raise ValueError("validation_func: names a function, so user_script is required")


@attrs.frozen
class WeightCompressionConfig(UserScriptOptions):
    """Options of ``OpenVINOWeightCompression`` (``nncf.compress_weights``)."""

    data_config: str | None = attrs.field(default=None, metadata=olivine.option(
        data_config=True, help="data for data-aware compression (AWQ, scale estimation, "
                                     "GPTQ, mixed precision by activations)"))
    ignored_scope: list[Any] | None = attrs.field(default=None, metadata=olivine.option(
        help="nodes to leave uncompressed (see ignored_scope_type)"))
    ignored_scope_type: Any = attrs.field(default=None, validator=_scope, metadata=olivine.option(
        help="names, types or patterns (or a list of them)"))
    target_device: str = attrs.field(default="cpu", converter=_lower, validator=_device,
                                     metadata=olivine.option(help="NNCF target device"))
    transform_fn: str | None = attrs.field(default=None, metadata=olivine.option(
        help="user_script function: dataloader item -> model inputs"))
    extra_args: dict[str, Any] | None = attrs.field(default=None, metadata=olivine.option(
        help="model_type, preset, library, advanced_compression_parameters, tokenizer, "
                "use_onnx, target_opset, and optimum export arguments for HF inputs"))
    compress_config: dict[str, Any] | None = attrs.field(default=None, metadata=olivine.option(
        help="nncf.compress_weights arguments: " + ", ".join(COMPRESS_KEYS)))
    reuse_cache: bool = attrs.field(default=False, metadata=olivine.option(
        help="Olive: overwrite the input's files; olivine writes the output apart either way"))

    def __attrs_post_init__(self) -> None:
        cc = self.compress_config or {}
        _unknown_keys("compress_config", cc, COMPRESS_KEYS, "nncf.compress_weights")
        _one_of("compress_config.mode", cc.get("mode"), COMPRESS_MODES)
        _one_of("compress_config.sensitivity_metric", cc.get("sensitivity_metric"), SENSITIVITY)
        _one_of("compress_config.backup_mode", cc.get("backup_mode"), BACKUP_MODES)
        _one_of("compress_config.compression_format", cc.get("compression_format"),
                COMPRESSION_FORMATS)
        ea = self.extra_args or {}
        _unknown_keys("extra_args", ea, WC_EXTRA_KEYS, "OpenVINOWeightCompression")
        _one_of("extra_args.model_type", ea.get("model_type"), ("TRANSFORMER",))
        _one_of("extra_args.preset", ea.get("preset"), ("PERFORMANCE", "MIXED"))
        _one_of("extra_args.library", ea.get("library"), LIBRARIES)
        if ea.get("use_onnx"):
            raise ValueError("extra_args.use_onnx: Olive's ONNX route exports through "
                             "optimum[onnxruntime], not part of this plugin; convert with "
                             "OnnxConversion and compress the ONNX model instead")
        if self.transform_fn and not self.user_script:
            raise ValueError("transform_fn: names a function, so user_script is required")


@attrs.frozen
class OptimumConversionConfig(UserScriptOptions):
    """Options of ``OpenVINOOptimumConversion`` (optimum-intel's export, with compression)."""

    components: list[str] | None = attrs.field(default=None, metadata=olivine.option(
        help="component models to export (None: all)"))
    device: str = attrs.field(default="cpu", converter=_lower, validator=_device, metadata=olivine.option(
        help="device of the export (it replaces extra_args.device, as in Olive)"))
    extra_args: dict[str, Any] | None = attrs.field(default=None, metadata=olivine.option(
        help="optimum.exporters.openvino.main_export arguments (task, library, framework, "
                "disable_stateful, disable_convert_tokenizer, ...)"))
    ov_quant_config: dict[str, Any] | None = attrs.field(default=None, metadata=olivine.option(
        help="optimum-intel weight compression / quantization: " + ", ".join(OV_QUANT_KEYS)))

    def __attrs_post_init__(self) -> None:
        if self.user_script or self.script_dir:
            raise ValueError("user_script: OpenVINOOptimumConversion calls no function of it (Olive "
                             "declares it for every pass); remove it")
        if self.components:
            raise ValueError("components: optimum-intel's exporter writes every component; Olive "
                             "0.13 declares this option but never reads it, so it must stay unset")
        ea = self.extra_args or {}
        _unknown_keys("extra_args", ea, EXPORT_KEYS, "optimum-intel's export")
        _one_of("extra_args.library", ea.get("library"), LIBRARIES)
        _one_of("extra_args.framework", ea.get("framework"), FRAMEWORKS)
        q = self.ov_quant_config or {}
        _unknown_keys("ov_quant_config", q, OV_QUANT_KEYS, "ov_quant_config")
        _one_of("ov_quant_config.weight_format", q.get("weight_format"), WEIGHT_FORMATS)
        _one_of("ov_quant_config.quant_mode", q.get("quant_mode"), QUANT_MODES)
        _one_of("ov_quant_config.backup_precision", q.get("backup_precision"), BACKUP_MODES)
        _one_of("ov_quant_config.sensitivity_metric", q.get("sensitivity_metric"), SENSITIVITY)
        if q.get("weight_format") is not None and q.get("quant_mode") is not None:
            raise ValueError("ov_quant_config: give weight_format or quant_mode, not both")
        compression = [k for k in ("ratio", "group_size", "all_layers", "all-layers", "awq",
                                   "scale_estimation", "gptq", "lora_correction",
                                   "sensitivity_metric", "backup_precision",
                                   "quantization_statistics_path") if q.get(k) is not None]
        if compression and q.get("weight_format") is None and q.get("quant_mode") is None:
            raise ValueError(f"ov_quant_config.{compression[0]}: a compression parameter needs "
                             "weight_format")
        if q.get("task") is not None and ea.get("task") not in (None, q["task"]):
            raise ValueError(f"ov_quant_config.task: {q['task']!r} differs from extra_args.task "
                             f"{ea['task']!r}")
