"""Small surgeons: Erf and QuickGelu rewrites, inputs zeroed or removed, tensors exposed as
outputs, value shapes dropped."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from olivine_onnx.surgeons.graph import Graph, SurgeryError

log = logging.getLogger("olivine.pass.surgeries")

#: tanh(k x) approximates erf(x) with k = 605/503 (Olive's constant; error below 0.02)
ERF_TANH_SCALE = 605 / 503
QUICK_GELU_ALPHA = 1.702


def _np_type(g: Graph, name: str) -> Any:
    elem = g.elem_type(name)
    if elem is None:
        inferred = Graph(onnx.shape_inference.infer_shapes(g.model))
        elem = inferred.elem_type(name)
    if elem is None:
        return None
    try:
        return helper.tensor_dtype_to_np_dtype(elem)
    except KeyError:
        return None


def replace_erf_with_tanh(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """``Erf(x)`` -> ``Tanh(x * 605/503)`` (an approximation within 0.02)."""
    g = Graph(model)
    done = 0
    for node in list(g.graph.node):
        if node.op_type != "Erf" or node.domain not in ("", "ai.onnx"):
            continue
        dtype = _np_type(g, node.input[0])
        if dtype is None or not np.issubdtype(dtype, np.floating):
            log.warning("ReplaceErfWithTanh: the type of %s is unknown or not float; Erf kept",
                        node.input[0])
            continue
        scale = g.add_initializer(np.array(ERF_TANH_SCALE, dtype), g.unique(f"{node.name}_tanh_scale"))
        scaled = g.unique(f"{node.input[0]}_scaled")
        g.replace(node, [helper.make_node("Mul", [node.input[0], scale], [scaled],
                                          name=g.unique(f"{node.name}_Mul")),
                         helper.make_node("Tanh", [scaled], [node.output[0]],
                                          name=g.unique(f"{node.name}_Tanh"))])
        done += 1
    g.commit()
    log.info("ReplaceErfWithTanh: %d Erf nodes replaced", done)
    return g.model


def decompose_quick_gelu(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """``com.microsoft::QuickGelu(x)`` -> ``x * Sigmoid(alpha * x)`` (alpha from the node,
    default 1.702)."""
    g = Graph(model)
    done = 0
    for node in list(g.graph.node):
        if node.op_type != "QuickGelu" or node.domain != "com.microsoft":
            continue
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), QUICK_GELU_ALPHA)
        dtype = _np_type(g, node.input[0]) or np.float32
        a = g.add_initializer(np.array(alpha, dtype), g.unique(f"{node.name}_alpha"))
        ax, sig = g.unique(f"{node.output[0]}_ax"), g.unique(f"{node.output[0]}_sigmoid")
        g.replace(node, [helper.make_node("Mul", [a, node.input[0]], [ax], name=g.unique(f"{node.name}_Mul")),
                         helper.make_node("Sigmoid", [ax], [sig], name=g.unique(f"{node.name}_Sigmoid")),
                         helper.make_node("Mul", [node.input[0], sig], [node.output[0]],
                                          name=g.unique(f"{node.name}_Mul_1"))])
        done += 1
    g.commit()
    log.info("DecomposeQuickGelu: %d QuickGelu nodes decomposed", done)
    return g.model


def zero_out_input(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Input ``input_idx`` of node ``node_name`` reads a zero tensor of its shape and type."""
    g = Graph(model)
    node = next((n for n in g.graph.node if n.name == options.node_name), None)
    if node is None:
        raise SurgeryError(f"no node named {options.node_name!r}")
    if options.input_idx >= len(node.input):
        raise SurgeryError(f"node {options.node_name!r} has {len(node.input)} inputs; input_idx "
                           f"{options.input_idx} is out of range")
    name = node.input[options.input_idx]
    inferred = Graph(onnx.shape_inference.infer_shapes(g.model))
    shape = inferred.shape(name)
    elem = inferred.elem_type(name)
    if shape is None or elem is None:
        raise SurgeryError(f"the shape or type of {name!r} is unknown; run InferShapes first")
    dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
    zeros = np.zeros(dims, helper.tensor_dtype_to_np_dtype(elem))
    out = g.unique(f"{options.node_name}_zero_output_0")
    g.graph.node.append(helper.make_node("Constant", [], [out], name=g.unique(f"{options.node_name}_zero"),
                                         value=numpy_helper.from_array(zeros)))
    node.input[options.input_idx] = out
    return _sorted(g.model)


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes in topological order (a node appended at the end may be read earlier)."""
    from olivine_onnx.surgeons.graph import topological

    order = topological(model.graph)
    copies = []
    for node in order:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copies.append(copy)
    del model.graph.node[:]
    model.graph.node.extend(copies)
    return model


def remove_inputs(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """The named graph inputs go; nodes stop reading them (a node left with no input goes)."""
    names = set(options.names)
    known = {i.name for i in model.graph.input}
    missing = sorted(names - known)
    if missing:
        raise SurgeryError(f"names: {', '.join(map(repr, missing))} are not graph inputs "
                           f"({', '.join(sorted(known))})")
    kept = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    nodes = []
    for node in model.graph.node:
        inputs = [x for x in node.input if x not in names]
        if not inputs and len(node.input):
            continue
        del node.input[:]
        node.input.extend(inputs)
        nodes.append(node)
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del model.graph.node[:]
    model.graph.node.extend(copies)
    return model


def _expose(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    inferred = Graph(onnx.shape_inference.infer_shapes(model))
    have = {o.name for o in model.graph.output}
    for name in tensors:
        if name in have:
            continue
        elem = inferred.elem_type(name) or onnx.TensorProto.FLOAT
        model.graph.output.append(helper.make_tensor_value_info(name, elem, None))
        have.add(name)
    return model


def expose_outputs(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """The first output of each named node becomes a graph output too."""
    by_name = {n.name: n for n in model.graph.node}
    missing = [n for n in options.names if n not in by_name]
    if missing:
        raise SurgeryError(f"names: no node named {', '.join(map(repr, missing))}")
    return _expose(model, [by_name[n].output[0] for n in options.names])


def add_intermediate_tensors_to_outputs(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """The named tensors (default: every node output) become graph outputs too."""
    produced = [o for n in model.graph.node for o in n.output if o]
    names = list(options.intermediate_tensor_to_add) if options.intermediate_tensor_to_add \
        is not None else produced
    unknown = [n for n in names if n not in set(produced)]
    if unknown:
        raise SurgeryError(f"intermediate_tensor_to_add: no node produces "
                           f"{', '.join(map(repr, unknown[:5]))}")
    return _expose(model, names)


def remove_all_tensor_value_shapes(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """The shapes recorded for intermediate tensors (value_info) are cleared; types stay."""
    for info in model.graph.value_info:
        if info.type.tensor_type.HasField("shape"):
            info.type.tensor_type.ClearField("shape")
    return model
