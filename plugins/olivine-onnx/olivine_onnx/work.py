"""What the passes of olivine-onnx do; imported when one runs (imports onnx and numpy)."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from olivine import ModelHandle, OlivineError, OnnxModel, PassContext, UsageError
from olivine.onnxsave import save_onnx
from olivine.ortshapes import lean_shape_inference
from olivine_onnx.surgeons.graph import Graph, SurgeryError

log = logging.getLogger("olivine.pass.onnx")


def _load(model: ModelHandle) -> onnx.ModelProto:
    if not isinstance(model, OnnxModel):
        raise UsageError(f"this pass takes ONNX models, got a {model.kind} model")
    return onnx.load(str(model.model_file()), load_external_data=True)


def _file_name(model: ModelHandle) -> str:
    assert isinstance(model, OnnxModel)
    return model.model_file().name


def graph_surgeries(model: ModelHandle, config: Any, context: PassContext) -> OnnxModel:
    """Apply ``config.surgeries`` in order, then merge duplicate initializers."""
    from olivine_onnx.surgeons import build
    from olivine_onnx.surgeons.cleanup import dedupe_hashed_initializers

    proto = _load(model)
    total = len(config.surgeries)
    for i, entry in enumerate(config.surgeries):
        surgeon, options = build(entry)
        context.progress(i, total, surgeon.name)
        try:
            proto = surgeon.function()(proto, options)
        except SurgeryError as exc:
            raise OlivineError(f"surgeries[{i}] ({surgeon.name}): {exc}") from exc
    if config.remove_duplicate_initializers:
        merged = dedupe_hashed_initializers(proto)
        log.info("merged %d duplicate initializers", merged)
    context.progress(total, total, "saving")
    return save_onnx(proto, context.work_dir, config, file_name=_file_name(model), source=model)


# -- OnnxPeepholeOptimizer -----------------------------------------------------------------------
def peephole(model: ModelHandle, config: Any, context: PassContext) -> OnnxModel:
    """Olive's peephole steps; without onnxscript/onnxoptimizer, olivine's own subset of each."""
    proto = _load(model)
    if config.onnxscript_optimize:
        try:
            import onnxscript
        except ImportError:
            log.warning("onnxscript is not installed: onnxscript_optimize runs olivine's subset "
                        "(constant folding of small tensors, dead-code elimination)")
            proto = fold_constants(proto)
        else:
            proto = onnxscript.optimizer.optimize(proto)
    if config.onnxoptimizer_optimize:
        try:
            import onnxoptimizer
        except ImportError:
            log.warning("onnxoptimizer is not installed: onnxoptimizer_optimize runs olivine's "
                        "subset (Identity and dead-code elimination)")
            proto = eliminate_identities(proto)
        else:
            proto = onnxoptimizer.optimize(proto)
    if config.fuse_reshape_operations:
        proto = fuse_reshapes(proto)
    if config.fix_com_microsoft_opset:
        for scope in [proto, *proto.functions]:
            if not any(o.domain == "com.microsoft" for o in scope.opset_import):
                scope.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if config.cast_chain_elimination:
        proto = eliminate_cast_chains(proto)
    return save_onnx(proto, context.work_dir, config, file_name=_file_name(model), source=model)


_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "If", "Loop", "Scan", "SequenceConstruct"}
_FOLD_LIMIT = 1 << 20  # elements: larger results stay computed at run time


def fold_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes of the default domain whose inputs are all constants become initializers."""
    from onnx.reference import ReferenceEvaluator

    g = Graph(proto)
    values: dict[str, np.ndarray] = {}
    folded = 0
    for node in g.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NOT_FOLDED:
            continue
        if any(o in g.outputs for o in node.output):
            continue
        arrays = []
        for name in node.input:
            value = values.get(name) if name in values else (g.array(name) if name else None)
            if name and value is None:
                break
            arrays.append(value)
        else:
            if node.op_type != "Constant" and not arrays:
                continue
            try:
                results = _evaluate(ReferenceEvaluator, proto, node, arrays)
            except Exception as exc:  # an op the reference cannot run stays as it is
                log.debug("not folded: %s (%s)", node.name or node.op_type, exc)
                continue
            if any(r.size > _FOLD_LIMIT for r in results):
                continue
            new_nodes = []
            for out, result in zip(node.output, results, strict=False):
                if out:
                    values[out] = result
                    new_nodes.append(helper.make_node("Constant", [], [out],
                                                      value=numpy_helper.from_array(result, out)))
            g.replace(node, new_nodes)
            folded += 1
    g.commit()
    _constants_to_initializers(g)
    g.prune()
    log.info("constant folding: %d nodes folded", folded)
    return g.model


