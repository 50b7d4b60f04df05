"""The work of the int8 passes: pre-processing, calibration, ``onnxruntime.quantization``, saving.

Imported when a pass runs; onnx and onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from olivine import ModelHandle, OlivineError, OnnxModel, PassContext, UsageError
from olivine.onnxsave import save_onnx
from olivine.ortshapes import lean_shape_inference
from olivine_quantization.int8 import (
    STATIC_ONLY,
    DynamicQuantConfig,
    StaticQuantConfig,
    quant_type_name,
)

log = logging.getLogger("olivine.pass.quantization")

#: Quantized op types counted into the output handle's ``quantized_ops`` attribute.
QUANT_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
             "QLinearMatMul", "QGemm", "QLinearConv", "ConvInteger", "QuantizeLinear",
             "DequantizeLinear", "DynamicQuantizeLinear", "QEmbedLayerNormalization", "QGather",
             "DynamicQuantizeLSTM")

#: Options exposed as pass options and the extra_options key each one sets, and whether
#: dynamic quantization uses it (as Olive).
EXPOSED = {"ActivationSymmetric": ("activation_symmetric", True),
           "WeightSymmetric": ("weight_symmetric", True),
           "MinimumRealRange": ("min_real_range", False),
           "TensorQuantOverrides": ("tensor_quant_overrides", False)}


def extra_options(config: DynamicQuantConfig, mode: str) -> dict[str, Any]:
    """The quantizer's extra_options: the user's, the exposed options, DefaultTensorType."""
    import onnx

    extra = dict(config.extra_options or {})
    overwritten = [k for k, (opt, dyn) in EXPOSED.items()
                   if k in extra and getattr(config, opt, None) is not None
                   and (mode == "static" or dyn)]
    if overwritten:
        log.warning("extra_options %s are overwritten by the pass options %s", overwritten,
                    [EXPOSED[k][0] for k in overwritten])
    for key, (option, in_dynamic) in EXPOSED.items():
        value = getattr(config, option, None)
        if value is not None and (mode == "static" or in_dynamic):
            extra[key] = overrides(value) if key == "TensorQuantOverrides" else value
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
    return extra


def overrides(value: dict[str, Any]) -> dict[str, Any]:
    """``tensor_quant_overrides`` from JSON: ``quant_type`` names become QuantType values."""
    import numpy as np
    from onnxruntime.quantization import QuantType

    def one(entry: Any, where: str) -> Any:
        if not isinstance(entry, dict):
            raise UsageError(f"tensor_quant_overrides.{where}: expected an object, got {entry!r}")
        out = dict(entry)
        if isinstance(out.get("quant_type"), str):
            try:
                out["quant_type"] = QuantType[quant_type_name(out["quant_type"])]
            except ValueError:
                raise UsageError(f"tensor_quant_overrides.{where}.quant_type: unknown type "
                                 f"{out['quant_type']!r}") from None
        for key in ("scale", "zero_point"):
            if isinstance(out.get(key), int | float | list):
                out[key] = np.array(out[key], dtype=np.float32 if key == "scale" else None)
        if isinstance(out.get("convert"), dict):
            out["convert"] = one(out["convert"], f"{where}.convert")
        return out

    result = {}
    for tensor, entries in value.items():
        if not isinstance(entries, list):
            raise UsageError(f"tensor_quant_overrides.{tensor}: expected a list of objects")
        result[tensor] = [one(e, f"{tensor}[{i}]") for i, e in enumerate(entries)]
    return result


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


def nodes_of_types(path: Path, op_types: list[str]) -> list[str]:
    """Names of the nodes of ``op_types`` (how Olive applies ``op_types_to_exclude``)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in op_types and n.name]


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


def preprocess(source: Path, folder: Path, context: PassContext) -> Path:
    """ONNX Runtime's quantization pre-processing of ``source`` into ``folder`` (Olive's).

    When the full pre-processing fails, symbolic shape inference alone is tried (fused
    com.microsoft ops need it), then the model is used as it is; each fallback is a warning.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    for only_shapes in (False, True):
        context.progress(0, None, "pre-processing" if not only_shapes
                         else "pre-processing (shape inference only)")
        try:
            with lean_shape_inference():  # and no sym_shape_infer_temp.onnx in the cwd
                quant_pre_process(str(source), str(target), skip_optimization=only_shapes,
                                  skip_onnx_shape=only_shapes, auto_merge=True,
                                  save_as_external_data=True)
            return target
        except Exception as exc:
            context.logger.warning("quantization pre-processing%s failed (%s: %s); %s",
                                   " (shape inference only)" if only_shapes else "",
                                   type(exc).__name__, str(exc).splitlines()[0] if str(exc)
                                   else "", "quantizing the model as it is" if only_shapes
                                   else "trying shape inference alone")
    return source


def _calibration_providers(config: StaticQuantConfig) -> list[str] | None:
    if not config.calibration_providers:
        return None
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in config.calibration_providers if p not in available]
    if missing:
        raise UsageError(f"calibration_providers: {', '.join(missing)} not available in this "
                         f"onnxruntime (available: {', '.join(available)})")
    return list(config.calibration_providers)


def _static_kwargs(source: Path, config: StaticQuantConfig, common: dict[str, Any],
                   reader: Any) -> dict[str, Any]:
    """The keyword arguments of ``quantize_static`` (through get_qdq_config when asked)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    method = CalibrationMethod[config.calibrate_method]
    activation = QuantType[config.activation_quant_type()]
    providers = _calibration_providers(config)
    if config.quant_format != "QDQ" or not config.prepare_qdq_config:
        return {**common, "calibration_data_reader": reader,
                "quant_format": QuantFormat[config.quant_format], "activation_type": activation,
                "calibrate_method": method, "calibration_providers": providers}
    from onnxruntime.quantization.quantize import get_qdq_config

    extra = dict(common["extra_options"])
    exposed = {option: extra.pop(key) for key, (option, _) in EXPOSED.items() if key in extra}
    qdq = get_qdq_config(
        str(source), reader, calibrate_method=method, activation_type=activation,
        weight_type=common["weight_type"], per_channel=common["per_channel"],
        reduce_range=common["reduce_range"], calibration_providers=providers,
        op_types_to_quantize=common["op_types_to_quantize"],
        nodes_to_exclude=common["nodes_to_exclude"], extra_options=extra, **exposed)
    kwargs = {k: v for k, v in vars(qdq).items() if not k.startswith("_")}
    if common["nodes_to_quantize"]:
        kwargs["nodes_to_quantize"] = common["nodes_to_quantize"]
    kwargs["use_external_data_format"] = True
    return kwargs


