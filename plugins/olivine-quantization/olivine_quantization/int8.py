"""int8 activation quantization of ONNX models with ``onnxruntime.quantization``.

Passes: ``OnnxDynamicQuantization`` (weights int8 ahead of time, activations
quantized at run time), ``OnnxStaticQuantization`` (activations calibrated on
sample data; QDQ or QOperator format) and ``OnnxQuantization`` (either, by
``quant_mode``). Option names follow Olive. onnxruntime is imported when a pass runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import attrs

from olivine.accelerator import Accelerator
from olivine.errors import OlivineError, UsageError
from olivine.models import ModelHandle, OnnxModel
from olivine.passes import Pass, PassContext

log = logging.getLogger("olivine.pass.quantization")

QuantTypeName = Literal["QInt8", "QUInt8"]

#: Quantized op types counted into the output handle's ``quantized_ops`` attribute.
QUANT_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
             "QLinearMatMul", "QGemm", "QLinearConv", "ConvInteger", "QuantizeLinear",
             "DequantizeLinear", "DynamicQuantizeLinear", "QEmbedLayerNormalization", "QGather",
             "DynamicQuantizeLSTM")

#: Models above this size are written with external data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def _at_least(minimum: float) -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: float) -> None:
        if value < minimum:
            raise ValueError(f"{attribute.name}: expected a number >= {minimum:g}, got {value}")
    return check


def _percentile(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 50.0 < value <= 100.0:
        raise ValueError(f"percentile: expected a number in (50, 100], got {value}")


@attrs.frozen
class DynamicQuantConfig:
    """Options of ``OnnxDynamicQuantization``."""

    weight_type: QuantTypeName = attrs.field(
        default="QInt8", metadata={"help": "int8 type of weights (QInt8 is the fast path on x86)"})
    per_channel: bool = attrs.field(
        default=False, metadata={"help": "one scale per output channel of each weight; more "
                                         "accurate, usually as fast on CPU"})
    reduce_range: bool = attrs.field(
        default=False, metadata={"help": "7-bit weights (for CPUs without VNNI)"})
    op_types_to_quantize: list[str] | None = attrs.field(
        default=None, metadata={"help": "op types to quantize (default: all supported)"})
    nodes_to_quantize: list[str] | None = attrs.field(
        default=None, metadata={"help": "only these node names (glob patterns allowed: * ? [])"})
    nodes_to_exclude: list[str] | None = attrs.field(
        default=None, metadata={"help": "node names left in float (glob patterns allowed; * "
                                        "also matches /)"})
    quant_preprocess: bool | None = attrs.field(
        default=None, metadata={"help": "ONNX Runtime's quantization pre-processing first: true "
                                        "(shape inference and graph optimization), false (none); "
                                        "default: symbolic shape inference only, for static "
                                        "quantization (fused ops need it)"})
    extra_options: dict[str, Any] = attrs.field(
        factory=dict, metadata={"help": "ONNX Runtime quantizer extra_options (MatMulConstBOnly, "
                                        "WeightSymmetric, ...); DefaultTensorType defaults to "
                                        "FLOAT, which fused models need"})


@attrs.frozen
class StaticQuantConfig(DynamicQuantConfig):
    """Options of ``OnnxStaticQuantization``: the dynamic ones plus format and calibration."""

    quant_format: Literal["QDQ", "QOperator"] = attrs.field(
        default="QDQ", metadata={"help": "QDQ (QuantizeLinear/DequantizeLinear pairs) or "
                                         "QOperator (QLinear* ops)"})
    activation_type: QuantTypeName = attrs.field(
        default="QUInt8", metadata={"help": "int8 type of activations (QUInt8 with QInt8 weights "
                                            "is the fast U8S8 path on x86)"})
    calibrate_method: Literal["MinMax", "Entropy", "Percentile", "Distribution"] = attrs.field(
        default="MinMax", metadata={"help": "how activation ranges are chosen"})
    percentile: float = attrs.field(
        default=99.999, validator=_percentile,
        metadata={"help": "with calibrate_method Percentile: the percentile kept"})
    data_config: str | None = attrs.field(
        default=None, metadata={"data_config": True,
                                "help": "calibration data: a name in data_configs"})
    calibration_file: str | None = attrs.field(
        default=None, metadata={"input_path": True,
                                "help": "calibration data: a local .txt (one text per line), "
                                        ".jsonl or .csv file, tokenized with the model's tokenizer"})
    calibration_samples: int = attrs.field(
        default=64, validator=_at_least(1),
        metadata={"help": "at most this many calibration samples"})
    calibration_seq_len: int = attrs.field(
        default=128, validator=_at_least(1),
        metadata={"help": "with calibration_file: tokens per sample (padded)"})
    tokenizer: str | None = attrs.field(
        default=None, metadata={"input_path": True,
                                "help": "with calibration_file: tokenizer folder or id (default: "
                                        "the model's folder)"})
    activation_symmetric: bool | None = attrs.field(
        default=None, metadata={"help": "symmetric activation ranges (extra option)"})
    weight_symmetric: bool | None = attrs.field(
        default=None, metadata={"help": "symmetric weight ranges (extra option)"})


@attrs.frozen
class QuantConfig(StaticQuantConfig):
    """Options of ``OnnxQuantization``: ``quant_mode`` picks static or dynamic."""

    quant_mode: Literal["static", "dynamic"] = attrs.field(
        default="static", metadata={"help": "static (calibrated activations) or dynamic"})


def _static_problems(config: StaticQuantConfig) -> list[str]:
    if config.data_config is None and config.calibration_file is None:
        return ["static quantization needs calibration data: set data_config (a name in "
                "data_configs) or calibration_file (a local text file)"]
    if config.data_config is not None and config.calibration_file is not None:
        return ["data_config and calibration_file both given; keep one"]
    return []


class OnnxDynamicQuantization(Pass):
    """int8 weights, activations quantized at run time (no calibration data needed)."""

    name = "OnnxDynamicQuantization"
    aliases = ("onnx_dynamic_quantization",)
    Config = DynamicQuantConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx", "onnxruntime")
    version = "1"

    def run(self, model: ModelHandle, config: DynamicQuantConfig,
            context: PassContext) -> OnnxModel:
        """Quantize with ``quantize_dynamic``."""
        return quantize(model, config, "dynamic", context)


class OnnxStaticQuantization(Pass):
    """int8 weights and activations, activation ranges calibrated on sample data."""

    name = "OnnxStaticQuantization"
    aliases = ("onnx_static_quantization",)
    Config = StaticQuantConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx", "onnxruntime", "transformers")
    version = "1"

    @classmethod
    def check(cls, config: StaticQuantConfig, accelerator: Accelerator,
              model: Any = None) -> list[str]:
        """Calibration data must be named."""
        return _static_problems(config)

    def run(self, model: ModelHandle, config: StaticQuantConfig,
            context: PassContext) -> OnnxModel:
        """Calibrate and quantize with ``quantize_static``."""
        return quantize(model, config, "static", context)


class OnnxQuantization(Pass):
    """Static or dynamic int8 quantization, chosen by ``quant_mode``."""

    name = "OnnxQuantization"
    aliases = ("onnx_quantization",)
    Config = QuantConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx", "onnxruntime", "transformers")
    version = "1"

    @classmethod
    def check(cls, config: QuantConfig, accelerator: Accelerator,
              model: Any = None) -> list[str]:
        """Static mode needs calibration data."""
        return _static_problems(config) if config.quant_mode == "static" else []

    def run(self, model: ModelHandle, config: QuantConfig, context: PassContext) -> OnnxModel:
        """Dispatch on ``quant_mode``."""
        return quantize(model, config, config.quant_mode, context)


# -- the work -------------------------------------------------------------------------------
def extra_options(config: DynamicQuantConfig, mode: str) -> dict[str, Any]:
    """The quantizer's extra_options: the user's, with DefaultTensorType and shortcuts filled."""
    import onnx

    extra = dict(config.extra_options)
    dtt = extra.get("DefaultTensorType", onnx.TensorProto.FLOAT)
    if isinstance(dtt, str):
        try:
            dtt = onnx.TensorProto.DataType.Value(dtt.upper())
        except ValueError:
            raise UsageError(f"extra_options.DefaultTensorType: {dtt!r} is not an ONNX tensor "
                             "type name (FLOAT, FLOAT16)") from None
    extra["DefaultTensorType"] = dtt
    if mode == "static":
        assert isinstance(config, StaticQuantConfig)
        if config.calibrate_method == "Percentile":
            extra.setdefault("CalibPercentile", config.percentile)
        if config.activation_symmetric is not None:
            extra.setdefault("ActivationSymmetric", config.activation_symmetric)
        if config.weight_symmetric is not None:
            extra.setdefault("WeightSymmetric", config.weight_symmetric)
    return extra


def expand_node_patterns(path: Path, patterns: list[str] | None, option: str) -> list[str] | None:
    """Node names matching ``patterns`` (names and fnmatch globs); a glob matching none is an error."""
    if not patterns or not any(ch in p for p in patterns for ch in "*?["):
        return patterns
    import fnmatch

    import onnx

    names = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]
    out: list[str] = []
    for pattern in patterns:
        if not any(ch in pattern for ch in "*?["):
            out.append(pattern)
            continue
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise UsageError(f"{option}: pattern {pattern!r} matches no node of the model")
        out.extend(m for m in matched if m not in out)
    return out


def count_quant_ops(path: Path) -> dict[str, int]:
    """Quantized op types in the model at ``path`` and their counts."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type in QUANT_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _check_loads(path: Path, mode: str) -> None:
    """Fail when ONNX Runtime cannot load the quantized model (the quantizer may produce one)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise OlivineError(f"the {mode}-quantized model does not load in ONNX Runtime: "
                           f"{str(exc).strip().splitlines()[-1]}; leave the named node out with "
                           "nodes_to_exclude or limit op_types_to_quantize") from exc


def _has_contrib_ops(path: Path) -> bool:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return any(n.domain == "com.microsoft" for n in proto.graph.node)


def _preprocess(source: Path, option: bool | None, mode: str, context: PassContext) -> Path:
    """Run ONNX Runtime's quantization pre-processing as ``quant_preprocess`` asks.

    Default (``None``): for static quantization of a model with fused (com.microsoft) ops,
    symbolic shape inference only; without it the QOperator quantizer cannot type the
    fused ops' outputs. A failure there is logged and the model is used as it is.
    """
    if option is False or (option is None and (mode != "static" or not _has_contrib_ops(source))):
        return source
    from onnxruntime.quantization.shape_inference import quant_pre_process

    only_shapes = option is None
    context.progress(0, None, "symbolic shape inference" if only_shapes else "pre-processing")
    pre = context.work_dir / "preprocessed.onnx.tmp"
    try:
        quant_pre_process(str(source), str(pre), skip_optimization=only_shapes,
                          skip_onnx_shape=only_shapes)
    except Exception as exc:
        if only_shapes:
            log.warning("symbolic shape inference failed (%s); quantizing without it", exc)
            pre.unlink(missing_ok=True)
            return source
        raise OlivineError(f"quantization pre-processing failed: {type(exc).__name__}: {exc}; "
                           "set quant_preprocess to false to skip it") from exc
    return pre


def quantize(model: ModelHandle, config: DynamicQuantConfig, mode: str,
             context: PassContext) -> OnnxModel:
    """Quantize ``model`` (``mode`` static or dynamic) into ``context.work_dir``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static

    from olivine_quantization.calibration import make_reader
    from olivine_quantization.files import copy_sidecar_files, model_size

    if not isinstance(model, OnnxModel):
        raise UsageError(f"int8 quantization takes ONNX models, got a {model.kind} model")
    source = model.model_file()
    target = context.work_dir / "model.onnx"
    total = 3 if mode == "static" else 2
    source = _preprocess(source, config.quant_preprocess, mode, context)
    common: dict[str, Any] = {
        "per_channel": config.per_channel, "reduce_range": config.reduce_range,
        "weight_type": QuantType[config.weight_type],
        "op_types_to_quantize": config.op_types_to_quantize,
        "nodes_to_quantize": expand_node_patterns(source, config.nodes_to_quantize,
                                                  "nodes_to_quantize"),
        "nodes_to_exclude": expand_node_patterns(source, config.nodes_to_exclude,
                                                 "nodes_to_exclude"),
        "use_external_data_format": model_size(model) > EXTERNAL_DATA_THRESHOLD,
        "extra_options": extra_options(config, mode),
    }
    extra_attrs: dict[str, Any] = {"quantization": mode}
    try:
        if mode == "dynamic":
            context.progress(0, total, f"quantizing {source.name} (dynamic, {config.weight_type})")
            quantize_dynamic(str(source), str(target), **common)
        else:
            assert isinstance(config, StaticQuantConfig)
            from onnxruntime.quantization import CalibrationMethod, QuantFormat

            context.progress(0, total, "loading calibration data")
            reader = make_reader(model, config, context)
            extra_attrs["calibration_samples"] = len(reader)
            context.progress(1, total, f"calibrating on {len(reader)} batches "
                                       f"({config.calibrate_method}) and quantizing "
                                       f"({config.quant_format})")
            quantize_static(
                str(source), str(target), calibration_data_reader=reader,
                quant_format=QuantFormat[config.quant_format],
                activation_type=QuantType[config.activation_type],
                calibrate_method=CalibrationMethod[config.calibrate_method], **common)
            extra_attrs.update(quant_format=config.quant_format,
                               calibrate_method=config.calibrate_method)
    except (UsageError, OlivineError):
        raise
    except Exception as exc:
        raise OlivineError(f"onnxruntime {mode} quantization of {model.model_file().name} "
                           f"failed: {type(exc).__name__}: {exc}") from exc
    finally:
        (context.work_dir / "preprocessed.onnx.tmp").unlink(missing_ok=True)
    for leftover in context.work_dir.glob("*.tmp"):
        leftover.unlink()
    _check_loads(target, mode)
    counts = count_quant_ops(target)
    if not counts:
        raise OlivineError(f"{mode} quantization left {source.name} without any quantized op; "
                           "check op_types_to_quantize, nodes_to_quantize and nodes_to_exclude")
    log.info("%s quantization: %s", mode, counts)
    copy_sidecar_files(model, context.work_dir)
    context.progress(total, total, "done")
    merged = {**model.attrs_dict(), **extra_attrs, "quantized_ops": counts,
              "weight_type": config.weight_type, "per_channel": config.per_channel}
    return OnnxModel(path=str(context.work_dir), onnx_file_name=target.name, attributes=merged)
