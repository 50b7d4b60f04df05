"""The options of the ``ModelBuilder`` pass and the checks made before anything runs."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from olivine import Accelerator, component_problem, did_you_mean, option
from olivine_modelbuilder import builder_info

Precision = Literal["fp32", "fp16", "bf16", "int8", "int4"]
Provider = Literal["cpu", "cuda", "dml", "webgpu", "NvTensorRtRtx"]
Algorithm = Literal["default", "rtn", "k_quant", "rtn_last", "k_quant_last", "k_quant_mixed",
                    "k_quant_linear"]

#: Builder option names that the input model or the pass itself sets; refused in extra_options.
OWNED_OPTIONS = {
    "hf_remote": "input_model.load_kwargs.trust_remote_code",
    "adapter_path": "input_model.adapter_path",
    "config_only": "the pass option metadata_only",
}

#: extra_options names that repeat a pass option (builder name -> pass option). As in Olive,
#: extra_options are passed after the pass options; olivine accepts a repeated one when the pass
#: option is unset (at its default) or has the same value, and refuses it when the two conflict.
#: ``int4_*`` are the builder's old names, which 0.18 no longer reads; the pass option carries them.
REPEATED_OPTIONS = {
    "block_size": "int4_block_size", "int4_block_size": "int4_block_size",
    "accuracy_level": "int4_accuracy_level", "int4_accuracy_level": "int4_accuracy_level",
    "is_symmetric": "int4_is_symmetric", "int4_is_symmetric": "int4_is_symmetric",
    "algo_config": "int4_algo", "int4_algo_config": "int4_algo",
    "op_types_to_quantize": "int4_op_types_to_quantize",
    "int4_op_types_to_quantize": "int4_op_types_to_quantize",
    "nodes_to_exclude": "int4_nodes_to_exclude", "int4_nodes_to_exclude": "int4_nodes_to_exclude",
    "exclude_embeds": "exclude_embeds", "exclude_lm_head": "exclude_lm_head",
    "enable_cuda_graph": "enable_cuda_graph", "use_qdq": "use_qdq", "use_8bits_moe": "use_8bits_moe",
    "use_webgpu_fp32": "use_webgpu_fp32", "use_cuda_bf16": "use_cuda_bf16",
    "include_hidden_states": "include_hidden_states",
}

#: Pass options passed to the builder under its own name when set (Olive's boolean options).
FLAG_OPTIONS = ("enable_cuda_graph", "use_qdq", "use_8bits_moe", "use_webgpu_fp32", "use_cuda_bf16",
                "include_hidden_states")

#: Flags that only mean something for one provider: (provider, what happens elsewhere).
PROVIDER_FLAGS = {
    "enable_cuda_graph": ("cuda", "CUDA graph capture is a CUDA execution provider setting"),
    "use_cuda_bf16": ("cuda", "bf16 I/O is built for the CUDA execution provider only"),
    "use_webgpu_fp32": ("webgpu", "fp32 WebGPU kernels are a WebGPU execution provider setting"),
}

#: Builder options whose value becomes a file name in the output folder.
NAME_OPTIONS = ("filename",)
#: Builder options naming files or folders the builder reads (their content enters the step's key).
INPUT_OPTIONS = ("dflash2_path", "dspark_path", "kv_cache_scale_file")

#: Search options of genai_config.json (``search`` section) that onnxruntime-genai reads.
SEARCH_OPTIONS = ("do_sample", "max_length", "min_length", "num_beams", "num_return_sequences",
                  "temperature", "top_k", "top_p", "repetition_penalty", "length_penalty",
                  "diversity_penalty", "early_stopping", "no_repeat_ngram_size",
                  "past_present_share_buffer", "random_seed", "chunk_size")

_SCALARS = (str, int, float, bool)


def _check_block_size(instance: Any, attribute: Any, value: int) -> None:
    if not 16 <= value <= 256 or value & (value - 1):
        raise ValueError(f"int4_block_size: must be a power of two from 16 to 256 "
                         f"(16, 32, 64, 128 or 256), got {value}")


def _check_accuracy(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and not 0 <= value <= 4:
        raise ValueError(f"int4_accuracy_level: must be 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) "
                         f"or 4 (int8), got {value}")


def _check_extra_options(instance: Any, attribute: Any, value: dict[str, Any]) -> None:
    known = builder_info.known_options()
    unknown = []
    for key, item in value.items():
        if key in OWNED_OPTIONS:
            raise ValueError(f"extra_options.{key}: set through {OWNED_OPTIONS[key]}, not "
                             "extra_options")
        if key in REPEATED_OPTIONS:
            continue  # reconciled with the pass option in ModelBuilderConfig.__attrs_post_init__
        if key not in known:
            unknown.append(key)
            continue
        ok = isinstance(item, _SCALARS) or (
            isinstance(item, list) and all(isinstance(i, str) for i in item))
        if not ok:
            raise ValueError(f"extra_options.{key}: expected a string, number, bool or list of "
                             f"strings, got {type(item).__name__}")
        if key in NAME_OPTIONS:  # joined to the step's folder by the builder: one file name
            problem = component_problem(str(item)) if isinstance(item, str) else "must be a name"
            if problem is not None:
                raise ValueError(f"extra_options.{key}: {item!r} {problem}; give a file name "
                                 "such as model.onnx")
    if unknown:
        first = unknown[0]
        more = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        raise ValueError(
            f"extra_options.{first}: unknown model-builder option{did_you_mean(first, known)}"
            f"{more}; onnxruntime-genai {builder_info.genai_version()} would silently ignore it. "
            f"Known options: {', '.join(sorted(known))}")


def _check_search(instance: Any, attribute: Any, value: dict[str, Any]) -> None:
    for key, item in value.items():
        if key not in SEARCH_OPTIONS:
            raise ValueError(f"search.{key}: unknown search option{did_you_mean(key, SEARCH_OPTIONS)}"
                             f"; known: {', '.join(SEARCH_OPTIONS)}")
        if not isinstance(item, int | float | bool):
            raise ValueError(f"search.{key}: expected a number or bool, got {item!r}")


@attrs.frozen
class ModelBuilderConfig:
    """Options of ``ModelBuilder`` (Olive's names; ``olivine passes ModelBuilder`` lists them)."""

    precision: Precision = attrs.field(metadata=option(
        help="weights and activations: fp32, fp16, bf16, int8 or int4 (int8/int4 quantize "
             "the MatMul weights to MatMulNBits; activations stay fp32 on CPU)",
        search=("fp32", "int8", "int4")))
    int4_block_size: int = attrs.field(default=32, validator=_check_block_size, metadata=option(
        help="weights per quantization block (16, 32, 64, 128, 256); int4 and int8",
        aliases=("block_size",), search=(32, 64, 128)))
    int4_accuracy_level: int | None = attrs.field(default=None, validator=_check_accuracy, metadata=option(
        help="MatMulNBits compute type: 1 fp32, 2 fp16, 3 bf16, 4 int8 (null: the builder's "
             "default, 4 on cpu and webgpu, 0 elsewhere)",
        aliases=("accuracy_level",), search=(None, 4)))
    int4_is_symmetric: bool = attrs.field(default=True, metadata=option(
        help="symmetric quantization (no zero points); false stores a zero point per block",
        aliases=("is_symmetric",), search=(True, False)))
    int4_algo: Algorithm = attrs.field(default="default", metadata=option(
        help="weight quantization method: default (ORT's blockwise quantizer), rtn, k_quant "
             "(always stores zero points), or the builder's compound aliases (rtn_last, "
             "k_quant_last, k_quant_mixed, k_quant_linear: the last MatMul, and more, in int8)",
        aliases=("int4_algo_config", "algo_config"), search=("default", "rtn", "k_quant")))
    execution_provider: Provider | None = attrs.field(default=None, metadata=option(
        help="build for this provider (cpu, cuda, dml, webgpu, NvTensorRtRtx); null: the "
             "workflow's target accelerator"))
    exclude_embeds: bool = attrs.field(default=False, metadata=option(
        help="leave the embedding out: the model takes inputs_embeds instead of input_ids"))
    exclude_lm_head: bool = attrs.field(default=False, metadata=option(
        help="leave the LM head out: the model returns hidden_states instead of logits"))
    extra_options: dict[str, Any] = attrs.field(factory=dict, validator=_check_extra_options,
                                                metadata=option(input_path=INPUT_OPTIONS,
        help="other model-builder options, passed through (names are checked against the "
             "installed builder, which ignores names it does not know)"))
    search: dict[str, Any] = attrs.field(factory=dict, validator=_check_search, metadata=option(
        help="generation defaults written into genai_config.json's search section "
             "(max_length, do_sample, top_k, temperature, ...)"))
    int4_op_types_to_quantize: list[str] | None = attrs.field(default=None, metadata=option(
        help="op types quantized to n bits (null: the builder's default, MatMul; e.g. "
             "[\"MatMul\", \"Gemm\"])"))
    int4_nodes_to_exclude: list[str] | None = attrs.field(default=None, metadata=option(
        help="node names left in float by the builder's quantizer"))
    use_qdq: bool | None = attrs.field(default=None, metadata=option(
        help="QuantizeLinear/DequantizeLinear around MatMul instead of MatMulNBits"))
    use_8bits_moe: bool | None = attrs.field(default=None, metadata=option(
        help="8-bit weights in QMoE ops (mixture-of-experts models)"))
    use_webgpu_fp32: bool | None = attrs.field(default=None, metadata=option(
        help="fp32 for GPUs without fp16 on WebGPU (a WebGPU setting; warned elsewhere)"))
    use_cuda_bf16: bool | None = attrs.field(default=None, metadata=option(
        help="bf16 I/O for quantized models on CUDA (a CUDA setting; warned elsewhere)"))
    include_hidden_states: bool | None = attrs.field(default=None, metadata=option(
        help="also output the hidden states"))
    enable_cuda_graph: bool | None = attrs.field(default=None, metadata=option(
        help="write CUDA graph capture into genai_config.json's CUDA provider options (a CUDA "
             "setting: built for another provider it has no effect, and the run warns)"))
    metadata_only: bool = attrs.field(default=False, metadata=option(
        help="take an ONNX model (OnnxConversion with save_metadata_for_token_generation) "
             "and write only genai_config.json and the tokenizer files beside it; the ONNX "
             "graph is kept as it is"))
    use_ort_genai: bool = attrs.field(default=True, metadata=option(
        help="accepted for Olive configs; the output always has genai_config.json and the "
             "tokenizer, so onnxruntime-genai can load it"))
    use_dynamo_exporter: bool = attrs.field(default=False, metadata=option(
        help="accepted for Olive configs; ignored: the model builder writes the ONNX graph "
             "itself and uses no torch exporter"))


    def __attrs_post_init__(self) -> None:
        """Reconcile pass options repeated in extra_options (Olive passes extra_options last)."""
        extra = dict(self.extra_options)
        defaults = {f.name: f.default for f in attrs.fields(type(self))}
        adopted: dict[str, Any] = {}
        for key in [k for k in extra if k in REPEATED_OPTIONS]:
            field = REPEATED_OPTIONS[key]
            value = _normalized(field, extra.pop(key))
            current = adopted.get(field, getattr(self, field))
            if current == value:
                continue
            if current == defaults[field] and field not in adopted:
                adopted[field] = value
                continue
            raise ValueError(f"extra_options.{key}: {value!r} conflicts with the pass option "
                             f"{field} ({current!r}); give the value once")
        if not adopted and extra == self.extra_options:
            return
        for field, value in adopted.items():
            object.__setattr__(self, field, value)
        object.__setattr__(self, "extra_options", extra)
        attrs.validate(self)


def _normalized(field: str, value: Any) -> Any:
    """An extra_options value in the pass option's form (the builder also takes strings)."""
    if isinstance(value, str):
        low = value.strip().lower()
        if field in ("int4_block_size", "int4_accuracy_level") and low.isdigit():
            return int(low)
        if low in ("true", "false", "1", "0") and field not in ("int4_algo",):
            return low in ("true", "1")
        if field in ("int4_op_types_to_quantize", "int4_nodes_to_exclude"):
            return [v for v in value.replace("/", ",").split(",") if v]
    return value


def resolve_provider(config: ModelBuilderConfig, accelerator: Accelerator) -> str:
    """The builder's provider name: the option, else the accelerator's; an accelerator whose
    provider the builder does not know gets ``cpu``, as in Olive (see :func:`provider_fallback`)."""
    if config.execution_provider is not None:
        return config.execution_provider
    short = accelerator.provider_short
    return short if short in builder_info.BUILDER_PROVIDERS else "cpu"


def provider_fallback(config: ModelBuilderConfig, accelerator: Accelerator) -> str | None:
    """What to tell the user when the target's provider is unknown to the builder and the
    model is built for ``cpu`` instead (Olive's silent fallback); ``None`` otherwise."""
    if config.execution_provider is not None:
        return None
    if accelerator.provider_short in builder_info.BUILDER_PROVIDERS:
        return None
    return (f"the model builder has no {accelerator.execution_provider} target (it builds for "
            f"{', '.join(builder_info.BUILDER_PROVIDERS)}); built for cpu instead, as Olive "
            "does. Set execution_provider to choose another")


def check_config(config: ModelBuilderConfig, accelerator: Accelerator) -> list[str]:
    """Problems of ``config`` for ``accelerator`` that are known before the model is read."""
    provider = resolve_provider(config, accelerator)
    problems = []
    valid = builder_info.VALID_COMBINATIONS.get(provider, ())
    if config.precision not in valid:
        why = (" (the builder writes it, but ONNX Runtime's CPU provider cannot run it: fp16 "
               "fails in a Cast kernel at the first decode step, bf16 when the session is created)"
               if provider == "cpu" else "")
        problems.append(f"precision: {config.precision} cannot run on the {provider} provider"
                        f"{why}; use one of {', '.join(valid)}")
    if config.int4_algo != "default" and config.precision not in ("int4", "int8"):
        problems.append(f"int4_algo: {config.int4_algo} quantizes weights, but precision is "
                        f"{config.precision}; use precision int4 or int8")
    return problems


def builder_options(config: ModelBuilderConfig) -> dict[str, Any]:
    """The builder's ``extra_options`` for ``config`` (its names and values)."""
    options: dict[str, Any] = dict(config.extra_options)
    if config.precision in ("int4", "int8"):
        options["block_size"] = config.int4_block_size
        options["is_symmetric"] = config.int4_is_symmetric
        if config.int4_accuracy_level is not None:
            options["accuracy_level"] = config.int4_accuracy_level
        if config.int4_algo != "default":
            options["algo_config"] = config.int4_algo
    if config.precision in ("int4", "int8"):
        if config.int4_op_types_to_quantize:
            options["op_types_to_quantize"] = list(config.int4_op_types_to_quantize)
        if config.int4_nodes_to_exclude:
            options["nodes_to_exclude"] = list(config.int4_nodes_to_exclude)
    if config.exclude_embeds:
        options["exclude_embeds"] = True
    if config.exclude_lm_head:
        options["exclude_lm_head"] = True
    for flag in FLAG_OPTIONS:
        if getattr(config, flag) is not None:
            options[flag] = bool(getattr(config, flag))
    return options


def provider_warnings(config: ModelBuilderConfig, provider: str) -> list[str]:
    """Options set for another provider than the one built for: accepted (as Olive does) and
    said, since they have no effect."""
    out = []
    for flag, (wanted, what) in PROVIDER_FLAGS.items():
        if getattr(config, flag) and provider != wanted:
            out.append(f"{flag}: {what}; building for {provider}, it has no effect")
    if config.precision not in ("int4", "int8"):
        for name in ("int4_op_types_to_quantize", "int4_nodes_to_exclude"):
            if getattr(config, name):
                out.append(f"{name}: applies to int4/int8 weights; precision is {config.precision}, "
                           "so it has no effect")
    return out
