"""int8 (and 16-bit QDQ) activation quantization of ONNX models with ``onnxruntime.quantization``.

Passes: ``OnnxDynamicQuantization`` (weights quantized ahead of time, activations at run
time), ``OnnxStaticQuantization`` (activations calibrated on sample data; QDQ or QOperator
format) and ``OnnxQuantization`` (either, by ``quant_mode``). Option names, defaults and
semantics are Olive's (``precision``, ``activation_type`` as ``int8``/``uint8``/``int16``/
``uint16``, ``prepare_qdq_config``, ...); the older ONNX Runtime spellings (``weight_type``,
``QInt8``, ``QUInt8``) are accepted too. The work lives in :mod:`olivine_quantization.work`;
onnxruntime is imported when a pass runs.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from olivine import Accelerator, ModelHandle, OnnxModel, Pass, PassContext, did_you_mean, option
from olivine.onnxsave import ExternalDataOptions

#: Olive's precision names and the ONNX Runtime QuantType each stands for.
PRECISIONS = {"int8": "QInt8", "uint8": "QUInt8", "int16": "QInt16", "uint16": "QUInt16",
              "int4": "QInt4", "uint4": "QUInt4"}
#: The 8-bit types: the only ones dynamic quantization and the QOperator format take.
EIGHT_BIT = ("QInt8", "QUInt8")


def quant_type_name(value: str) -> str:
    """ONNX Runtime's QuantType name for an Olive precision (``uint16``) or a QuantType name."""
    for olive, ort in PRECISIONS.items():
        if value in (olive, ort):
            return ort
    raise ValueError(value)


def _precision(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is None:
        return
    try:
        quant_type_name(value)
    except ValueError:
        olive, ort = list(PRECISIONS), list(PRECISIONS.values())
        raise ValueError(f"{attribute.name}: expected one of {', '.join(map(repr, olive))} "
                         f"(or ONNX Runtime's {', '.join(map(repr, ort))}), got {value!r}"
                         f"{did_you_mean(value, olive + ort)}") from None


def _at_least(minimum: float) -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: float) -> None:
        if value < minimum:
            raise ValueError(f"{attribute.name}: expected a number >= {minimum:g}, got {value}")
    return check


