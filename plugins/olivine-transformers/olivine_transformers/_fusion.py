"""The work of ``OrtTransformersOptimization`` and ``OnnxFloatToFloat16`` (imports onnxruntime)."""

from __future__ import annotations

import logging
from typing import Any

from olivine import ModelHandle, OlivineError, OnnxModel, PassContext, UsageError
from olivine.onnxsave import save_onnx
from olivine.ortshapes import lean_shape_inference
from olivine_transformers.onnx_io import load_proto, model_facts, model_file
from olivine_transformers.optimization import (
    BERT_LIKE,
    Float16Config,
    FusionConfig,
)

log = logging.getLogger("olivine.pass.OrtTransformersOptimization")

#: Fused op types counted for the output handle's ``fused_ops`` attribute.
COUNTED_OPS = ("EmbedLayerNormalization", "Attention", "MultiHeadAttention", "GroupQueryAttention",
               "Gelu", "FastGelu", "BiasGelu", "GemmFastGelu", "QuickGelu", "LayerNormalization",
               "SimplifiedLayerNormalization", "SkipLayerNormalization",
               "SkipSimplifiedLayerNormalization", "RotaryEmbedding", "BiasAdd", "BiasSplitGelu")


#: transformers model_type -> ONNX Runtime fuser, where the names differ (Olive's mapping).
FUSER_OF = {"gpt_neox": "gpt2", "gpt-j": "gpt2", "gptj": "gpt2", "llama": "gpt2", "phi3": "phi",
            **{name: "bert" for name in BERT_LIKE if name != "bert"}, "deberta-v2": "bert"}


def resolve_model_type(model: ModelHandle, config: FusionConfig) -> tuple[str | None, str]:
    """The fuser name and where it came from; ``None`` when the pass is to be skipped.

    An explicit ``model_type`` must be known to this onnxruntime (an error otherwise); an
    empty or absent one comes from the model's transformers ``model_type`` (handle
    attributes or ``config.json`` beside it) through Olive's mapping, and when that gives no
    fuser ONNX Runtime knows the pass is skipped, as Olive does.
    """
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    if config.model_type:
        wanted = FUSER_OF.get(config.model_type, config.model_type)
        if wanted not in MODEL_TYPES:
            raise UsageError(f"model_type {config.model_type!r} is not known to this "
                             f"onnxruntime's transformer optimizer; it knows "
                             f"{', '.join(sorted(MODEL_TYPES))}")
        return wanted, "model_type"
    recorded = model_facts(model).get("model_type")
    if recorded is None:
        return None, "the model records no transformers model_type"
    wanted = FUSER_OF.get(str(recorded), str(recorded))
    if wanted not in MODEL_TYPES:
        return None, f"the model's transformers model_type {recorded!r} has no fuser"
    return wanted, f"the model's transformers model_type {recorded!r}"


def count_ops(proto: Any) -> dict[str, int]:
    """How many nodes of each fused op type the graph holds (zero counts left out)."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type in COUNTED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _all_fusion_options() -> list[str]:
    """Every option ONNX Runtime's FusionOptions has for some model type."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    return sorted({k for t in MODEL_TYPES for k in vars(FusionOptions(t)) if not k.startswith("_")})


