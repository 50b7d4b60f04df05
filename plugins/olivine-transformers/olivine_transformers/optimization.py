"""``OrtTransformersOptimization`` (ONNX Runtime transformer fusions) and ``OnnxFloatToFloat16``.

Light module: onnxruntime is imported by :mod:`._fusion` when a pass runs.
"""

from __future__ import annotations

from typing import Any

import attrs

from olivine import Accelerator, ModelHandle, OnnxModel, Pass, PassContext, did_you_mean, option
from olivine.onnxsave import ExternalDataOptions

#: onnxruntime.transformers.optimizer.MODEL_TYPES of ORT 1.17 .. 1.32; checked again at run time.
FUSION_MODEL_TYPES = ("bart", "bert", "bert_tf", "bert_keras", "clip", "conformer", "gpt2",
                      "gpt2_tf", "gpt_neox", "mmdit", "phi", "qwen3", "sam2", "swin", "t5", "tnlr",
                      "unet", "vae", "vit")

#: transformers ``model_type`` values whose graphs the ``bert`` fuser handles.
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert", "mpnet",
             "albert", "deberta", "ernie", "minilm", "xlm", "flaubert", "layoutlm", "bert-generation")

#: Olive/ONNX Runtime names of graph optimization levels.
OPT_LEVELS = {"disable": 0, "disabled": 0, "basic": 1, "extended": 2, "layout": 99, "all": 99}


