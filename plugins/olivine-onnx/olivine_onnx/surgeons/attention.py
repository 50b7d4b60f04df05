"""Attention surgeons: ``custom::PackedAttention`` as a Loop of ``MultiHeadAttention``;
``RotaryEmbedding`` in primitive ops."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from olivine_onnx.surgeons.graph import SurgeryError

log = logging.getLogger("olivine.pass.surgeries")

CUSTOM = "custom"
MS = "com.microsoft"


def _c(name: str, value: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value_ints=value)


def _loop_mha_function(opset: int, elem_type: int) -> onnx.FunctionProto:
    """``custom::PackedAttention(q, k, v, cu_seqlens; scale, num_heads)``: q/k/v are
    [B, heads, seq, head_dim]; each segment ``cu_seqlens[i]:cu_seqlens[i+1]`` of the sequence
    attends only to itself; the result is [B, seq, heads, head_dim]."""
    body_nodes = [
        _c("one", [1]),
        _c("axis", [1]),
        helper.make_node("Reshape", ["i", "one"], ["i1"]),
        helper.make_node("Add", ["i1", "one"], ["i2"]),
        helper.make_node("Gather", ["cu", "i1"], ["start_raw"], axis=0),
        helper.make_node("Gather", ["cu", "i2"], ["end_raw"], axis=0),
        helper.make_node("Cast", ["start_raw"], ["start"], to=TensorProto.INT64),
        helper.make_node("Cast", ["end_raw"], ["end"], to=TensorProto.INT64),
        helper.make_node("Slice", ["q3", "start", "end", "axis"], ["qi"]),
        helper.make_node("Slice", ["k3", "start", "end", "axis"], ["ki"]),
        helper.make_node("Slice", ["v3", "start", "end", "axis"], ["vi"]),
        helper.make_node("MultiHeadAttention", ["qi", "ki", "vi"], ["mha"], domain=MS),
        helper.make_node("Concat", ["acc_in", "mha"], ["acc_out"], axis=1),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    mha = body_nodes[11]
    for attr in ("num_heads", "scale"):
        ref = onnx.AttributeProto()
        ref.name = attr
        ref.ref_attr_name = attr
        ref.type = onnx.AttributeProto.INT if attr == "num_heads" else onnx.AttributeProto.FLOAT
        mha.attribute.append(ref)
    body = helper.make_graph(
        body_nodes, "segment",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", elem_type, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", elem_type, None)])
    nodes = [
        _c("to3d", [0, 0, -1]),
        _c("zero1", [0]),
        _c("seq_axis", [1]),
        helper.make_node("Transpose", ["query_states"], ["qt"], perm=[0, 2, 1, 3]),
        helper.make_node("Shape", ["qt"], ["out_shape"]),
        helper.make_node("Reshape", ["qt", "to3d"], ["q3"]),
        helper.make_node("Transpose", ["key_states"], ["kt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["kt", "to3d"], ["k3"]),
        helper.make_node("Transpose", ["value_states"], ["vt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["vt", "to3d"], ["v3"]),
        helper.make_node("Identity", ["cu_seqlens"], ["cu"]),
        helper.make_node("Size", ["cu_seqlens"], ["size"]),
        helper.make_node("Constant", [], ["one_scalar"], value_int=1),
        helper.make_node("Sub", ["size", "one_scalar"], ["segments"]),
        helper.make_node("Slice", ["v3", "zero1", "zero1", "seq_axis"], ["empty"]),
        helper.make_node("Loop", ["segments", "", "empty"], ["joined"], body=body),
        helper.make_node("Reshape", ["joined", "out_shape"], ["attn_output"]),
    ]
    return helper.make_function(
        CUSTOM, "PackedAttention", ["query_states", "key_states", "value_states", "cu_seqlens"],
        ["attn_output"], nodes,
        [helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)],
        attributes=["scale", "num_heads"])


def _elem_type(model: onnx.ModelProto, name: str) -> int:
    for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if v.name == name:
            return v.type.tensor_type.elem_type
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # unknown ops upstream: the type stays unknown
        return 0
    return next((v.type.tensor_type.elem_type for v in inferred.graph.value_info
                 if v.name == name), 0)


def packed_attention_to_loop_mha(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Every ``custom::PackedAttention`` node becomes a Loop over its segments, each computed
    by ``com.microsoft::MultiHeadAttention`` (the function is inlined)."""
    from onnx import inliner

    found = [n for n in model.graph.node if n.domain == CUSTOM and n.op_type == "PackedAttention"]
    if not found:
        log.info("PackedAttentionToLoopMHA: no custom::PackedAttention node")
        return model
    if len(model.functions):
        raise SurgeryError("the model already has model-local functions; PackedAttentionToLoopMHA "
                           "needs a model without them")
    for node in found:
        names = {a.name for a in node.attribute}
        if not {"scale", "num_heads"} <= names:
            raise SurgeryError(f"PackedAttention node {node.name!r} lacks the scale or num_heads "
                               "attribute")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 20)
    types = {_elem_type(model, n.input[0]) for n in found}
    if len(types) != 1 or 0 in types:
        raise SurgeryError("PackedAttentionToLoopMHA: the query type of the PackedAttention nodes "
                           "is unknown or differs between them; run InferShapes first")
    model.functions.append(_loop_mha_function(opset, types.pop()))
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    model = inliner.inline_selected_functions(model, [(CUSTOM, "PackedAttention")])
    still = any(n.domain == CUSTOM for n in model.graph.node)
    if not still:
        kept = [o for o in model.opset_import if o.domain != CUSTOM]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    del model.functions[:]
    return model


def _int64(g: Any, values: list[int], base: str) -> str:
    return g.add_initializer(np.array(values, np.int64), g.unique(base))