def fuse(model: ModelHandle, config: FusionConfig, context: PassContext) -> OnnxModel:
    """Run ONNX Runtime's transformer optimizer on ``model``; save into ``context.work_dir``."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type, origin = resolve_model_type(model, config)
    if model_type is None:
        return _skip(model, config, context, origin)
    if model_type == "phi" and not load_proto(model, load_external_data=False).functions:
        model_type = "bert"  # not a dynamo export: Olive fuses it as bert
    attrs_in = model.attrs_dict()
    facts = model_facts(model)
    num_heads = config.num_heads or int(facts.get("num_attention_heads") or 0)
    hidden_size = config.hidden_size or int(facts.get("hidden_size") or 0)
    options = FusionOptions(model_type)
    for key, value in (config.optimization_options or {}).items():
        if not hasattr(options, key):
            known = _all_fusion_options()
            if key not in known:
                raise UsageError(f"optimization_options: unknown option {key!r}; FusionOptions "
                                 f"has {', '.join(known)}")
            # an option of other model types (unet/vae: enable_nhwc_conv, enable_packed_qkv..):
            # Olive sets it as well; the fusions of this model type never read it
            context.logger.warning("optimization_options.%s: FusionOptions uses it for other "
                                   "model types, not %s; it has no effect here", key, model_type)
        setattr(options, key, value)
    source = model_file(model)
    context.progress(0, 3, f"fusing {source.name} as {model_type} (heads {num_heads or 'auto'}, "
                           f"hidden {hidden_size or 'auto'})")
    before = count_ops(load_proto(model, load_external_data=False))
    use_gpu = config.use_gpu if config.use_gpu is not None else (
        context.accelerator.execution_provider != "CPUExecutionProvider")
    with lean_shape_inference():  # the same model, without copies of its weights
        try:
            optimizer = optimize_model(
                str(source), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                optimization_options=options, opt_level=config.level(), use_gpu=use_gpu,
                only_onnxruntime=config.only_onnxruntime,
                provider=_provider(context) if use_gpu else None)
        except Exception as exc:
            raise OlivineError(f"ONNX Runtime's {model_type} optimizer failed on {source.name}: "
                               f"{type(exc).__name__}: {exc}") from exc
        if config.float16:
            context.progress(1, 3, "converting to float16")
            optimizer.convert_float_to_float16(
                keep_io_types=config.keep_io_types, op_block_list=config.force_fp32_ops,
                node_block_list=config.force_fp32_nodes,
                force_fp16_inputs=config.force_fp16_inputs)
    if config.input_int32:
        optimizer.change_graph_inputs_to_int32()
    optimizer.topological_sort()
    counts = count_ops(optimizer.model)
    fused = {op: n - before.get(op, 0) for op, n in counts.items() if n - before.get(op, 0) > 0}
    log.info("fused ops (%s): %s", model_type, fused or "none")
    if "Attention" not in counts and "MultiHeadAttention" not in counts and model_type == "bert":
        log.warning("no attention was fused; export with the TorchScript exporter and "
                    "attn_implementation \"eager\" for ONNX Runtime to recognize attention")
    missing = [op for op in config.require_fused if not counts.get(op)]
    if missing:
        raise OlivineError(f"require_fused: no {', '.join(missing)} node was fused "
                           f"(fused: {fused or 'none'})")
    context.progress(2, 3, "saving")
    result = save_onnx(optimizer.model, context.work_dir, config, source=model, fused_ops=fused,
                       fusion_model_type=model_type,
                       float16=bool(config.float16 or attrs_in.get("float16")))
    context.progress(3, 3, "done")
    return result


def _provider(context: PassContext) -> str | None:
    """The target's provider as ``optimize_model`` names it (cuda, rocm, ...), when available."""
    import onnxruntime as ort

    ep = context.accelerator.execution_provider
    if ep not in ort.get_available_providers():
        return None
    return ep.replace("ExecutionProvider", "").lower()


def _skip(model: ModelHandle, config: FusionConfig, context: PassContext,
          why: str) -> OnnxModel:
    """Olive's behaviour without a known model type: the model passes through unchanged."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    context.logger.warning(
        "OrtTransformersOptimization skipped: model_type is empty and %s; set model_type to one "
        "of %s to fuse", why, ", ".join(sorted(MODEL_TYPES)))
    context.progress(0, 1, f"skipped ({why})")
    result = save_onnx(load_proto(model), context.work_dir, config, source=model,
                       fusion_skipped=why)
    context.progress(1, 1, "done")
    return result


def to_float16(model: ModelHandle, config: Float16Config, context: PassContext) -> OnnxModel:
    """Convert ``model`` to float16 with onnxruntime.transformers.float16."""
    from onnxruntime.transformers.onnx_model import OnnxModel as OrtOnnxModel

    context.progress(0, 2, "converting to float16")
    proto = load_proto(model)
    op_block = config.op_block_list
    if config.op_include_list:
        op_block = sorted({n.op_type for n in proto.graph.node} - set(config.op_include_list))
    node_block = config.node_block_list
    if config.node_include_list:
        node_block = [n.name for n in proto.graph.node if n.name not in config.node_include_list]
    kwargs: dict[str, Any] = {
        "keep_io_types": config.keep_io_types, "min_positive_val": config.min_positive_val,
        "max_finite_val": config.max_finite_val,
        "force_fp16_initializers": config.force_fp16_initializers,
    }
    if op_block is not None:
        kwargs["op_block_list"] = op_block
    if node_block is not None:
        kwargs["node_block_list"] = node_block
    try:
        wrapper = OrtOnnxModel(proto)
        with lean_shape_inference():
            wrapper.convert_float_to_float16(
                use_symbolic_shape_infer=config.use_symbolic_shape_infer, **kwargs)
        converted = wrapper.model
    except Exception as exc:
        raise OlivineError(f"float16 conversion failed: {type(exc).__name__}: {exc}") from exc
    context.progress(1, 2, "saving")
    result = save_onnx(converted, context.work_dir, config, source=model, float16=True)
    context.progress(2, 2, "done")
    return result
