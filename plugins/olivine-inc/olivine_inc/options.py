"""Options of Olive's INC passes, their validation, and the pass classes.

Names, defaults and meanings are Olive 0.13's (``olive/passes/onnx/inc_quantization.py``).
Olive hands them to neural-compressor 2.x's ``quantization.fit``; that API (and its ONNX
Runtime adaptor) is gone from neural-compressor 3.8+, and its last releases need numpy<2 and
``onnx.mapping`` (removed in onnx 1.19). olivine runs them with ``onnx-neural-compressor``,
Intel's ONNX successor package. Every option is known; an option this quantizer cannot honour
is a config error saying why (see docs/compat/passes-inc.yaml).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from olivine import Accelerator, ModelHandle, OnnxModel, Pass, PassContext, did_you_mean, option
from olivine.onnxsave import ExternalDataOptions

#: Olive's ``backend`` names and the ONNX Runtime execution provider each one stands for.
BACKENDS = {"default": "CPUExecutionProvider", "onnxrt_cuda_ep": "CUDAExecutionProvider",
            "onnxrt_trt_ep": "TensorrtExecutionProvider", "onnxrt_dnnl_ep": "DnnlExecutionProvider",
            "onnxrt_dml_ep": "DmlExecutionProvider"}
#: graph_optimization_level names (INC's recipe values).
OPT_LEVELS = ("DISABLE_ALL", "ENABLE_BASIC", "ENABLE_EXTENDED", "ENABLE_ALL")

#: INC's recipes Olive documents: the check of each value (None: fine) and what it does.
_BOOL = (True, False)
RECIPES: dict[str, tuple[tuple[Any, ...] | None, str]] = {
    "smooth_quant": (_BOOL, "SmoothQuant before static quantization"),
    "smooth_quant_args": (None, "alpha, folding, op_types, calib_iter, scales_per_op, "
                                "auto_alpha_args"),
    "fast_bias_correction": ((False,), "fast bias correction is not in onnx-neural-compressor"),
    "weight_correction": ((False,), "weight correction is not in onnx-neural-compressor"),
    "gemm_to_matmul": ((False,), "onnx-neural-compressor quantizes Gemm as it is (QGemm); it "
                                 "does not rewrite Gemm into MatMul+Add"),
    "graph_optimization_level": (OPT_LEVELS, "ONNX Runtime optimization before quantizing"),
    "first_conv_or_matmul_quantization": (_BOOL, "false: the first Conv/MatMul/Gemm stays float"),
    "last_conv_or_matmul_quantization": (_BOOL, "false: the last Conv/MatMul/Gemm stays float"),
    "pre_post_process_quantization": ((True,), "leaving pre/post-processing ops in float is "
                                               "not in onnx-neural-compressor"),
    "add_qdq_pair_to_weight": (_BOOL, "QDQ: QuantizeLinear/DequantizeLinear on weights"),
    "optypes_to_exclude_output_quant": (None, "QDQ: op types whose outputs stay float"),
    "dedicated_qdq_pair": (_BOOL, "QDQ: one QDQ pair per consumer"),
}
SMOOTH_QUANT_ARGS = ("alpha", "folding", "op_types", "calib_iter", "scales_per_op",
                     "auto_alpha_args")
#: Olive's tuning_criterion keys and defaults.
TUNING_DEFAULTS = {"strategy": "basic", "strategy_kwargs": None, "timeout": 0, "max_trials": 5,
                   "objective": "performance"}
#: weight_only_config keys and the defaults Olive's pass uses for a key not given.
WOQ_DEFAULTS = {"bits": 4, "group_size": 32, "scheme": "asym", "algorithm": "RTN"}
WOQ_ALGORITHMS = ("RTN", "GPTQ", "AWQ")


def recipe_problems(recipes: dict[str, Any], approach: str, quant_format: str) -> list[str]:
    """What is wrong with ``recipes`` for this approach and format."""
    out = []
    for key, value in recipes.items():
        if key not in RECIPES:
            out.append(f"recipes.{key}: unknown recipe{did_you_mean(key, RECIPES)}; known: "
                       f"{', '.join(RECIPES)}")
            continue
        allowed, why = RECIPES[key]
        if allowed is not None and value not in allowed:
            out.append(f"recipes.{key}: {value!r} is not supported here ({why}); "
                       f"expected one of {', '.join(map(repr, allowed))}")
    if recipes.get("smooth_quant") and approach != "static":
        out.append(f"recipes.smooth_quant: SmoothQuant goes with approach static, not {approach!r}")
    args = recipes.get("smooth_quant_args")
    if args is not None:
        if not isinstance(args, dict):
            out.append("recipes.smooth_quant_args: expected an object")
        else:
            for key in args:
                if key not in SMOOTH_QUANT_ARGS:
                    out.append(f"recipes.smooth_quant_args.{key}: unknown"
                               f"{did_you_mean(key, SMOOTH_QUANT_ARGS)}; known: "
                               f"{', '.join(SMOOTH_QUANT_ARGS)}")
            alpha = args.get("alpha", 0.5)
            if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
                out.append(f"recipes.smooth_quant_args.alpha: expected a number in [0, 1], got "
                           f"{alpha!r} (onnx-neural-compressor has no 'auto' alpha search)")
            if not recipes.get("smooth_quant"):
                out.append("recipes.smooth_quant_args: given without smooth_quant: true")
    excluded = recipes.get("optypes_to_exclude_output_quant")
    if excluded is not None and not (isinstance(excluded, list)
                                     and all(isinstance(x, str) for x in excluded)):
        out.append("recipes.optypes_to_exclude_output_quant: expected a list of op types")
    for key in ("add_qdq_pair_to_weight", "optypes_to_exclude_output_quant", "dedicated_qdq_pair"):
        if recipes.get(key) and quant_format != "QDQ":
            out.append(f"recipes.{key}: applies to quant_format QDQ only, not {quant_format!r}")
    return out


def metric_goal(metric: dict[str, Any] | None) -> Any:
    """The goal of the metric's first sub-type (what makes Olive tune for accuracy), or None."""
    subs = (metric or {}).get("sub_types") or []
    return subs[0].get("goal") if subs and isinstance(subs[0], dict) else None


