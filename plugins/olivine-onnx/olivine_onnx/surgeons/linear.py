"""Surgeons that rewrite small arithmetic patterns: Gemm/MatMul, reciprocals, norms."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import onnx
from onnx import helper

from olivine_onnx.surgeons.graph import Graph

log = logging.getLogger("olivine.pass.surgeries")


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def gemm_to_matmul_add(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Gemm (alpha = beta = 1, no transA) -> MatMul (+ Add); transB transposes the weight.

    A constant B is transposed into a new initializer; a computed one gets a Transpose node.
    """
    g = Graph(model)
    changed = 0
    for node in list(g.graph.node):
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx"):
            continue
        if _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
            continue
        if _attr(node, "transA", 0):
            continue
        a, b = node.input[0], node.input[1]
        c = node.input[2] if len(node.input) > 2 and node.input[2] else None
        base = node.name or node.output[0]
        new_nodes = []
        if _attr(node, "transB", 0):
            weight = g.initializers.get(b)
            if weight is not None:
                b = g.add_initializer(onnx.numpy_helper.to_array(weight).T.copy(), f"{b}_transposed")
            else:
                t_out = g.unique(f"{base}_transpose_B")
                new_nodes.append(helper.make_node("Transpose", [b], [t_out], perm=[1, 0],
                                                  name=g.unique(f"{base}_Transpose")))
                b = t_out
        if c is not None:
            mm_out = g.unique(f"{base}_matmul_out")
            new_nodes.append(helper.make_node("MatMul", [a, b], [mm_out], name=f"{base}_MatMul"))
            new_nodes.append(helper.make_node("Add", [mm_out, c], [node.output[0]],
                                              name=f"{base}_Add"))
        else:
            new_nodes.append(helper.make_node("MatMul", [a, b], [node.output[0]],
                                              name=f"{base}_MatMul"))
        g.replace(node, new_nodes)
        changed += 1
    log.info("GemmToMatMulAdd: %d Gemm nodes rewritten", changed)
    g.prune()
    return g.model


def _with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # shapes help but are not needed to stay correct
        log.debug("shape inference failed: %s", exc)
        return model