def decompose_rotary_embedding(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """``com.microsoft::RotaryEmbedding`` -> Gather of the cos/sin caches by position and the
    rotation in primitive ops (halves or interleaved pairs; a partial rotary dimension leaves the
    rest of each head as it is; 3-D inputs are split into ``num_heads``)."""
    from olivine_onnx.surgeons.graph import Graph

    inferred = Graph(onnx.shape_inference.infer_shapes(model))
    g = Graph(model)
    done = 0
    for node in list(g.graph.node):
        if node.op_type != "RotaryEmbedding" or node.domain != MS:
            continue
        at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, pos, cos, sin = node.input[:4]
        rank = len(inferred.shape(x) or [])
        cache = g.array(cos)
        if rank not in (3, 4) or cache is None or len(inferred.shape(pos) or []) != 2:
            raise SurgeryError(f"RotaryEmbedding {node.name!r}: needs an input of known rank 3 or "
                               "4, position_ids of shape [batch, sequence] and constant caches; "
                               "run InferShapes first")
        heads = int(at.get("num_heads", 0))
        if rank == 3 and heads <= 0:
            raise SurgeryError(f"RotaryEmbedding {node.name!r}: a 3-D input needs num_heads")
        half = int(cache.shape[-1])
        p = g.unique(f"{node.name or 'rope'}_")
        nodes = []
        src = x
        if float(at.get("scale", 1.0)) != 1.0:
            scale = g.add_initializer(np.array(at["scale"], np.float32), f"{p}scale")
            nodes.append(helper.make_node("Mul", [x, scale], [f"{p}scaled"]))
            src = f"{p}scaled"
        if rank == 3:  # [B, S, N*H] -> [B, S, N, H]; the caches broadcast over axis 2
            nodes.append(helper.make_node("Reshape", [src, _int64(g, [0, 0, heads, -1], f"{p}4d")],
                                          [f"{p}x4"]))
            src, cache_axis = f"{p}x4", 2
        else:
            cache_axis = 1
        for name, table in (("cos", cos), ("sin", sin)):
            nodes += [helper.make_node("Gather", [table, pos], [f"{p}{name}_g"], axis=0),
                      helper.make_node("Unsqueeze", [f"{p}{name}_g", _int64(g, [cache_axis], f"{p}ax")],
                                       [f"{p}{name}"])]
        last = _int64(g, [-1], f"{p}last")
        rot = 2 * half
        nodes += [helper.make_node("Slice", [src, _int64(g, [0], f"{p}z"), _int64(g, [rot], f"{p}r"),
                                             last], [f"{p}rot"]),
                  helper.make_node("Slice", [src, _int64(g, [rot], f"{p}r2"),
                                             _int64(g, [2 ** 62], f"{p}end"), last], [f"{p}pass"])]
        if at.get("interleaved", 0):
            two = _int64(g, [2], f"{p}two")
            nodes += [helper.make_node("Slice", [f"{p}rot", _int64(g, [0], f"{p}s0"),
                                                 _int64(g, [rot], f"{p}e0"), last, two], [f"{p}x1"]),
                      helper.make_node("Slice", [f"{p}rot", _int64(g, [1], f"{p}s1"),
                                                 _int64(g, [rot], f"{p}e1"), last, two], [f"{p}x2"])]
        else:
            nodes += [helper.make_node("Slice", [f"{p}rot", _int64(g, [0], f"{p}s0"),
                                                 _int64(g, [half], f"{p}h0"), last], [f"{p}x1"]),
                      helper.make_node("Slice", [f"{p}rot", _int64(g, [half], f"{p}h1"),
                                                 _int64(g, [rot], f"{p}e1"), last], [f"{p}x2"])]
        nodes += [helper.make_node("Mul", [f"{p}x1", f"{p}cos"], [f"{p}a"]),
                  helper.make_node("Mul", [f"{p}x2", f"{p}sin"], [f"{p}b"]),
                  helper.make_node("Sub", [f"{p}a", f"{p}b"], [f"{p}o1"]),
                  helper.make_node("Mul", [f"{p}x1", f"{p}sin"], [f"{p}c"]),
                  helper.make_node("Mul", [f"{p}x2", f"{p}cos"], [f"{p}d"]),
                  helper.make_node("Add", [f"{p}c", f"{p}d"], [f"{p}o2"])]
        if at.get("interleaved", 0):
            nodes += [helper.make_node("Unsqueeze", [f"{p}o1", last], [f"{p}u1"]),
                      helper.make_node("Unsqueeze", [f"{p}o2", last], [f"{p}u2"]),
                      helper.make_node("Concat", [f"{p}u1", f"{p}u2"], [f"{p}pairs"], axis=-1),
                      helper.make_node("Shape", [f"{p}rot"], [f"{p}rot_shape"]),
                      helper.make_node("Reshape", [f"{p}pairs", f"{p}rot_shape"], [f"{p}rotated"])]
        else:
            nodes.append(helper.make_node("Concat", [f"{p}o1", f"{p}o2"], [f"{p}rotated"], axis=-1))
        joined = node.output[0] if rank == 4 else f"{p}joined"
        nodes.append(helper.make_node("Concat", [f"{p}rotated", f"{p}pass"], [joined], axis=-1))
        if rank == 3:
            nodes += [helper.make_node("Shape", [x], [f"{p}x_shape"]),
                      helper.make_node("Reshape", [joined, f"{p}x_shape"], [node.output[0]])]
        for k, n in enumerate(nodes):
            n.name = f"{p}{n.op_type}_{k}"
        g.replace(node, nodes)
        done += 1
    g.commit()
    log.info("DecomposeRotaryEmbedding: %d RotaryEmbedding nodes decomposed", done)
    return g.model
