"""Low-memory int4/int8 weight quantization for the model builder's save step.

The builder (onnxruntime-genai 0.18) builds its graph lazily: weights stay in the
(memory-mapped) torch checkpoint until the graph is saved. At save time, for int4/int8,
its ``to_nbits`` serializes the *whole* graph to one protobuf with every weight in fp32
(about 4 bytes per parameter) and hands it to onnxruntime's ``MatMulNBitsQuantizer``,
which then holds the fp32 weights, the quantized ones and a second model copy at once.
For Qwen2.5-0.5B that is a 4.25 GiB peak against 0.57 GiB just before.

:func:`streaming_to_nbits` does the same quantization node by node on the builder's
in-memory graph: it materializes one fp32 weight, quantizes it with the same
onnxruntime kernel (``DefaultWeightOnlyQuantizer.qbits_block_quant``), swaps the
``MatMul`` for the ``MatMulNBits`` node the quantizer would have written, and drops the
fp32 tensor before the next one. The output is the same graph with the same tensors
(tested byte for byte against the builder's own path); the peak is one fp32 weight on
top of the lazy graph.

Only the builder's default path is handled: the MLAS "default" algorithm, QOperator
format, ``MatMul`` weights (a tied, already quantized embedding is fine; a float embedding
table to quantize is not), 2-D constant weights each used once, no per-node
bit placement, no CUDA weight prepacking, no subgraphs. Anything else returns ``None``
and the caller falls back to the builder's own ``to_nbits``, before anything changed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_SUBGRAPH_ATTRS = ("GRAPH", "GRAPHS")


def _eligible_nodes(builder: Any, graph: Any) -> list[Any] | None:
    """The MatMul nodes to quantize, or ``None`` when the graph needs the builder's path."""
    attrs = builder.quant_attrs
    exclude = set(attrs["nodes_to_exclude"])
    nodes = []
    for node in graph:
        if any(attr.type.name in _SUBGRAPH_ATTRS for attr in node.attributes.values()):
            return None
        if node.domain not in ("", "ai.onnx") or node.name in exclude:
            continue
        if node.op_type == "Gather" and "Gather" in attrs["op_types_to_quantize"]:
            data = node.inputs[0] if node.inputs else None
            if data is not None and data.const_value is not None:
                return None  # an embedding table to quantize: the builder's path does that
            continue
        if node.op_type != "MatMul":
            continue
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        if weight is None or weight.const_value is None:
            continue  # activations times activations: left as MatMul, as onnxruntime does
        if not weight.is_initializer() or len(weight.shape) != 2 or len(weight.uses()) != 1:
            return None
        nodes.append(node)
    return nodes


def _supported(builder: Any) -> bool:
    attrs = builder.quant_attrs
    return not (
        getattr(builder, "exact_quant_override_names", None)
        or getattr(builder, "exact_quant_overrides", None)
        or getattr(builder, "int4_customized_weight_config", None)
        or getattr(builder, "quantization_algo", "default") != "default"
        or attrs["use_qdq"]
        or not set(attrs["op_types_to_quantize"]) <= {"MatMul", "Gather"}
        or attrs["bits"] not in (4, 8)
        or (getattr(builder, "ep", "") == "cuda"
            and getattr(builder, "matmul_attrs", {}).get("weights_prepacked", 0) > 0)
    )


#: Output columns quantized at once: each column's blocks are independent, so a large
#: weight (the LM head: 896 x 151936) is copied to a contiguous float32 chunk at a time.
COLUMNS_PER_CHUNK = 8192


def _quantize_by_columns(quantizer: Any, array: Any, bfloat16: bool) -> tuple[Any, Any, Any]:
    """``qbits_block_quant`` over column chunks of ``W[K, N]``, concatenated (same result)."""
    import numpy as np

    cols = array.shape[1]
    parts = []
    for start in range(0, cols, COLUMNS_PER_CHUNK):
        chunk = array[:, start:start + COLUMNS_PER_CHUNK]
        # the kernel reads raw memory: a contiguous float32 copy of this chunk only
        chunk = np.ascontiguousarray(chunk, dtype=np.float32 if bfloat16 else chunk.dtype)
        parts.append(quantizer.qbits_block_quant(chunk))
        del chunk
    if len(parts) == 1:
        return parts[0]
    packed, scales, zeros = (np.concatenate([part[i] for part in parts], axis=0) for i in range(3))
    return packed, scales, zeros