def _dict_of(allowed: dict[str, Any] | tuple[str, ...]) -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: dict[str, Any]) -> None:
        for key in value:
            if key not in allowed:
                raise ValueError(f"{attribute.name}.{key}: unknown key"
                                 f"{did_you_mean(key, list(allowed))}; known: "
                                 f"{', '.join(allowed)}")
    return check


def _quant_level(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in ("auto", 0, 1, "0", "1"):
        raise ValueError(f"quant_level: expected 'auto', 0 or 1, got {value!r}")


def _metric(instance: Any, attribute: attrs.Attribute, value: dict[str, Any] | None) -> None:
    if value is not None and not (isinstance(value.get("name"), str)
                                  and isinstance(value.get("type"), str)):
        raise ValueError("metric: expected an Olive metric object with 'name' and 'type'")


@attrs.frozen
class IncDynamicConfig(ExternalDataOptions):
    """Options of ``IncDynamicQuantization`` (Olive's names and defaults)."""

    approach: Literal["static", "dynamic", "weight_only"] = attrs.field(
        default="dynamic", metadata=option(help="dynamic (this pass's mode); static needs "
                                                "IncStaticQuantization's data_config"))
    device: Literal["cpu", "gpu"] = attrs.field(
        default="cpu", metadata=option(help="INC's device; gpu goes with backend onnxrt_cuda_ep or "
                                            "onnxrt_trt_ep (which also imply it)"))
    backend: Literal["default", "onnxrt_trt_ep", "onnxrt_cuda_ep", "onnxrt_dnnl_ep",
                     "onnxrt_dml_ep"] = attrs.field(
        default="default", metadata=option(help="execution provider the quantized model is made "
                                                "for: default (CPU), onnxrt_cuda_ep, onnxrt_trt_ep "
                                                "(QDQ), onnxrt_dnnl_ep, onnxrt_dml_ep; it must be "
                                                "in this onnxruntime"))
    domain: Literal["auto", "cv", "object_detection", "nlp", "recommendation_system"] = attrs.field(
        default="auto", metadata=option(help="model domain: nlp optimizes the graph at "
                                             "ENABLE_EXTENDED before quantizing, others at "
                                             "ENABLE_BASIC; auto detects NLP models"))
    workspace: str | None = attrs.field(
        default=None, metadata=option(help="folder kept with the intermediate files (the optimized "
                                           "model, inc_quantization.json); default: none kept"))
    recipes: dict[str, Any] = attrs.field(
        factory=dict, metadata=option(help="INC recipes: " + "; ".join(
               f"{k} ({why})" for k, (_, why) in RECIPES.items())))
    reduce_range: bool = attrs.field(
        default=False, metadata=option(help="7-bit weights (for CPUs without VNNI)"))
    quant_level: str | int = attrs.field(
        default="auto", validator=_quant_level,
        metadata=option(help="INC's tuning level: auto or 1 (one quantization, no tuning here); "
                             "0 (conservative tuning) is not available"))
    excluded_precisions: list[str] = attrs.field(
        factory=list, metadata=option(help="precisions kept out: bf16/fp16 (never produced on the "
                                           "CPU backend)"))
    tuning_criterion: dict[str, Any] = attrs.field(
        factory=lambda: dict(TUNING_DEFAULTS), validator=_dict_of(TUNING_DEFAULTS),
        metadata=option(help="INC tuning: strategy, strategy_kwargs, timeout, max_trials, "
                             "objective; used by accuracy-aware tuning only"))
    metric: dict[str, Any] | None = attrs.field(
        default=None, validator=_metric,
        metadata=option(help="Olive metric for accuracy-aware tuning; without a goal in its "
                             "first sub-type the model is quantized once (as Olive)"))
    weight_only_config: dict[str, Any] = attrs.field(
        factory=dict, validator=_dict_of(WOQ_DEFAULTS),
        metadata=option(help="approach weight_only: bits (4/8), group_size (default 32), scheme "
                             "(asym/sym), algorithm (RTN, GPTQ, AWQ)"))
    op_type_dict: dict[str, Any] = attrs.field(
        factory=dict, metadata=option(help="approach weight_only: INC's {\".*\": {\"weight\": "
                                           "{bits, group_size, scheme, algorithm}}} form"))

    def problems(self, static_pass: bool) -> list[str]:
        """Everything wrong with this config (check() and run() report the same)."""
        return _problems(self, static_pass)


@attrs.frozen
class IncStaticConfig(IncDynamicConfig):
    """Options of ``IncStaticQuantization``: the dynamic ones plus calibration and format."""

    approach: Literal["static", "dynamic", "weight_only"] = attrs.field(
        default="static", metadata=option(help="static (calibrated), dynamic or weight_only "
                                               "(4/8-bit MatMulNBits)"))
    data_config: str | None = attrs.field(
        default=None, metadata=option(data_config=True,
                                help="calibration data (approach static, or weight_only "
                                     "with GPTQ/AWQ): a name in data_configs"))
    quant_format: Literal["QOperator", "QDQ"] = attrs.field(
        default="QOperator", metadata=option(help="QOperator (QLinear* ops) or QDQ"))
    calibration_sampling_size: int | list[int] = attrs.field(
        default=attrs.Factory(lambda: [100]),
        metadata=option(help="calibration samples (one number, or a list of one)"))


@attrs.frozen
class IncQuantConfig(IncStaticConfig):
    """Options of ``IncQuantization``: ``approach`` picks static, dynamic or weight_only."""


def _problems(config: IncDynamicConfig, static_pass: bool) -> list[str]:
    out: list[str] = []
    approach = config.approach
    fmt = getattr(config, "quant_format", "QOperator")
    if approach == "static" and not static_pass:
        out.append("approach: static needs calibration data, which IncDynamicQuantization does "
                   "not take; use IncStaticQuantization (or IncQuantization) with data_config")
    if not static_pass and approach == "weight_only" and _woq(config)["algorithm"] != "RTN":
        out.append("weight_only_config.algorithm: GPTQ and AWQ need calibration data, which "
                   "IncDynamicQuantization does not take; use IncStaticQuantization")
    if isinstance(config, IncStaticConfig):
        woq_algo = _woq(config)["algorithm"]
        if config.data_config is None and (approach == "static" or (
                approach == "weight_only" and woq_algo in ("GPTQ", "AWQ"))):
            what = "static" if approach == "static" else f"{woq_algo} weight_only"
            out.append(f"data_config: {what} quantization needs calibration data: name an entry "
                       "of data_configs")
        if approach == "dynamic" and fmt == "QDQ":
            out.append("quant_format: dynamic quantization has no QDQ format (INC makes "
                       "MatMulInteger ops); use QOperator or approach static")
        sizes = config.calibration_sampling_size
        sizes = sizes if isinstance(sizes, list) else [sizes]
        if len(sizes) != 1 or not all(isinstance(s, int) and s >= 1 for s in sizes):
            out.append(f"calibration_sampling_size: expected one positive number (a list of "
                       f"several is INC's tuning space; nothing tunes here), got "
                       f"{config.calibration_sampling_size!r}")
    out += recipe_problems(config.recipes, approach, fmt)
    if config.recipes.get("smooth_quant") and config.backend == "onnxrt_trt_ep":
        out.append("recipes.smooth_quant: not with backend onnxrt_trt_ep")
    if config.device == "cpu" and config.backend in ("onnxrt_cuda_ep", "onnxrt_trt_ep"):
        out.append(f"device: backend {config.backend} runs on a GPU; set device 'gpu'")
    if config.device == "gpu" and config.backend in ("onnxrt_dnnl_ep",):
        out.append("device: backend onnxrt_dnnl_ep runs on the CPU; set device 'cpu'")
    if config.quant_level in (0, "0"):
        out.append("quant_level: 0 (INC's conservative tuning, which starts from fp32 and "
                   "quantizes op types one by one under an accuracy check) is not in "
                   "onnx-neural-compressor; use 'auto' or 1")
    bad = [p for p in config.excluded_precisions if p not in ("bf16", "fp16")]
    if bad:
        out.append(f"excluded_precisions: {bad!r}: only 'bf16' and 'fp16' can be excluded")
    goal = metric_goal(config.metric)
    if goal is not None:
        out.append("metric: a goal in the metric's first sub-type asks for INC's accuracy-aware "
                   "tuning, which olivine-inc does not do; drop the goal (the model is then "
                   "quantized once, as Olive does without a goal) and let the workflow's "
                   "evaluator judge the result")
    changed = sorted(k for k, v in config.tuning_criterion.items() if v != TUNING_DEFAULTS[k])
    if changed:
        out.append(f"tuning_criterion: {', '.join(changed)} apply to accuracy-aware tuning only "
                   "(a metric with a goal), which olivine-inc does not do; keep Olive's defaults")
    if config.op_type_dict and approach != "weight_only":
        out.append("op_type_dict: applies to approach weight_only only (Olive drops it "
                   "otherwise)")
    if config.weight_only_config and approach != "weight_only":
        out.append("weight_only_config: applies to approach weight_only only")
    if approach == "weight_only":
        out += _woq_problems(config)
    return out


def _woq(config: IncDynamicConfig) -> dict[str, Any]:
    """The weight-only settings: op_type_dict's ``.*`` weight entry, else weight_only_config."""
    given = dict(config.weight_only_config)
    entry = config.op_type_dict.get(".*") if config.op_type_dict else None
    if isinstance(entry, dict) and isinstance(entry.get("weight"), dict):
        given = dict(entry["weight"])
    merged = {**WOQ_DEFAULTS, **given}
    if isinstance(merged["algorithm"], str):
        merged["algorithm"] = merged["algorithm"].upper()
    return merged


def _woq_problems(config: IncDynamicConfig) -> list[str]:
    out = []
    if config.op_type_dict and (set(config.op_type_dict) != {".*"} or not isinstance(
            config.op_type_dict[".*"], dict) or set(config.op_type_dict[".*"]) != {"weight"}):
        out.append("op_type_dict: only the form {\".*\": {\"weight\": {...}}} (one setting for "
                   "every MatMul) is supported")
    elif config.op_type_dict:
        unknown = [k for k in config.op_type_dict[".*"]["weight"] if k not in WOQ_DEFAULTS]
        if unknown:
            out.append(f"op_type_dict..*.weight: unknown keys {unknown}; known: "
                       f"{', '.join(WOQ_DEFAULTS)}")
    woq = _woq(config)
    if woq["bits"] not in (4, 8):
        out.append(f"weight_only_config.bits: expected 4 or 8, got {woq['bits']!r}")
    size = woq["group_size"]
    if not (size == -1 or (isinstance(size, int) and size >= 16 and size & (size - 1) == 0)):
        out.append(f"weight_only_config.group_size: ONNX Runtime's MatMulNBits takes a power of "
                   f"two >= 16 (or -1: one group per column), got {size!r}")
    if woq["scheme"] not in ("asym", "sym"):
        out.append(f"weight_only_config.scheme: expected 'asym' or 'sym', got {woq['scheme']!r}")
    if woq["algorithm"] not in WOQ_ALGORITHMS:
        out.append(f"weight_only_config.algorithm: expected one of {', '.join(WOQ_ALGORITHMS)}, "
                   f"got {woq['algorithm']!r}")
    if config.recipes.get("smooth_quant"):
        out.append("recipes.smooth_quant: not with approach weight_only")
    return out


class _IncPass(Pass):
    """Shared behaviour of the three INC passes."""

    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx", "onnxruntime", "onnx-neural-compressor", "transformers")
    version = "1"
    _static = True

    @classmethod
    def check(cls, config: IncDynamicConfig, accelerator: Accelerator,
              model: Any = None) -> list[str]:
        """Options this quantizer cannot honour, and missing calibration data."""
        return config.problems(cls._static)

    def run(self, model: ModelHandle, config: IncDynamicConfig,
            context: PassContext) -> OnnxModel:
        """Quantize with onnx-neural-compressor."""
        from olivine_inc.work import quantize

        return quantize(model, config, self._static, context)


class IncQuantization(_IncPass):
    """Intel Neural Compressor quantization: static, dynamic or weight-only by ``approach``."""

    name = "IncQuantization"
    aliases = ("inc_quantization",)
    Config = IncQuantConfig


class IncDynamicQuantization(_IncPass):
    """Intel Neural Compressor dynamic quantization (MatMulInteger; no calibration data)."""

    name = "IncDynamicQuantization"
    aliases = ("inc_dynamic_quantization",)
    Config = IncDynamicConfig
    _static = False


class IncStaticQuantization(_IncPass):
    """Intel Neural Compressor static quantization, SmoothQuant included (calibrated)."""

    name = "IncStaticQuantization"
    aliases = ("inc_static_quantization",)
    Config = IncStaticConfig