def quantize(model: ModelHandle, config: DynamicQuantConfig, mode: str,
             context: PassContext) -> OnnxModel:
    """Quantize ``model`` (``mode`` static or dynamic) into ``context.work_dir``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static

    from olivine_quantization.calibration import make_reader
    from olivine_quantization.fast_channels import vectorized_channels

    if not isinstance(model, OnnxModel):
        raise UsageError(f"int8 quantization takes ONNX models, got a {model.kind} model")
    if mode == "dynamic" and isinstance(config, StaticQuantConfig):
        unused = [k for k in STATIC_ONLY if getattr(config, k) != _default(type(config), k)]
        if unused:
            context.logger.warning("quant_mode is dynamic: %s apply to static quantization only "
                                   "and are not used", ", ".join(unused))
    scratch = context.work_dir / ".quantizing"
    total = 3 if mode == "static" else 2
    try:
        source = model.model_file()
        if config.quant_preprocess:
            source = preprocess(source, scratch / "pre", context)
        to_exclude = expand_node_patterns(source, config.nodes_to_exclude, "nodes_to_exclude")
        to_exclude = list(to_exclude or [])
        if config.op_types_to_exclude:
            to_exclude += [n for n in nodes_of_types(source, config.op_types_to_exclude)
                           if n not in to_exclude]
        common: dict[str, Any] = {
            "per_channel": config.per_channel, "reduce_range": config.reduce_range,
            "weight_type": QuantType[config.weight_quant_type()],
            "op_types_to_quantize": config.op_types_to_quantize,
            "nodes_to_quantize": expand_node_patterns(source, config.nodes_to_quantize,
                                                      "nodes_to_quantize"),
            "nodes_to_exclude": to_exclude,
            "use_external_data_format": True,
            "extra_options": extra_options(config, mode),
        }
        out_dir = scratch / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        quantized = out_dir / "model.onnx"
        extra_attrs: dict[str, Any] = {"quantization": mode}
        if mode == "dynamic":
            context.progress(0, total, f"quantizing {source.name} (dynamic, {config.precision})")
            with vectorized_channels():
                _call(quantize_dynamic, mode, model, str(source), str(quantized), **common)
        else:
            assert isinstance(config, StaticQuantConfig)
            context.progress(0, total, "loading calibration data")
            reader = make_reader(model, config, context)
            context.progress(1, total, f"calibrating on {len(reader)} batches "
                                       f"({config.calibrate_method}) and quantizing "
                                       f"({config.quant_format}, weights {config.precision}, "
                                       f"activations {config.activation_type})")
            kwargs = _call(_static_kwargs, mode, model, source, config, common, reader)
            with vectorized_channels():
                _call(quantize_static, mode, model, str(source), str(quantized), **kwargs)
            extra_attrs.update(quant_format=config.quant_format,
                               calibrate_method=config.calibrate_method,
                               calibration_samples=len(reader),
                               activation_type=config.activation_quant_type())
        counts = count_quant_ops(quantized)
        if not counts:
            raise OlivineError(f"{mode} quantization left {model.model_file().name} without any "
                               "quantized op; check op_types_to_quantize, op_types_to_exclude, "
                               "nodes_to_quantize and nodes_to_exclude")
        context.progress(total - 1, total, "saving")
        proto = onnx.load(str(quantized), load_external_data=True)
        log.info("%s quantization: %s", mode, counts)
        result = save_onnx(proto, context.work_dir, config, source=model, **extra_attrs,
                           quantized_ops=counts, precision=config.precision,
                           weight_type=config.weight_quant_type(),
                           per_channel=config.per_channel)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _check_loads(result.model_file(), mode)
    context.progress(total, total, "done")
    return result


def _default(cls: type, name: str) -> Any:
    import attrs

    default: Any = attrs.fields_dict(cls)[name].default
    return default.factory() if hasattr(default, "factory") else default


def _call(fn: Any, mode: str, model: ModelHandle, *args: Any, **kwargs: Any) -> Any:
    """Call an onnxruntime function; its failures become one clear OlivineError."""
    try:
        return fn(*args, **kwargs)
    except (UsageError, OlivineError):
        raise
    except Exception as exc:
        raise OlivineError(f"onnxruntime {mode} quantization of {Path(model.path).name} "
                           f"failed: {type(exc).__name__}: {exc}") from exc
