"""The work of ``OrtTransformersOptimization`` and ``OnnxFloatToFloat16`` (imports onnxruntime)."""

from __future__ import annotations

import logging
from typing import Any

from olivine.errors import OlivineError, UsageError
from olivine.models import ModelHandle, OnnxModel
from olivine.passes import PassContext
from olivine_transformers.onnx_io import (
    copy_sidecar_files,
    load_proto,
    model_facts,
    model_file,
    output_handle,
    save_proto,
)
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


def resolve_model_type(model: ModelHandle, config: FusionConfig) -> str:
    """The fuser name: the config's, or one derived from the recorded transformers model_type."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    wanted = config.model_type
    if wanted is None:
        recorded = model_facts(model).get("model_type")
        if recorded is None:
            raise UsageError("OrtTransformersOptimization: model_type is not set and the input "
                             "model does not record one (no OnnxConversion attributes and no "
                             "config.json beside it); set model_type, e.g. \"bert\"")
        wanted = str(recorded).replace("-", "_")
        if wanted not in MODEL_TYPES and str(recorded) not in BERT_LIKE:
            raise UsageError(f"OrtTransformersOptimization: no fuser for transformers model_type "
                             f"{recorded!r}; set model_type to one of {', '.join(sorted(MODEL_TYPES))}")
    if wanted in BERT_LIKE and wanted not in MODEL_TYPES:
        wanted = "bert"
    if wanted not in MODEL_TYPES:
        raise UsageError(f"model_type {wanted!r} is not known to this onnxruntime's transformer "
                         f"optimizer; it knows {', '.join(sorted(MODEL_TYPES))}")
    return wanted


def count_ops(proto: Any) -> dict[str, int]:
    """How many nodes of each fused op type the graph holds (zero counts left out)."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type in COUNTED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def fuse(model: ModelHandle, config: FusionConfig, context: PassContext) -> OnnxModel:
    """Run ONNX Runtime's transformer optimizer on ``model``; save into ``context.work_dir``."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = resolve_model_type(model, config)
    attrs_in = model.attrs_dict()
    facts = model_facts(model)
    num_heads = config.num_heads or int(facts.get("num_attention_heads") or 0)
    hidden_size = config.hidden_size or int(facts.get("hidden_size") or 0)
    options = FusionOptions(model_type)
    for key, value in (config.optimization_options or {}).items():
        if not hasattr(options, key):
            known = sorted(k for k in vars(options) if not k.startswith("_"))
            raise UsageError(f"optimization_options: unknown option {key!r}; FusionOptions has "
                             f"{', '.join(known)}")
        setattr(options, key, value)
    source = model_file(model)
    context.progress(0, 3, f"fusing {source.name} as {model_type} (heads {num_heads or 'auto'}, "
                           f"hidden {hidden_size or 'auto'})")
    before = count_ops(load_proto(model, load_external_data=False))
    try:
        optimizer = optimize_model(
            str(source), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
            optimization_options=options, opt_level=config.level(), use_gpu=config.use_gpu,
            only_onnxruntime=config.only_onnxruntime,
            provider=context.accelerator.execution_provider if config.use_gpu else None)
    except Exception as exc:
        raise OlivineError(f"ONNX Runtime's {model_type} optimizer failed on {source.name}: "
                           f"{type(exc).__name__}: {exc}") from exc
    if config.float16:
        context.progress(1, 3, "converting to float16")
        optimizer.convert_float_to_float16(
            keep_io_types=config.keep_io_types, op_block_list=config.force_fp32_ops,
            node_block_list=config.force_fp32_nodes)
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
    save_proto(optimizer.model, context.work_dir)
    copy_sidecar_files(model, context.work_dir)
    context.progress(3, 3, "done")
    return output_handle(model, context.work_dir, fused_ops=fused, fusion_model_type=model_type,
                         float16=bool(config.float16 or attrs_in.get("float16")))


def to_float16(model: ModelHandle, config: Float16Config, context: PassContext) -> OnnxModel:
    """Convert ``model`` to float16 with onnxruntime.transformers.float16."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    context.progress(0, 2, "converting to float16")
    proto = load_proto(model)
    kwargs: dict[str, Any] = {
        "keep_io_types": config.keep_io_types, "min_positive_val": config.min_positive_val,
        "max_finite_val": config.max_finite_val,
        "force_fp16_initializers": config.force_fp16_initializers,
    }
    if config.op_block_list is not None:
        kwargs["op_block_list"] = config.op_block_list
    if config.node_block_list is not None:
        kwargs["node_block_list"] = config.node_block_list
    try:
        converted = convert_float_to_float16(proto, **kwargs)
    except Exception as exc:
        raise OlivineError(f"float16 conversion failed: {type(exc).__name__}: {exc}") from exc
    context.progress(1, 2, "saving")
    save_proto(converted, context.work_dir)
    copy_sidecar_files(model, context.work_dir)
    context.progress(2, 2, "done")
    return output_handle(model, context.work_dir, float16=True)