def _opt_level(value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return OPT_LEVELS.get(str(value).lower(), -1)


def _check_opt_level(instance: Any, attribute: attrs.Attribute, value: int | str | None) -> None:
    level = _opt_level(value)
    if level is not None and level not in (0, 1, 2, 99):
        raise ValueError(f"opt_level: expected 0, 1, 2 or 99 (or disable, basic, extended, all), "
                         f"got {value!r}{did_you_mean(str(value), list(OPT_LEVELS))}")


def _check_model_type(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value and value not in FUSION_MODEL_TYPES and value not in BERT_LIKE:
        raise ValueError(
            f"model_type: ONNX Runtime's transformer optimizer does not know {value!r}"
            f"{did_you_mean(value, FUSION_MODEL_TYPES)}; it knows "
            f"{', '.join(FUSION_MODEL_TYPES)} (encoders like roberta or distilbert use 'bert')")


def _force_fp16_inputs(instance: Any, attribute: attrs.Attribute,
                       value: dict[str, list[int]] | None) -> None:
    for op, indices in (value or {}).items():
        if any(i < 0 for i in indices):
            raise ValueError(f"{attribute.name}.{op}: input indices must be >= 0, got {indices}")


@attrs.frozen
class FusionConfig(ExternalDataOptions):
    """Options of ``OrtTransformersOptimization`` (Olive's names)."""

    model_type: str | None = attrs.field(
        default=None, validator=_check_model_type,
        metadata=option(help="fuser to use (bert, gpt2, t5, vit, ...); empty or absent: from the "
                             "model's transformers model_type (recorded by the conversion or in a "
                             "config.json beside the model); the pass is skipped with a warning "
                             "when the model records none ONNX Runtime knows (as Olive)"))
    num_heads: int = attrs.field(default=0, metadata=option(help="attention heads; 0: detect"))
    num_key_value_heads: int = attrs.field(
        default=0, metadata=option(help="key/value heads (for use_gqa); 0: from the model"))
    hidden_size: int = attrs.field(default=0, metadata=option(help="hidden size; 0: detect"))
    opt_level: int | str | None = attrs.field(
        default=None, validator=_check_opt_level,
        metadata=option(aliases=("optimization_level",),
                  help="ONNX Runtime graph optimizations before fusion: 0/disable, 1/basic, "
                       "2/extended, 99/all; default: the fuser's choice for the model type"))
    only_onnxruntime: bool = attrs.field(
        default=False, metadata=option(help="only ONNX Runtime's optimizer, no Python fusions"))
    use_gpu: bool | None = attrs.field(
        default=None, metadata=option(help="optimize for a GPU provider; default: true when the "
                                           "target's provider is not the CPU's (as Olive)"))
    optimization_options: dict[str, Any] | None = attrs.field(
        default=None, metadata=option(help="FusionOptions switches, e.g. {\"enable_gelu\": false}"))
    float16: bool = attrs.field(default=False, metadata=option(help="convert to float16 after fusion"))
    keep_io_types: bool = attrs.field(
        default=True, metadata=option(help="with float16: keep float32 inputs and outputs"))
    force_fp32_ops: list[str] | None = attrs.field(
        default=None, metadata=option(help="with float16: op types kept in float32"))
    force_fp32_nodes: list[str] | None = attrs.field(
        default=None, metadata=option(help="with float16: node names kept in float32"))
    force_fp16_inputs: dict[str, list[int]] | None = attrs.field(
        default=None, validator=_force_fp16_inputs,
        metadata=option(help="with float16: {op type: [input indices]} converted to float16 even "
                             "where the converter would keep float32"))
    use_gqa: bool = attrs.field(
        default=False, metadata=option(help="replace MultiHeadAttention with GroupQueryAttention "
                                            "(with float16); not implemented in olivine: an error"))
    input_int32: bool = attrs.field(
        default=False, metadata=option(help="int64 graph inputs become int32"))
    require_fused: list[str] = attrs.field(
        factory=list, metadata=option(help="fail unless each of these op types was fused at least "
                                           "once (e.g. [\"Attention\"])"))

    def level(self) -> int | None:
        """``opt_level`` as ONNX Runtime's integer."""
        return _opt_level(self.opt_level)


class OrtTransformersOptimization(Pass):
    """Fuse attention, layer norm, GELU and embeddings with ONNX Runtime's transformer optimizer."""

    name = "OrtTransformersOptimization"
    aliases = ("ort_transformers_optimization", "OrtTransformerOptimization")
    Config = FusionConfig
    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx", "onnxruntime")
    #: onnxruntime's optimizer imports torch when it runs ONNX Runtime's graph optimization
    #: first (opt_level unset or > 0, the default)
    preload = ("onnx", "onnxruntime.transformers.optimizer", "torch")
    version = "2"

    @classmethod
    def check(cls, config: FusionConfig, accelerator: Accelerator,
              model: Any = None) -> list[str]:
        """Olive's rules: float16 and use_gpu target GPUs, use_gqa needs float16, ..."""
        out = []
        cpu = accelerator.execution_provider == "CPUExecutionProvider"
        if config.float16 and (accelerator.device == "cpu" or cpu):
            out.append("float16: ONNX Runtime runs fused float16 models on GPU execution "
                       "providers; target a gpu accelerator or set float16 to false")
        if config.use_gpu and cpu:
            out.append("use_gpu: the target's provider is CPUExecutionProvider; set use_gpu to "
                       "false or target a GPU provider")
        if config.use_gqa:
            out.append("use_gqa: replacing MultiHeadAttention with GroupQueryAttention is not "
                       "implemented in olivine yet; set use_gqa to false")
        level = config.level()
        if config.only_onnxruntime and (level is None or level <= 0):
            out.append("opt_level: only_onnxruntime needs a positive opt_level (1, 2 or 99)")
        return out

    def run(self, model: ModelHandle, config: FusionConfig, context: PassContext) -> OnnxModel:
        """Fuse, optionally convert to float16, record the fused-op counts."""
        from olivine_transformers._fusion import fuse

        return fuse(model, config, context)


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name}: expected a positive number, got {value}")


@attrs.frozen
class Float16Config(ExternalDataOptions):
    """Options of ``OnnxFloatToFloat16`` (Olive's names)."""

    keep_io_types: bool = attrs.field(
        default=False, metadata=option(help="keep float32 model inputs and outputs"))
    op_block_list: list[str] | None = attrs.field(
        default=None, metadata=option(help="op types left in float32 (default: ONNX Runtime's list)"))
    node_block_list: list[str] | None = attrs.field(
        default=None, metadata=option(help="node names left in float32"))
    min_positive_val: float = attrs.field(default=1e-7, validator=_positive,
                                          metadata=option(help="smaller magnitudes clamp to this"))
    max_finite_val: float = attrs.field(default=1e4, validator=_positive,
                                        metadata=option(help="larger magnitudes clamp to this"))
    force_fp16_initializers: bool = attrs.field(
        default=False, metadata=option(help="convert float initializers feeding blocked ops too"))
    use_symbolic_shape_infer: bool = attrs.field(
        default=True, metadata=option(help="ONNX Runtime's symbolic shape inference (else ONNX's) "
                                           "to type the graph before converting"))
    op_include_list: list[str] | None = attrs.field(
        default=None, metadata=option(help="only these op types in float16 (the others are "
                                           "blocked); excludes op_block_list"))
    node_include_list: list[str] | None = attrs.field(
        default=None, metadata=option(help="only these node names in float16; excludes "
                                           "node_block_list"))


class OnnxFloatToFloat16(Pass):
    """Convert an ONNX model's float32 weights and computation to float16."""

    name = "OnnxFloatToFloat16"
    aliases = ("onnx_float_to_float16", "OnnxFloat16")
    Config = Float16Config
    accepts = ("onnx",)
    produces = "onnx"
    libraries = ("onnx", "onnxruntime")
    version = "2"

    @classmethod
    def check(cls, config: Float16Config, accelerator: Accelerator,
              model: Any = None) -> list[str]:
        """The include and block lists exclude each other (as Olive)."""
        out = []
        if config.op_include_list and config.op_block_list:
            out.append("op_include_list: op_include_list and op_block_list exclude each other")
        if config.node_include_list and config.node_block_list:
            out.append("node_include_list: node_include_list and node_block_list exclude "
                       "each other")
        return out

    def run(self, model: ModelHandle, config: Float16Config, context: PassContext) -> OnnxModel:
        """Convert and save."""
        from olivine_transformers._fusion import to_float16

        return to_float16(model, config, context)
