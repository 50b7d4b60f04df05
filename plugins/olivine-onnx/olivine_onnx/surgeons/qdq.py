"""Surgeons on QuantizeLinear/DequantizeLinear: pairs removed or turned into Clip, constant
DequantizeLinear folded into float initializers."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from olivine_onnx.surgeons.graph import Graph, SurgeryError

log = logging.getLogger("olivine.pass.surgeries")


def _pairs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """(Q, DQ) where the DQ reads the Q's output (the Q's only reader)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    out = []
    for q in model.graph.node:
        if q.op_type != "QuantizeLinear" or not q.output or not q.output[0]:
            continue
        dqs = readers.get(q.output[0], [])
        if len(dqs) == 1 and dqs[0].op_type == "DequantizeLinear" and q.output[0] not in outputs:
            out.append((q, dqs[0]))
    return out


def _clip_range(g: Graph, dq: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
    """The float range a (per-tensor) DequantizeLinear can produce."""
    scale = g.array(dq.input[1])
    zero = g.array(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    if scale is None or scale.size != 1 or (zero is not None and zero.size != 1):
        raise SurgeryError(f"{dq.name or dq.output[0]}: the clip range needs a constant "
                           "per-tensor scale and zero point")
    dtype = zero.dtype if zero is not None else np.dtype(np.uint8)
    if not np.issubdtype(dtype, np.integer):
        raise SurgeryError(f"{dq.name or dq.output[0]}: zero point of type {dtype} has no "
                           "integer range")
    info = np.iinfo(dtype)
    z = np.int64(zero.reshape(()) if zero is not None else 0)
    s = scale.reshape(()).astype(np.float32)
    return (np.array([(info.min - z) * s], np.float32), np.array([(info.max - z) * s], np.float32))


def _rewrite(model: onnx.ModelProto, clip: bool, only_inputs: bool) -> onnx.ModelProto:
    g = Graph(model)
    graph_inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    rename: dict[str, str] = {}
    done = 0
    for q, dq in _pairs(model):
        if clip and (not only_inputs or q.input[0] in graph_inputs):
            low, high = _clip_range(g, dq)
            lo = g.add_initializer(low, g.unique(f"{dq.name or dq.output[0]}_clip_min"))
            hi = g.add_initializer(high, g.unique(f"{dq.name or dq.output[0]}_clip_max"))
            g.replace(q, [])
            g.replace(dq, [helper.make_node("Clip", [q.input[0], lo, hi], [dq.output[0]],
                                            name=g.unique(f"{dq.name or dq.output[0]}_clip"))])
        else:
            g.replace(q, [])
            if dq.output[0] in outputs:  # keep the output's name
                g.replace(dq, [helper.make_node("Identity", [q.input[0]], [dq.output[0]],
                                                name=g.unique(f"{dq.name}_identity"))])
            else:
                g.replace(dq, [])
                rename[dq.output[0]] = q.input[0]
        done += 1
    g.commit()
    for node in g.graph.node:  # chains Q-DQ-Q-DQ resolve to the first input
        for i, name in enumerate(node.input):
            seen = 0
            while name in rename and seen < 16:
                name, seen = rename[name], seen + 1
            node.input[i] = name
    g.prune()
    log.info("%d QuantizeLinear/DequantizeLinear pairs %s", done,
             "replaced" if clip else "removed")
    return g.model


def remove_qdq(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Q -> DQ pairs go (their readers read the Q's input); with ``keep_clip_after_inputs`` a
    pair right after a graph input becomes a Clip to its range instead."""
    return _rewrite(model, clip=options.keep_clip_after_inputs, only_inputs=True)


def qdq_to_clip(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Every Q -> DQ pair becomes a Clip to the range it can represent."""
    return _rewrite(model, clip=True, only_inputs=False)


def _dequantize(node: onnx.NodeProto, x: np.ndarray, scale: np.ndarray,
                zero: np.ndarray | None) -> np.ndarray | None:
    """``(x - zero) * scale``, per tensor or per axis; ``None`` for blocked quantization."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("block_size"):
        return None
    z = zero.astype(np.int64) if zero is not None else np.zeros((), np.int64)
    s = scale
    if scale.size > 1:
        axis = int(attrs.get("axis", 1)) % x.ndim
        shape = [1] * x.ndim
        shape[axis] = -1
        s, z = scale.reshape(shape), z.reshape(shape)
    return ((x.astype(np.int64) - z) * s).astype(scale.dtype)


def remove_deqlin(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """DequantizeLinear of constant initializers is computed now: readers read float
    initializers."""
    g = Graph(model)
    done = 0
    for node in list(g.graph.node):
        if node.op_type != "DequantizeLinear" or node.input[0] not in g.initializers \
                or node.output[0] in g.outputs:
            continue
        x, scale = g.array(node.input[0]), g.array(node.input[1])
        zero = g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if x is None or scale is None or (len(node.input) > 2 and node.input[2] and zero is None):
            continue
        value = _dequantize(node, x, scale, zero)
        if value is None:
            log.info("RemoveDeqLin: %s is blocked quantization; kept", node.name)
            continue
        name = g.unique(f"{node.input[0]}_dequantized")
        g.graph.initializer.append(numpy_helper.from_array(value, name))
        g.replace_input(node.output[0], name)
        g.replace(node, [])
        done += 1
    g.prune()
    log.info("RemoveDeqLin: %d constant DequantizeLinear nodes folded", done)
    return g.model


def expose_quantized_output(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Graph output ``output_name``, made by DequantizeLinear(QuantizeLinear(...)), is given
    quantized instead (the Q's output, in its place), with its scale and zero point as the
    outputs ``<output_name>_exposed_scale_output`` and ``<output_name>_exposed_zero_point_output``."""
    g = Graph(model)
    name = options.output_name
    if name not in g.outputs:
        raise SurgeryError(f"output_name: {name!r} is not a graph output "
                           f"({', '.join(g.outputs)})")
    dq = g.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        raise SurgeryError(f"output_name: {name!r} is not made by a DequantizeLinear")
    q = g.producer.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        raise SurgeryError(f"output_name: the DequantizeLinear making {name!r} does not read a "
                           "QuantizeLinear")
    scale = g.array(q.input[1])
    zero = g.array(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        raise SurgeryError(f"output_name: {name!r} needs a constant per-tensor scale and zero "
                           "point")
    index = [o.name for o in g.graph.output].index(name)
    zero_type = helper.np_dtype_to_tensor_dtype(zero.dtype)
    new_outputs = [helper.make_tensor_value_info(q.output[0], zero_type, None)]
    nodes = []
    for what, value in (("scale", scale.reshape(1).astype(np.float32)), ("zero_point", zero.reshape(1))):
        base = f"{name}_exposed_{what}"
        init = g.add_initializer(value, f"{base}_value")
        nodes.append(helper.make_node("Identity", [init], [f"{base}_output"], name=base))
        new_outputs.append(helper.make_tensor_value_info(
            f"{base}_output", helper.np_dtype_to_tensor_dtype(value.dtype), [1]))
    g.replace(dq, nodes)
    outputs = list(g.graph.output)
    outputs[index:index + 1] = new_outputs[:1]
    outputs.extend(new_outputs[1:])
    del g.graph.output[:]
    g.graph.output.extend(outputs)
    g.prune()
    return g.model