def matmul_add_to_gemm(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """MatMul + Add (2-D weight, 1-D bias) -> Gemm; inputs of rank > 2 with static shapes are
    reshaped to 2-D before the Gemm and back after it."""
    g = Graph(_with_shapes(model))
    changed = 0
    for mm in list(g.graph.node):
        if mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx"):
            continue
        out = mm.output[0]
        readers = g.consumers.get(out, [])
        if len(readers) != 1 or readers[0].op_type != "Add" or out in g.outputs or g.taken(readers[0]):
            continue
        add = readers[0]
        if add.output[0] in g.outputs:
            continue
        bias = add.input[1] if add.input[0] == out else add.input[0]
        a_shape, b_shape, bias_shape = g.shape(mm.input[0]), g.shape(mm.input[1]), g.shape(bias)
        out_shape = g.shape(out)
        if b_shape is None or len(b_shape) != 2 or bias_shape is None or len(bias_shape) != 1:
            continue
        if a_shape is None or len(a_shape) < 2 or bias == out:
            continue
        elem = g.elem_type(out) or g.elem_type(mm.input[1]) or onnx.TensorProto.FLOAT
        base = mm.name or out
        new_nodes: list[onnx.NodeProto] = []
        a_in, y = mm.input[0], add.output[0]
        gemm_out = y
        if len(a_shape) != 2:
            dims = [*a_shape, *b_shape]
            if out_shape is None or not all(isinstance(d, int) and d > 0 for d in dims):
                continue
            flat = [math.prod(a_shape[:-1]), a_shape[-1]]  # type: ignore[arg-type]
            shape_in = g.add_initializer(np.array(flat, dtype=np.int64), f"{base}_Reshape_pre_shape")
            a_in = g.unique(f"{base}_Reshape_pre_output")
            new_nodes.append(helper.make_node("Reshape", [mm.input[0], shape_in], [a_in],
                                              name=g.unique(f"{base}_Reshape_pre")))
            gemm_out = g.unique(f"{base}_Gemm_output")
            shape_out = g.add_initializer(np.array([*a_shape[:-1], b_shape[-1]], dtype=np.int64),
                                          f"{base}_Reshape_post_shape")
        new_nodes.append(helper.make_node("Gemm", [a_in, mm.input[1], bias], [gemm_out],
                                          name=g.unique(base.replace("MatMul", "Gemm")
                                                        if "MatMul" in base else f"{base}_Gemm"),
                                          alpha=1.0, beta=1.0, transA=0, transB=0))
        if gemm_out != y:
            new_nodes.append(helper.make_node("Reshape", [gemm_out, shape_out], [y],
                                              name=g.unique(f"{base}_Reshape_post")))
        g.replace(mm, [])
        g.replace(add, new_nodes)
        del elem
        changed += 1
    log.info("MatMulAddToGemm: %d MatMul + Add pairs rewritten", changed)
    g.prune()
    return g.model


def reciprocal_mul_to_div(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Mul(a, Reciprocal(x)) -> Div(a, x); the Reciprocal goes when nothing else reads it."""
    g = Graph(model)
    changed = 0
    for rec in list(g.graph.node):
        if rec.op_type != "Reciprocal":
            continue
        r_out = rec.output[0]
        for mul in list(g.consumers.get(r_out, [])):
            if mul.op_type != "Mul" or list(mul.input).count(r_out) != 1:
                continue
            other = mul.input[1] if mul.input[0] == r_out else mul.input[0]
            mul.op_type = "Div"
            del mul.input[:]
            mul.input.extend([other, rec.input[0]])
            if mul.name:
                mul.name = mul.name.replace("Mul", "Div") if "Mul" in mul.name else f"{mul.name}_Div"
            changed += 1
    log.info("ReciprocalMulToDiv: %d Mul nodes rewritten", changed)
    g.prune()
    return g.model


def _const_scalar(g: Graph, name: str) -> float | None:
    value = g.array(name)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def _reduces_last_axis(g: Graph, node: onnx.NodeProto) -> bool:
    if not _attr(node, "keepdims", 1):
        return False
    axes = _attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = g.array(node.input[1])
        axes = None if value is None else value.reshape(-1).tolist()
    if axes is None or len(axes) != 1:
        return False
    shape = g.shape(node.input[0])
    return bool(axes[0] == -1 or (shape is not None and axes[0] == len(shape) - 1))


def pow_reducesum_pow_div_to_lpnorm(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """x / Pow(ReduceSum(Pow(x, 2), last axis, keepdims), 0.5) -> LpNormalization(x, p=2, axis=-1)."""
    g = Graph(_with_shapes(model))
    changed = 0
    for div in list(g.graph.node):
        if div.op_type != "Div":
            continue
        root = g.producer.get(div.input[1])
        rsum = g.producer.get(root.input[0]) if root is not None and root.op_type == "Pow" else None
        sq = g.producer.get(rsum.input[0]) if rsum is not None and rsum.op_type == "ReduceSum" else None
        if sq is None or sq.op_type != "Pow" or sq.input[0] != div.input[0]:
            continue
        if _const_scalar(g, sq.input[1]) != 2.0 or _const_scalar(g, root.input[1]) != 0.5:  # type: ignore[union-attr]
            continue
        if not _reduces_last_axis(g, rsum):  # type: ignore[arg-type]
            continue
        lp = helper.make_node("LpNormalization", [div.input[0]], [div.output[0]],
                              name=g.unique(f"{div.name or div.output[0]}_lp_norm"), p=2, axis=-1)
        g.replace(div, [lp])
        changed += 1
    log.info("PowReduceSumPowDiv2LpNorm: %d patterns replaced", changed)
    g.prune()
    return g.model


def simplified_layernorm_to_l2norm(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """(Skip)SimplifiedLayerNormalization -> [Add ->] LpNormalization(p=2) -> Mul(sqrt(N) * weight).

    The same up to the norm's epsilon. Nodes with a bias input, a computed weight, or an axis
    other than the last are left as they are.
    """
    g = Graph(model)
    changed = 0
    for node in list(g.graph.node):
        skip = node.op_type == "SkipSimplifiedLayerNormalization"
        if node.op_type != "SimplifiedLayerNormalization" and not skip:
            continue
        ins = [i for i in node.input]
        if len(ins) != (3 if skip else 2) or not all(ins):
            continue
        outs = list(node.output)
        used = [k for k, o in enumerate(outs) if o]
        if skip and not set(used) <= {0, 3}:
            continue
        if not skip and (used != [0] or _attr(node, "axis", -1) != -1):
            continue
        weight = g.array(ins[-1])
        if weight is None:
            continue
        base = node.name or outs[0]
        new_nodes = []
        source = ins[0]
        if skip:
            source = outs[3] if len(outs) > 3 and outs[3] else g.unique(f"{base}_Add_output_0")
            new_nodes.append(helper.make_node("Add", ins[:2], [source], name=g.unique(f"{base}_Add")))
        l2 = g.unique(f"{base}_L2Norm_output_0")
        new_nodes.append(helper.make_node("LpNormalization", [source], [l2],
                                          name=g.unique(f"{base}_L2Norm"), axis=-1, p=2))
        scaled = np.sqrt(weight.shape[-1]).astype(weight.dtype)
        scaled = scaled * (np.ones(1, dtype=weight.dtype) if np.all(weight == 1) else weight)
        w_name = g.add_initializer(scaled.astype(weight.dtype), f"{ins[-1]}_l2norm_scaled")
        new_nodes.append(helper.make_node("Mul", [l2, w_name], [outs[0]],
                                          name=g.unique(f"{base}_Mul")))
        g.replace(node, new_nodes)
        changed += 1
    log.info("SimplifiedLayerNormToL2Norm: %d norms replaced", changed)
    g.prune()
    return g.model
