"""MatMulNBits -> DequantizeLinear + MatMul (Olive's ``MatMulNBitsToQDQ``), on an ONNX proto.

``MatMulNBits`` holds ``B`` as ``uint8 [N, blocks, block_size * bits / 8]``, scales
``[N * blocks]`` and optional packed zero points (absent: the midpoint ``2**(bits-1)``).
The standard form is a blocked ``DequantizeLinear`` (opset 21) of ``[K, N]`` (or ``[N, K]``
followed by a ``Transpose``) feeding a plain ``MatMul``, plus an ``Add`` for a bias. Signed
storage subtracts the midpoint, so a symmetric weight needs no zero point at all.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

#: ONNX element types: (bits, signed) -> TensorProto type (INT4 22, UINT4 21, INT8 3, UINT8 2).
ELEM_TYPES = {(4, True): 22, (4, False): 21, (8, True): 3, (8, False): 2}
NAME_SUFFIXES = ("MatMulNBits", "MatMul_Q4", "MatMul_Q8")


@attrs.define
class Report:
    """What the conversion did."""

    converted: int = 0
    skipped: list[tuple[str, str]] = attrs.field(factory=list)


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """``[rows, bytes]`` uint8 -> ``[rows, count]`` values, low bits first."""
    if bits == 8:
        return packed[:, :count].astype(np.uint8)
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * j)) & mask for j in range(per)]
    return np.stack(parts, axis=-1).reshape(packed.shape[0], -1)[:, :count].astype(np.uint8)


def pack_flat(values: np.ndarray, bits: int) -> bytes:
    """Values (any int type, two's complement) -> ONNX raw bytes of a (u)int4/(u)int8 tensor."""
    flat = values.astype(np.int16).reshape(-1) & ((1 << bits) - 1)
    if bits == 8:
        return flat.astype(np.uint8).tobytes()
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, dtype=flat.dtype)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()


def _unique(taken: set[str], old: str, op_type: str) -> str:
    base = next((old.replace(s, op_type) for s in NAME_SUFFIXES if s in old), f"{old}_{op_type}")
    name, i = base, 0
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def to_qdq(proto: Any, config: Any) -> Report:
    """Rewrite the main graph's MatMulNBits nodes in ``proto`` (weights loaded) in place."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    exclude = set(config.nodes_to_exclude or ())
    taken = {n.name for n in graph.node}
    report = Report()
    new_nodes: list[Any] = []
    new_inits: list[Any] = []
    for node in graph.node:
        if node.domain != "com.microsoft" or node.op_type != "MatMulNBits" or node.name in exclude:
            new_nodes.append(node)
            continue
        converted = _convert(node, inits, graph_inputs, config, taken, report)
        if converted is None:
            new_nodes.append(node)
            continue
        nodes, tensors = converted
        new_nodes += nodes
        new_inits += tensors
        report.converted += 1
    if not report.converted:
        return report
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(21, opset.version)
    return report


def _convert(node: Any, inits: dict[str, Any], graph_inputs: set[str], config: Any, taken: set[str],
             report: Report) -> tuple[list[Any], list[Any]] | None:
    from onnx import helper, numpy_helper

    inputs = list(node.input)
    consts = [i for i in inputs[1:] if i]
    if not all(i in inits and i not in graph_inputs for i in consts):
        report.skipped.append((node.name, "its weights are not constant initializers"))
        return None
    at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k, n, block, bits = int(at["K"]), int(at["N"]), int(at["block_size"]), int(at["bits"])
    if bits not in (4, 8):
        report.skipped.append((node.name, f"{bits}-bit weights (4 and 8 are converted)"))
        return None
    blocks = math.ceil(k / block)
    if len(inputs) > 4 and inputs[4]:
        g_idx = numpy_helper.to_array(inits[inputs[4]])
        if not np.array_equal(g_idx, np.arange(k, dtype=g_idx.dtype) // block):
            report.skipped.append((node.name, "a permuted g_idx (DequantizeLinear has none)"))
            return None
    zeros = numpy_helper.to_array(inits[inputs[3]]) if len(inputs) > 3 and inputs[3] else None
    if zeros is not None and zeros.dtype != np.uint8:
        report.skipped.append((node.name, "float zero points (HQQ); DequantizeLinear needs integer ones"))
        return None
    per_axis = blocks == 1
    mid = 1 << (bits - 1)
    signed = bool(config.use_signed_int or (bits == 4 and config.use_int4))
    transpose = bool(config.use_transpose_op)
    dq = _unique(taken, node.name, "DequantizeLinear")
    q = unpack(numpy_helper.to_array(inits[inputs[1]]).reshape(n, -1), bits, k)  # [N, K]
    scales_arr = numpy_helper.to_array(inits[inputs[2]]).reshape(n, blocks)
    zp = unpack(zeros.reshape(n, -1), bits, blocks) if zeros is not None else None
    if zp is not None and signed and not config.add_zero_point and np.all(zp == mid):
        zp = None
    if zp is None and (config.add_zero_point or not signed):
        zp = np.full((n, blocks), mid, dtype=np.uint8)
    tensors = []

    def layout(a: np.ndarray) -> np.ndarray:
        if per_axis and a.shape[1] == 1:
            return a.reshape(-1)
        return a if transpose else a.T

    def quantized(name: str, values: np.ndarray) -> Any:
        data = layout(values).astype(np.int16) - (mid if signed else 0)
        return helper.make_tensor(name, ELEM_TYPES[(bits, signed)], data.shape, pack_flat(data, bits),
                                  raw=True)

    tensors.append(quantized(f"{dq}.qweight", q))
    tensors.append(numpy_helper.from_array(np.ascontiguousarray(layout(scales_arr)), f"{dq}.scales"))
    dq_inputs = [f"{dq}.qweight", f"{dq}.scales"]
    if zp is not None:
        tensors.append(quantized(f"{dq}.qzeros", zp))
        dq_inputs.append(f"{dq}.qzeros")
    axis = (1 if transpose else 0) ^ (1 if per_axis else 0)
    dq_attrs: dict[str, Any] = {"axis": axis}
    if not per_axis:
        dq_attrs["block_size"] = block
    nodes = [helper.make_node("DequantizeLinear", dq_inputs, [f"{dq}/output_0"], name=dq, **dq_attrs)]
    weight = f"{dq}/output_0"
    if transpose:
        tr = _unique(taken, node.name, "Transpose")
        nodes.append(helper.make_node("Transpose", [weight], [f"{tr}/output_0"], name=tr, perm=[1, 0]))
        weight = f"{tr}/output_0"
    has_bias = len(inputs) > 5 and bool(inputs[5])
    mm = _unique(taken, node.name, "MatMul")
    mm_out = f"{mm}/output_0" if has_bias else node.output[0]
    nodes.append(helper.make_node("MatMul", [inputs[0], weight], [mm_out], name=mm))
    if has_bias:
        add = _unique(taken, node.name, "Add")
        nodes.append(helper.make_node("Add", [mm_out, inputs[5]], [node.output[0]], name=add))
    return nodes, tensors