def _percentile(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 50.0 < value <= 100.0:
        raise ValueError(f"percentile: expected a number in (50, 100], got {value}")


def _providers(instance: Any, attribute: attrs.Attribute, value: list[str] | None) -> None:
    for name in value or ():
        if not name.endswith("ExecutionProvider"):
            raise ValueError(f"{attribute.name}: {name!r} is not an ONNX Runtime execution "
                             "provider name (e.g. CPUExecutionProvider)")


@attrs.frozen
class DynamicQuantConfig(ExternalDataOptions):
    """Options of ``OnnxDynamicQuantization`` (Olive's names and defaults)."""

    quant_mode: Literal["dynamic"] = attrs.field(
        default="dynamic", metadata=option(help="Olive's mode option; this pass is dynamic only "
                                                "(OnnxQuantization takes static or dynamic)"))
    precision: str = attrs.field(
        default="int8", validator=_precision,
        metadata=option(help="type of quantized weights: int8 or uint8 (static QDQ also int16, "
                             "uint16, int4, uint4)"))
    weight_type: str | None = attrs.field(
        default=None, validator=_precision,
        metadata=option(help="older spelling of precision (QInt8, QUInt8, ...); when given, it "
                             "is the weights' type"))
    op_types_to_quantize: list[str] | None = attrs.field(
        default=None, metadata=option(help="op types to quantize (default: all quantizable)"))
    op_types_to_exclude: list[str] | None = attrs.field(
        default=None, metadata=option(help="op types left in float: their nodes join "
                                           "nodes_to_exclude"))
    nodes_to_quantize: list[str] | None = attrs.field(
        default=None, metadata=option(help="only these node names (glob patterns allowed: * ? [])"))
    nodes_to_exclude: list[str] | None = attrs.field(
        default=None, metadata=option(help="node names left in float (glob patterns allowed; * "
                                           "also matches /)"))
    per_channel: bool = attrs.field(
        default=False, metadata=option(help="one scale per output channel of each weight"))
    reduce_range: bool = attrs.field(
        default=False, metadata=option(help="7-bit weights (for CPUs without VNNI)"))
    quant_preprocess: bool = attrs.field(
        default=True, metadata=option(help="ONNX Runtime's quantization pre-processing first "
                                           "(symbolic shape inference and graph optimization); "
                                           "on failure the model is used as it is, with a warning"))
    activation_symmetric: bool = attrs.field(
        default=False, metadata=option(help="symmetric activation ranges (ActivationSymmetric)"))
    weight_symmetric: bool | None = attrs.field(
        default=None, metadata=option(help="symmetric weight ranges (WeightSymmetric); default: "
                                           "true for signed precisions"))
    extra_options: dict[str, Any] | None = attrs.field(
        default=None, metadata=option(help="ONNX Runtime quantizer extra_options (MatMulConstBOnly, "
                                           "...); DefaultTensorType defaults to FLOAT, which fused "
                                           "models need; the keys of exposed options "
                                           "(ActivationSymmetric, ...) are overwritten by them"))

    def weight_quant_type(self) -> str:
        """ONNX Runtime's QuantType name of the weights."""
        return quant_type_name(self.weight_type or self.precision)


@attrs.frozen
class StaticQuantConfig(DynamicQuantConfig):
    """Options of ``OnnxStaticQuantization``: the dynamic ones plus format and calibration."""

    quant_mode: Literal["static"] = attrs.field(  # type: ignore[assignment]
        default="static", metadata=option(help="Olive's mode option; this pass is static only "
                                               "(OnnxQuantization takes static or dynamic)"))

    quant_format: Literal["QDQ", "QOperator"] = attrs.field(
        default="QDQ", metadata=option(help="QDQ (QuantizeLinear/DequantizeLinear pairs) or "
                                            "QOperator (QLinear* ops; 8-bit only)"))
    activation_type: str = attrs.field(
        default="int8", validator=_precision,
        metadata=option(help="type of quantized activations: int8, uint8, int16, uint16 (QDQ); "
                             "QInt8/QUInt8 are the older spelling"))
    calibrate_method: Literal["MinMax", "Entropy", "Percentile", "Distribution"] = attrs.field(
        default="MinMax", metadata=option(help="how activation ranges are chosen"))
    calibration_providers: list[str] | None = attrs.field(
        default=None, validator=_providers,
        metadata=option(help="execution providers of the calibration session (default: "
                             "CPUExecutionProvider)"))
    min_real_range: float | None = attrs.field(
        default=None, metadata=option(help="smallest range between rmin and rmax "
                                           "(MinimumRealRange)"))
    tensor_quant_overrides: dict[str, Any] | None = attrs.field(
        default=None, metadata=option(help="per-tensor overrides (TensorQuantOverrides): "
                                           "{tensor: [{\"quant_type\": \"QUInt16\", ...}]}"))
    prepare_qdq_config: bool = attrs.field(
        default=True, metadata=option(help="with QDQ: ONNX Runtime's get_qdq_config, which "
                                           "quantizes every op type of the model (a full integer "
                                           "QDQ model); false: the quantizer's default op set"))
    data_config: str | None = attrs.field(
        default=None, metadata=option(data_config=True,
                                help="calibration data: a name in data_configs"))
    calibration_file: str | None = attrs.field(
        default=None, metadata=option(input_path=True,
                                help="calibration data: a local .txt (one text per line), "
                                     ".jsonl or .csv file, tokenized with the model's tokenizer"))
    calibration_samples: int = attrs.field(
        default=64, validator=_at_least(1),
        metadata=option(help="at most this many calibration samples"))
    calibration_seq_len: int = attrs.field(
        default=128, validator=_at_least(1),
        metadata=option(help="with calibration_file: tokens per sample (padded)"))
    tokenizer: str | None = attrs.field(
        default=None, metadata=option(input_path=True,
                                help="with calibration_file: tokenizer folder or id (default: "
                                     "the model's folder)"))
    percentile: float = attrs.field(
        default=99.999, validator=_percentile,
        metadata=option(help="with calibrate_method Percentile: the percentile kept"))

    def activation_quant_type(self) -> str:
        """ONNX Runtime's QuantType name of the activations."""
        return quant_type_name(self.activation_type)


@attrs.frozen
class QuantConfig(StaticQuantConfig):
    """Options of ``OnnxQuantization``: ``quant_mode`` picks static or dynamic."""

    quant_mode: Literal["static", "dynamic"] = attrs.field(  # type: ignore[assignment]
        default="static", metadata=option(help="static (calibrated activations) or dynamic; "
                                               "the static-only options do not apply to dynamic"))


#: Options of static quantization that dynamic quantization does not use.
STATIC_ONLY = tuple(f.name for f in attrs.fields(StaticQuantConfig)
                    if f.name not in {g.name for g in attrs.fields(DynamicQuantConfig)})


def _weight_problems(config: DynamicQuantConfig) -> list[str]:
    if (config.weight_type is not None and config.precision != "int8"
            and quant_type_name(config.weight_type) != quant_type_name(config.precision)):
        return [f"weight_type: {config.weight_type!r} and precision {config.precision!r} "
                "disagree; keep precision"]
    return []


def _dynamic_problems(config: DynamicQuantConfig) -> list[str]:
    out = _weight_problems(config)
    if config.weight_quant_type() not in EIGHT_BIT:
        key = "weight_type" if config.weight_type else "precision"
        out.append(f"{key}: dynamic quantization takes int8 or uint8 weights, got "
                   f"{getattr(config, key)!r} (16- and 4-bit types need static QDQ "
                   "quantization)")
    return out


def _static_problems(config: StaticQuantConfig) -> list[str]:
    out = _weight_problems(config)
    if config.data_config is None and config.calibration_file is None:
        out.append("data_config: static quantization needs calibration data: set data_config "
                   "(a name in data_configs) or calibration_file (a local text file)")
    if config.data_config is not None and config.calibration_file is not None:
        out.append("calibration_file: data_config and calibration_file both given; keep one")
    if config.quant_format == "QOperator":
        wkey = "weight_type" if config.weight_type else "precision"
        for key, qtype in ((wkey, config.weight_quant_type()),
                           ("activation_type", config.activation_quant_type())):
            if qtype not in EIGHT_BIT:
                out.append(f"{key}: the QOperator format takes int8 or uint8, got "
                           f"{getattr(config, key)!r}; use quant_format QDQ for 16- and 4-bit")
    return out


#: what the int8 passes import when they run (``Pass.preload``)
PRELOAD = ("onnx", "onnxruntime.quantization", "onnxruntime.quantization.shape_inference")


class OnnxDynamicQuantization(Pass):
    """int8 weights, activations quantized at run time (no calibration data needed)."""

    name = "OnnxDynamicQuantization"
    aliases = ("onnx_dynamic_quantization",)
    Config = DynamicQuantConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx", "onnxruntime")
    preload = PRELOAD
    version = "2"

    @classmethod
    def check(cls, config: DynamicQuantConfig, accelerator: Accelerator,
              model: Any = None) -> list[str]:
        """Dynamic quantization is 8-bit."""
        return _dynamic_problems(config)

    def run(self, model: ModelHandle, config: DynamicQuantConfig,
            context: PassContext) -> OnnxModel:
        """Quantize with ``quantize_dynamic``."""
        from olivine_quantization.work import quantize

        return quantize(model, config, "dynamic", context)


class OnnxStaticQuantization(Pass):
    """Weights and activations quantized, activation ranges calibrated on sample data."""

    name = "OnnxStaticQuantization"
    aliases = ("onnx_static_quantization",)
    Config = StaticQuantConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx", "onnxruntime", "transformers")
    preload = PRELOAD
    version = "2"

    @classmethod
    def check(cls, config: StaticQuantConfig, accelerator: Accelerator,
              model: Any = None) -> list[str]:
        """Calibration data must be named; QOperator is 8-bit."""
        return _static_problems(config)

    def run(self, model: ModelHandle, config: StaticQuantConfig,
            context: PassContext) -> OnnxModel:
        """Calibrate and quantize with ``quantize_static``."""
        from olivine_quantization.work import quantize

        return quantize(model, config, "static", context)


class OnnxQuantization(Pass):
    """Static or dynamic quantization, chosen by ``quant_mode``."""

    name = "OnnxQuantization"
    aliases = ("onnx_quantization",)
    Config = QuantConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx", "onnxruntime", "transformers")
    preload = PRELOAD
    version = "2"

    @classmethod
    def check(cls, config: QuantConfig, accelerator: Accelerator,
              model: Any = None) -> list[str]:
        """Static mode needs calibration data; dynamic mode is 8-bit."""
        if config.quant_mode == "static":
            return _static_problems(config)
        return _dynamic_problems(config)

    def run(self, model: ModelHandle, config: QuantConfig, context: PassContext) -> OnnxModel:
        """Dispatch on ``quant_mode``."""
        from olivine_quantization.work import quantize

        return quantize(model, config, config.quant_mode, context)
