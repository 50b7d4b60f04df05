"""``OrtSessionParamsTuning``: its options (Olive's names and defaults) and the checks made
before it runs. Light: attrs and the host only; the work is in :mod:`olivine_onnx.session_tuning`.

Unlike Olive, where each ``*_list`` option holds one value per engine search point, the pass
itself tries every combination of the values it is given (a single value is a list of one),
times each on the target and keeps the fastest; the engine's search is not needed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from olivine import EXECUTION_PROVIDERS, Accelerator, ModelHandle, OnnxModel, Pass, PassContext, option

#: ONNX Runtime's ExecutionMode values
EXECUTION_MODES = {0: "ORT_SEQUENTIAL", 1: "ORT_PARALLEL"}
#: ONNX Runtime's GraphOptimizationLevel values
OPT_LEVELS = {0: "ORT_DISABLE_ALL", 1: "ORT_ENABLE_BASIC", 2: "ORT_ENABLE_EXTENDED",
              3: "ORT_ENABLE_LAYOUT", 99: "ORT_ENABLE_ALL"}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider",
                 "NvTensorRTRTXExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider",
                 "MIGraphXExecutionProvider", "WebGpuExecutionProvider")


def as_list(value: Any) -> list[Any]:
    """One value or a list of values, as a list (``None`` -> ``[None]``)."""
    return list(value) if isinstance(value, list | tuple) else [value]


def _ints_in(allowed: dict[int, str] | None, minimum: int = 1) -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        for v in as_list(value):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{attribute.name}: expected whole numbers, got {v!r}")
            if allowed is not None and v not in allowed:
                known = ", ".join(f"{k} ({n})" for k, n in allowed.items())
                raise ValueError(f"{attribute.name}: {v} is not one of {known}")
            if allowed is None and v < minimum:
                raise ValueError(f"{attribute.name}: expected numbers >= {minimum}, got {v}")
    return check


def _providers(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    from olivine import did_you_mean

    for v in as_list(value):
        if v is not None and v not in EXECUTION_PROVIDERS:
            raise ValueError(f"{attribute.name}: unknown execution provider {v!r}"
                             f"{did_you_mean(str(v), EXECUTION_PROVIDERS)}")


def _extra(instance: Any, attribute: attrs.Attribute, value: dict[str, Any] | None) -> None:
    if value is None:
        return
    for k, v in value.items():
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise ValueError(f"{attribute.name}.{k}: session config values are text or numbers, "
                             f"got {v!r}")


@attrs.frozen
class SessionParamsTuningConfig:
    """Options of ``OrtSessionParamsTuning`` (Olive's names; each ``*_list`` takes one value or a
    list of values to try)."""

    data_config: str | None = attrs.field(
        default=None, metadata=option(data_config=True, help="data config whose first batch is "
                                "timed (default: generated inputs, symbolic dimensions 1)"))
    user_script: str | None = attrs.field(
        default=None, metadata=option(input_path=True,
                                help="Olive's pass-level script for an inline data config; "
                                     "olivine reads it from the data config entry"))
    script_dir: str | None = attrs.field(default=None, metadata=option(input_path=True,
                                                                 help="goes with user_script"))
    device: str | None = attrs.field(
        default=None, metadata=option(help="the device tuned for (default: the target's; must be it)"))
    cpu_cores: int | None = attrs.field(
        default=None, validator=_ints_in(None),
        metadata=option(help="thread count tried when a thread list is not given (default: the "
                             "machine's physical cores)"))
    io_bind: bool = attrs.field(
        default=False, metadata=option(help="time with I/O binding (GPU providers only)"))
    enable_cuda_graph: bool = attrs.field(
        default=False, metadata=option(help="CUDA graphs (CUDAExecutionProvider with io_bind only)"))
    providers_list: str | list[str] | None = attrs.field(
        default=None, validator=_providers,
        metadata=option(help="execution providers to try (default: the target's)"))
    provider_options_list: dict[str, Any] | list[dict[str, Any]] = attrs.field(
        factory=dict, metadata=option(help="provider options to try (one dict or a list of them)"))
    execution_mode_list: int | list[int] | None = attrs.field(
        default=None, validator=_ints_in(EXECUTION_MODES),
        metadata=option(help="execution modes to try: 0 sequential, 1 parallel (default: ORT's)"))
    opt_level_list: int | list[int] | None = attrs.field(
        default=None, validator=_ints_in(OPT_LEVELS),
        metadata=option(help="graph optimization levels to try: 0, 1, 2, 3 or 99 (default: ORT's)"))
    trt_fp16_enable: bool = attrs.field(
        default=False, metadata=option(help="FP16 for TensorrtExecutionProvider (only with it)"))
    intra_thread_num_list: int | list[int] | None = attrs.field(
        default=None, validator=_ints_in(None),
        metadata=option(help="intra-op thread counts to try (default: cpu_cores)"))
    inter_thread_num_list: int | list[int] | None = attrs.field(
        default=None, validator=_ints_in(None),
        metadata=option(help="inter-op thread counts to try (default: cpu_cores in parallel mode, "
                             "ORT's otherwise)"))
    extra_session_config: dict[str, Any] | None = attrs.field(
        default=None, validator=_extra,
        metadata=option(help="session config entries set on every session tried "
                             "(session.intra_op_thread_affinities fixes the intra-op count)"))
    force_evaluate_other_eps: bool = attrs.field(
        default=False, metadata=option(help="allow providers_list entries other than the target's "
                                            "provider"))
    enable_profiling: bool = attrs.field(
        default=False, metadata=option(help="ONNX Runtime profiling of every session tried (files "
                                            "in the step's profiles/ folder)"))
    warmup_num: int = attrs.field(
        default=10, validator=_ints_in(None, 0),
        metadata=option(help="olivine: untimed runs before timing (Olive's latency default)"))
    repeat_test_num: int = attrs.field(
        default=20, validator=_ints_in(None),
        metadata=option(help="olivine: timed runs per setting (Olive's latency default)"))

    def providers(self, accelerator: Accelerator) -> list[str]:
        """The providers tried (the target's when none is given)."""
        given = [p for p in as_list(self.providers_list) if p is not None]
        return given or [accelerator.execution_provider]


def config_problems(config: SessionParamsTuningConfig, accelerator: Accelerator) -> list[str]:
    """What cannot apply on ``accelerator``: each a ``"key: message"``."""
    out = []
    target = accelerator.execution_provider
    providers = config.providers(accelerator)
    if config.user_script or config.script_dir:
        key = "user_script" if config.user_script else "script_dir"
        out.append(f"{key}: the pass reads data through data_config; set user_script and "
                   "script_dir on that data_configs entry instead")
    if config.device is not None and config.device != accelerator.device:
        out.append(f"device: {config.device!r} is not the target device {accelerator.device!r}; "
                   "the pass tunes on the target (set the system's accelerators instead)")
    others = [p for p in providers if p != target]
    if others and not config.force_evaluate_other_eps:
        out.append(f"providers_list: {', '.join(others)} is not the target's execution provider "
                   f"({target}); set force_evaluate_other_eps to try it anyway")
    if config.io_bind and not any(p in GPU_PROVIDERS for p in providers):
        out.append(f"io_bind: I/O binding needs a GPU execution provider; this pass tries "
                   f"{', '.join(providers)}")
    if config.enable_cuda_graph:
        if "CUDAExecutionProvider" not in providers:
            out.append(f"enable_cuda_graph: CUDA graphs need CUDAExecutionProvider; this pass "
                       f"tries {', '.join(providers)}")
        elif not config.io_bind:
            out.append("enable_cuda_graph: CUDA graphs need io_bind true")
        elif 1 in as_list(config.execution_mode_list):
            out.append("execution_mode_list: CUDA graphs do not run in parallel mode (1)")
    if config.trt_fp16_enable and "TensorrtExecutionProvider" not in providers:
        out.append(f"trt_fp16_enable: needs TensorrtExecutionProvider; this pass tries "
                   f"{', '.join(providers)}")
    options = as_list(config.provider_options_list)
    bad = [i for i, o in enumerate(options) if not isinstance(o, dict)]
    if bad:
        out.append(f"provider_options_list[{bad[0]}]: expected a mapping of provider options")
    return out


class OrtSessionParamsTuning(Pass):
    """Time ONNX Runtime session settings (threads, execution mode, optimization level,
    providers and their options, I/O binding) on the target and keep the fastest as the
    model's inference settings."""

    name = "OrtSessionParamsTuning"
    aliases = ("ort_session_params_tuning",)
    Config = SessionParamsTuningConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")
    version = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator,
              model: ModelHandle | None = None) -> list[str]:
        """Options that cannot apply on the target (GPU options on a CPU provider, ...)."""
        return config_problems(config, accelerator)

    def run(self, model: ModelHandle, config: SessionParamsTuningConfig,
            context: PassContext) -> OnnxModel:
        """Time every setting, write the table and the fastest settings."""
        from olivine_onnx.session_tuning import run_tuning

        return run_tuning(model, config, context)
