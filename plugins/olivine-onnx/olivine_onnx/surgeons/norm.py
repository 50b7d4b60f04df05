"""RMSNorm rewrites: primitive-op RMSNorm -> LpNormalization (``RMSNormToL2Norm``), and
(Skip)SimplifiedLayerNormalization -> primitive ops (``SimplifiedLayerNormToRMSNorm``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import helper

from olivine_onnx.surgeons.graph import Graph, SurgeryError

log = logging.getLogger("olivine.pass.surgeries")

_CHAIN = ("ReduceMean", "Add", "Sqrt", "Div", "Mul")


def _only_reader(g: Graph, node: onnx.NodeProto) -> onnx.NodeProto | None:
    readers = g.consumers.get(node.output[0], [])
    if len(readers) != 1 or node.output[0] in g.outputs:
        return None
    return readers[0]


def _rmsnorm_chain(g: Graph, pow_node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Pow -> ReduceMean -> Add -> Sqrt -> Div [-> Mul]: the nodes, ending where x is read
    again (``x / sqrt(...)`` or ``x * (1 / sqrt(...))``); ``[]`` when it is not that."""
    exponent = g.array(pow_node.input[1])
    if exponent is None or exponent.size != 1 or float(exponent.reshape(())) != 2.0:
        return []
    x = pow_node.input[0]
    chain = [pow_node]
    node = pow_node
    for op_type in _CHAIN:
        nxt = _only_reader(g, node)
        if nxt is None or nxt.op_type != op_type:
            return []
        chain.append(nxt)
        node = nxt
        if x in nxt.input:
            break
    return chain if len(chain) >= len(_CHAIN) and x in chain[-1].input else []


def rmsnorm_to_l2norm(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """``x / sqrt(mean(x^2) + eps) * w`` -> ``LpNormalization(x, p=2, axis=-1) * (w * sqrt(N))``
    (equal up to the epsilon). The weight Mul may follow a Cast. A weight read elsewhere too is
    scaled into a copy."""
    g = Graph(model)
    scaled: dict[str, str] = {}
    done = 0
    for node in list(g.graph.node):
        if node.op_type != "Pow" or g.taken(node):
            continue
        chain = _rmsnorm_chain(g, node)
        if not chain:
            continue
        after = _only_reader(g, chain[-1])
        mul = after if after is not None and after.op_type == "Mul" else (
            _only_reader(g, after) if after is not None and after.op_type == "Cast" else None)
        if mul is None or mul.op_type != "Mul":
            log.debug("RMSNormToL2Norm: %s is not followed by a weight Mul", node.name)
            continue
        weight_name = next((n for n in mul.input if n in g.initializers), None)
        if weight_name is None:
            continue
        if weight_name not in scaled:
            weight = g.array(weight_name)
            assert weight is not None
            sqrt_n = np.sqrt(weight.shape[-1]).astype(weight.dtype)
            base = np.array([1], weight.dtype) if np.all(weight == 1) else weight
            value = (base * sqrt_n).astype(weight.dtype)
            if len(g.consumers.get(weight_name, [])) == 1:
                g.initializers[weight_name].CopyFrom(onnx.numpy_helper.from_array(value, weight_name))
                scaled[weight_name] = weight_name
            else:
                scaled[weight_name] = g.add_initializer(value, f"{weight_name}_l2norm")
        mul_inputs = [scaled[weight_name] if n == weight_name else n for n in mul.input]
        new_mul = helper.make_node("Mul", mul_inputs, list(mul.output), name=mul.name)
        l2 = g.unique(f"{node.name or node.output[0]}_L2Norm")
        norm = helper.make_node("LpNormalization", [node.input[0]], [f"{l2}_output_0"], name=l2,
                                axis=-1, p=2)
        for old in chain:
            g.replace(old, [])
        g.replace(chain[-1], [norm])
        if after is mul:
            new_mul.input[list(mul.input).index(chain[-1].output[0])] = norm.output[0]
        else:
            assert after is not None
            after.input[0] = norm.output[0]
        g.replace(mul, [new_mul])
        done += 1
    g.prune()
    log.info("RMSNormToL2Norm: %d RMSNorm patterns replaced", done)
    return g.model


def simplified_layernorm_to_rmsnorm(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """``(Skip)SimplifiedLayerNormalization`` -> ``x / sqrt(mean(x^2) + eps) * gamma`` in
    primitive ops, with the node's own epsilon; for the Skip form ``x = input + skip (+ bias)``,
    and the residual-sum output (index 3) is that sum."""
    g = Graph(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    done = 0
    for node in list(g.graph.node):
        skip = node.op_type == "SkipSimplifiedLayerNormalization" and node.domain == "com.microsoft"
        if not skip and node.op_type != "SimplifiedLayerNormalization":
            continue
        at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        rank = len(g.shape(node.input[0]) or [])
        if int(at.get("axis", -1)) not in (-1, rank - 1):
            raise SurgeryError(f"{node.name}: normalizes from axis {at['axis']}; only the last "
                               "axis can be rewritten")
        outs = list(node.output) + [""] * (4 - len(node.output))
        used_stats = [o for o in outs[1:3] if o and (o in g.consumers or o in g.outputs)]
        if used_stats:
            raise SurgeryError(f"{node.name}: its mean / inverse-std outputs are read "
                               f"({', '.join(used_stats)}); they have no RMSNorm counterpart")
        p = g.unique(f"{node.name or 'rmsnorm'}_")
        dtype = _np_type(g, node.input[0])
        nodes = []
        if skip:
            summed = outs[3] or f"{p}sum"
            terms = [n for n in (node.input[0], node.input[1], *node.input[3:4]) if n]
            nodes.append(helper.make_node("Add", terms[:2], [summed if len(terms) == 2 else f"{p}s0"]))
            if len(terms) == 3:
                nodes.append(helper.make_node("Add", [f"{p}s0", terms[2]], [summed]))
            x, gamma = summed, node.input[2]
        else:
            x, gamma = node.input[0], node.input[1]
        two = g.add_initializer(np.array(2.0, dtype), f"{p}two")
        eps = g.add_initializer(np.array(at.get("epsilon", 1e-5), dtype), f"{p}eps")
        if opset >= 18:
            axes = g.add_initializer(np.array([-1], np.int64), f"{p}axes")
            mean = helper.make_node("ReduceMean", [f"{p}sq", axes], [f"{p}mean"], keepdims=1)
        else:
            mean = helper.make_node("ReduceMean", [f"{p}sq"], [f"{p}mean"], axes=[-1], keepdims=1)
        nodes += [helper.make_node("Pow", [x, two], [f"{p}sq"]), mean,
                  helper.make_node("Add", [f"{p}mean", eps], [f"{p}var"]),
                  helper.make_node("Sqrt", [f"{p}var"], [f"{p}rms"]),
                  helper.make_node("Div", [x, f"{p}rms"], [f"{p}normed"]),
                  helper.make_node("Mul", [f"{p}normed", gamma], [outs[0]])]
        for k, n in enumerate(nodes):
            n.name = f"{p}{n.op_type}_{k}"
        g.replace(node, nodes)
        done += 1
    g.commit()
    log.info("SimplifiedLayerNormToRMSNorm: %d nodes replaced", done)
    return g.model


def _np_type(g: Graph, name: str) -> Any:
    elem = g.elem_type(name)
    if elem is None:
        elem = Graph(onnx.shape_inference.infer_shapes(g.model)).elem_type(name)
    return helper.tensor_dtype_to_np_dtype(elem) if elem else np.float32