def streaming_to_nbits(builder: Any) -> Any | None:
    """Quantize ``builder.model``'s MatMul weights in place, one at a time; return the model.

    Returns ``None`` without touching the graph when the builder's settings need its own
    ``to_nbits`` (see the module docstring).
    """
    if not _supported(builder):
        return None
    import ml_dtypes
    import onnx_ir as ir
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )
    from onnxruntime.quantization.quant_utils import QuantFormat

    model = builder.model
    graph = model.graph
    nodes = _eligible_nodes(builder, graph)
    if nodes is None:
        return None
    attrs = builder.quant_attrs
    bits, block_size = int(attrs["bits"]), int(attrs["matmul_block_size"])
    accuracy_level = attrs["accuracy_level"]
    quantizer = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=attrs["is_symmetric"], accuracy_level=accuracy_level,
        quant_format=QuantFormat.QOperator, op_types_to_quantize=("MatMul",), bits=bits))

    def initializer(name: str, array: Any) -> Any:
        value = ir.Value(name=name, shape=ir.Shape(array.shape),
                         type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         const_value=ir.Tensor(array, name=name))
        graph.register_initializer(value)
        return value

    model.opset_imports["com.microsoft"] = 1
    if "Gather" in attrs["op_types_to_quantize"]:
        # onnxruntime's quantizer raises these for int4 Gather support even when no Gather
        # gets quantized; do the same so that the two paths give the same model
        if model.opset_imports.get("", 21) < 21:
            model.opset_imports[""] = 21
        if model.ir_version is not None and model.ir_version < 10:
            model.ir_version = 10
    for node in nodes:
        weight = node.inputs[1]
        array = weight.const_value.numpy()
        bfloat16 = array.dtype == ml_dtypes.bfloat16
        packed, scales, zero_points = _quantize_by_columns(quantizer, array, bfloat16)
        if bfloat16:
            scales = scales.astype(ml_dtypes.bfloat16)
        rows, cols = array.shape
        del array
        inputs = [node.inputs[0], initializer(f"{weight.name}_Q{bits}", packed),
                  initializer(f"{weight.name}_scales", scales)]
        if not attrs["is_symmetric"]:
            inputs.append(initializer(f"{weight.name}_zero_points", zero_points))
        # the same attributes, in the same (sorted) order, as onnx.helper.make_node writes
        node_attrs = [ir.AttrInt64("K", rows), ir.AttrInt64("N", cols)]
        if accuracy_level:
            node_attrs.append(ir.AttrInt64("accuracy_level", int(accuracy_level)))
        node_attrs += [ir.AttrInt64("bits", bits), ir.AttrInt64("block_size", block_size)]
        replacement = ir.Node("com.microsoft", "MatMulNBits", inputs, node_attrs, num_outputs=1,
                              name=f"{node.name}_Q{bits}" if node.name else None)
        ir.convenience.replace_nodes_and_values(graph, node, [node], [replacement],
                                                list(node.outputs), list(replacement.outputs))
        if not weight.uses() and weight not in graph.outputs:
            graph.initializers.pop(weight.name)
        weight.const_value = None  # frees the fp32 copy (lazy tensors rebuild it on demand)
    # onnxruntime's quantizer ends with clean_initializers: drop whatever nothing reads
    used = {value.name for value in graph.outputs}
    for name, value in list(graph.initializers.items()):
        if not value.uses() and name not in used and value not in graph.inputs:
            graph.initializers.pop(name)
    log.debug("quantized %d MatMul weights to int%d one at a time", len(nodes), bits)
    return model


def _builder_model_classes() -> list[Any]:
    """The builder's ``Model`` base class, under each name it is imported as.

    The builder's script puts its own folder on ``sys.path`` and imports ``builders.base``
    as a top-level module, so the class it uses is not the one under
    ``onnxruntime_genai.models.builders.base``; both are patched when both are loaded.
    """
    import importlib
    import sys

    importlib.import_module("onnxruntime_genai.models.builder")
    classes = []
    for name in ("builders.base", "onnxruntime_genai.models.builders.base"):
        module = sys.modules.get(name)
        model = getattr(module, "Model", None)
        if model is not None and model not in classes:
            classes.append(model)
    return classes


@contextlib.contextmanager
def low_memory_quantization() -> Iterator[None]:
    """While active, the builder's ``to_nbits`` tries :func:`streaming_to_nbits` first."""
    patched = []
    for cls in _builder_model_classes():
        original = cls.__dict__["to_nbits"]

        def to_nbits(self: Any, _original: Any = original) -> Any:
            model = streaming_to_nbits(self)
            if model is None:
                log.info("the model builder's settings need its own quantizer (whole graph in "
                         "memory)")
                return _original(self)
            return model

        cls.to_nbits = to_nbits
        patched.append((cls, original))
    if not patched:
        raise RuntimeError("onnxruntime-genai's model builder has no Model class to patch")
    try:
        yield
    finally:
        for cls, original in patched:
            cls.to_nbits = original