def _evaluate(evaluator: Any, proto: onnx.ModelProto, node: onnx.NodeProto,
              arrays: list[np.ndarray | None]) -> list[np.ndarray]:
    names = [f"i{k}" if name else "" for k, name in enumerate(node.input)]
    copy = helper.make_node(node.op_type, names, [f"o{k}" for k in range(len(node.output))],
                            domain=node.domain)
    copy.attribute.extend(node.attribute)
    opsets = {o.domain: o.version for o in proto.opset_import}
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in zip(names, arrays, strict=True) if n and a is not None]
    outputs = [helper.make_tensor_value_info(f"o{k}", onnx.TensorProto.UNDEFINED, None)
               for k in range(len(node.output))]
    small = helper.make_model(helper.make_graph([copy], "fold", inputs, outputs),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    ref = evaluator(small)
    feeds = {n: a for n, a in zip(names, arrays, strict=True) if n}
    return [np.asarray(r) for r in ref.run(None, feeds)]


def _constants_to_initializers(g: Graph) -> None:
    for node in list(g.graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.attribute \
                and node.attribute[0].name == "value" and node.output[0] not in g.outputs:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            g.graph.initializer.append(tensor)
            g.replace(node, [])
    g.commit()


def eliminate_identities(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Identity nodes go (readers read the source) unless they produce a graph output."""
    g = Graph(proto)
    for node in g.graph.node:
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") \
                and node.output[0] not in g.outputs:
            g.replace_input(node.output[0], node.input[0])
            g.replace(node, [])
    g.prune()
    return g.model


def fuse_reshapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Reshape(Reshape(x, s), [-1]) -> Reshape(x, [-1]) when the first Reshape has no other reader."""
    g = Graph(proto)
    fused = 0
    for node in g.graph.node:
        if node.op_type != "Reshape":
            continue
        first = g.producer.get(node.input[0])
        target = g.array(node.input[1]) if len(node.input) > 1 else None
        if first is None or first.op_type != "Reshape" or target is None \
                or target.reshape(-1).tolist() != [-1] or len(g.consumers[node.input[0]]) != 1 \
                or node.input[0] in g.outputs:
            continue
        node.input[0] = first.input[0]
        fused += 1
    log.info("fused %d Reshape pairs", fused)
    g.prune()
    return g.model


def eliminate_cast_chains(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Cast(Cast(x, to=B), to=A) where x already has type A: readers read x."""
    g = Graph(onnx.shape_inference.infer_shapes(proto))
    removed = 0
    for node in g.graph.node:
        if node.op_type != "Cast":
            continue
        inner = g.producer.get(node.input[0])
        if inner is None or inner.op_type != "Cast":
            continue
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if to is None or g.elem_type(inner.input[0]) != to:
            continue
        if node.output[0] in g.outputs:
            g.replace(node, [helper.make_node("Identity", [inner.input[0]], [node.output[0]],
                                              name=node.name)])
        else:
            g.replace_input(node.output[0], inner.input[0])
            g.replace(node, [])
        removed += 1
    log.info("removed %d round-trip Cast chains", removed)
    g.prune()
    return g.model


# -- the small passes ----------------------------------------------------------------------------
def fixed_shape(model: ModelHandle, config: Any, context: PassContext) -> OnnxModel:
    """ONNX Runtime's make_dim_param_fixed / make_input_shape_fixed, then output shapes."""
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed, make_input_shape_fixed

    proto = _load(model)
    if config.dim_param:
        for param, value in zip(config.dim_param, config.dim_value, strict=True):
            make_dim_param_fixed(proto.graph, param, value)
    else:
        names = {i.name for i in proto.graph.input}
        missing = [n for n in config.input_name if n not in names]
        if missing:
            raise UsageError(f"input_name: {', '.join(map(repr, missing))} not among the model's "
                             f"inputs ({', '.join(sorted(names))})")
        for name, shape in zip(config.input_name, config.input_shape, strict=True):
            make_input_shape_fixed(proto.graph, name, shape)
    _fix_output_shapes(proto)
    return save_onnx(proto, context.work_dir, config, file_name=_file_name(model), source=model)


def _fix_output_shapes(proto: onnx.ModelProto) -> None:
    """Output shapes from shape inference where it finds fixed ones."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:
        log.debug("shape inference failed: %s", exc)
        return
    shapes = {o.name: o for o in inferred.graph.output}
    for out in proto.graph.output:
        new = shapes.get(out.name)
        if new is not None and new.type.tensor_type.HasField("shape") and all(
                d.HasField("dim_value") for d in new.type.tensor_type.shape.dim):
            out.type.tensor_type.shape.CopyFrom(new.type.tensor_type.shape)


def io_datatype(model: ModelHandle, config: Any, context: PassContext) -> OnnxModel:
    """Inputs/outputs of ``source_dtype`` whose name matches get ``target_dtype`` and a Cast."""
    proto = _load(model)
    g = Graph(proto)
    pattern = re.compile(config.name_pattern) if config.name_pattern else None
    src, dst = config.source_dtype, config.target_dtype

    def chosen(info: onnx.ValueInfoProto) -> bool:
        return info.type.tensor_type.elem_type == src and (
            pattern is None or bool(pattern.search(info.name)))

    casts_in, casts_out = [], []
    for info in g.graph.input:
        if chosen(info):
            inner = g.unique(f"{info.name}_converted")
            g.replace_input(info.name, inner)
            casts_in.append(helper.make_node("Cast", [info.name], [inner], to=src,
                                             name=g.unique(f"{info.name}_Cast")))
            info.type.tensor_type.elem_type = dst
    for info in g.graph.output:
        if chosen(info):
            inner = g.unique(f"{info.name}_converted")
            for node in g.graph.node:
                for k, out in enumerate(node.output):
                    if out == info.name:
                        node.output[k] = inner
            g.replace_input(info.name, inner)
            casts_out.append(helper.make_node("Cast", [inner], [info.name], to=dst,
                                              name=g.unique(f"{info.name}_Cast")))
            info.type.tensor_type.elem_type = dst
    if not casts_in and not casts_out:
        log.warning("no input or output of type %d matches %r; the model is unchanged",
                    src, config.name_pattern)
    nodes = [*casts_in, *g.graph.node, *casts_out]
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del g.graph.node[:]
    g.graph.node.extend(copies)
    return save_onnx(proto, context.work_dir, config, file_name=_file_name(model), source=model,
                     io_converted={"inputs": len(casts_in), "outputs": len(casts_out)})


def op_version(model: ModelHandle, config: Any, context: PassContext) -> OnnxModel:
    """onnx's version converter to ``target_opset`` (default: the newest onnx knows)."""
    from onnx import version_converter

    proto = _load(model)
    target = config.target_opset or onnx.defs.onnx_opset_version()
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if current != target:
        try:
            proto = version_converter.convert_version(proto, target)
        except Exception as exc:
            raise OlivineError(f"onnx cannot convert the model from opset {current} to "
                               f"{target}: {str(exc).strip().splitlines()[0]}") from exc
    return save_onnx(proto, context.work_dir, config, file_name=_file_name(model), source=model,
                     opset=target)


def quant_preprocess(model: ModelHandle, config: Any, context: PassContext) -> OnnxModel:
    """``onnxruntime.quantization.quant_pre_process`` into a scratch file, then saved."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    assert isinstance(model, OnnxModel)
    scratch = context.work_dir / "preprocess.tmp"
    scratch.mkdir()
    try:
        with lean_shape_inference():  # no weight copies, no sym_shape_infer_temp.onnx in the cwd
            quant_pre_process(str(model.model_file()), str(scratch / "model.onnx"),
                              skip_optimization=config.skip_optimization,
                              skip_onnx_shape=config.skip_onnx_shape,
                              skip_symbolic_shape=config.skip_symbolic_shape,
                              auto_merge=True, save_as_external_data=True)
        proto = onnx.load(str(scratch / "model.onnx"), load_external_data=True)
    except Exception as exc:
        raise OlivineError(f"quantization pre-processing failed: {type(exc).__name__}: {exc}; "
                           "retry with skip_optimization (or skip_symbolic_shape) true") from exc
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return save_onnx(proto, context.work_dir, config, file_name=_file_name(model), source=model)


def add_metadata(model: ModelHandle, config: Any, context: PassContext) -> OnnxModel:
    """Set the graph name and add metadata_props: custom pairs, versions, model hash."""
    import olivine

    proto = _load(model)
    meta = {p.key: p.value for p in proto.metadata_props}
    meta.update({str(k): str(v) for k, v in config.custom_metadata.items()})
    meta["olivine_version"] = olivine.__version__
    digest = hashlib.sha256()
    for f in model.files():
        if f.suffix == ".onnx" or f.name.endswith(".data"):
            digest.update(f.read_bytes())
    meta["model_hash"] = digest.hexdigest()
    if config.add_optimization_info:
        attrs = model.attrs_dict()
        for key in ("optimization_passes", "hf_task", "quantization_config", "quantization"):
            if attrs.get(key) is not None:
                value = attrs[key]
                meta[key] = ", ".join(map(str, value)) if isinstance(value, list | tuple) \
                    else str(value)
    onnx.helper.set_model_props(proto, meta)
    proto.graph.name = config.graph_name
    return save_onnx(proto, context.work_dir, config, file_name=_file_name(model), source=model)
