"""Surgeons for decoder LLM graphs: embeddings, LM head, rotary caches, attention masks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from olivine_onnx.surgeons.graph import Graph, SurgeryError

log = logging.getLogger("olivine.pass.surgeries")


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_nodes(sub)


def _constant_anywhere(g: Graph, name: str) -> np.ndarray | None:
    """An initializer's value, or a Constant node's output in any (sub)graph."""
    if name in g.initializers:
        return numpy_helper.to_array(g.initializers[name])
    for node in _all_nodes(g.graph):
        if node.op_type == "Constant" and name in node.output and node.attribute:
            return np.array(helper.get_attribute_value(node.attribute[0])) \
                if node.attribute[0].name != "value" else numpy_helper.to_array(node.attribute[0].t)
    return None


def _first(g: Graph, op_types: set[str]) -> onnx.NodeProto | None:
    return next((n for n in g.graph.node if n.op_type in op_types), None)


# -- embeddings and LM head ----------------------------------------------------------------------
def tie_word_embeddings(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """The LM head reads the embedding weight when both hold the same values.

    Float: ``MatMul(x, W)`` producing ``logits`` with ``W == E.T`` becomes
    Reshape -> ``Gemm(transB=1)`` on ``E`` -> Reshape. Quantized: a ``MatMulNBits`` head whose
    weight, scales and zero points equal those of the ``GatherBlockQuantized`` embedding reads
    the embedding's tensors. Models that do not match are left as they are.
    """
    g = Graph(model)
    source = next((n for n in ("input_ids", "input_embeds", "inputs_embeds") if n in g.inputs), None)
    if source is None or "logits" not in g.outputs or "logits" not in g.producer:
        log.info("TieWordEmbeddings: no input_ids input or logits output; nothing to tie")
        return model
    embed = next((n for n in g.consumers.get(source, [])
                  if n.op_type in ("Gather", "GatherBlockQuantized") and n.input[0] in g.initializers),
                 None)
    head = g.producer["logits"]
    if embed is None or head.op_type not in ("MatMul", "MatMulNBits") or \
            head.input[1] not in g.initializers:
        log.info("TieWordEmbeddings: no constant embedding Gather or LM head MatMul found")
        return model
    pair = (embed.op_type, head.op_type)
    if pair == ("Gather", "MatMul"):
        _tie_float(g, embed, head)
    elif pair == ("GatherBlockQuantized", "MatMulNBits"):
        _tie_quantized(g, embed, head)
    else:
        log.info("TieWordEmbeddings: %s embedding and %s head cannot be tied", *pair)
        return model
    g.prune()
    return g.model


def _tie_float(g: Graph, embed: onnx.NodeProto, head: onnx.NodeProto) -> None:
    table = numpy_helper.to_array(g.initializers[embed.input[0]])
    weight = numpy_helper.to_array(g.initializers[head.input[1]])
    if table.ndim != 2 or weight.shape != table.T.shape or not np.array_equal(table.T, weight):
        log.info("TieWordEmbeddings: embedding and LM head weights differ; not tied")
        return
    vocab, hidden = table.shape
    x, base = head.input[0], head.name or "lm_head"
    flat_shape = g.add_initializer(np.array([-1, hidden], dtype=np.int64), f"{base}_Reshape_pre_shape")
    flat = g.unique(f"{base}_Reshape_pre_output")
    gemm_out = g.unique(f"{base}_Gemm_output")
    shape_out = g.unique(f"{base}_Shape_output")
    lead = g.unique(f"{base}_Slice_output")
    starts = g.add_initializer(np.array([0], dtype=np.int64), f"{base}_Slice_starts")
    ends = g.add_initializer(np.array([-1], dtype=np.int64), f"{base}_Slice_ends")
    vocab_name = g.add_initializer(np.array([vocab], dtype=np.int64), f"{base}_Concat_out_feat")
    final_shape = g.unique(f"{base}_Concat_output")
    g.replace(head, [
        helper.make_node("Reshape", [x, flat_shape], [flat], name=g.unique(f"{base}_Reshape_pre")),
        helper.make_node("Gemm", [flat, embed.input[0]], [gemm_out], name=g.unique(f"{base}_Gemm"),
                         alpha=1.0, beta=1.0, transA=0, transB=1),
        helper.make_node("Shape", [x], [shape_out], name=g.unique(f"{base}_Shape")),
        helper.make_node("Slice", [shape_out, starts, ends], [lead], name=g.unique(f"{base}_Slice")),
        helper.make_node("Concat", [lead, vocab_name], [final_shape], axis=0,
                         name=g.unique(f"{base}_Concat")),
        helper.make_node("Reshape", [gemm_out, final_shape], [head.output[0]],
                         name=g.unique(f"{base}_Reshape_post")),
    ])
    log.info("TieWordEmbeddings: LM head now reads %s", embed.input[0])


def _tie_quantized(g: Graph, embed: onnx.NodeProto, head: onnx.NodeProto) -> None:
    e_in = [embed.input[0], *embed.input[2:]]
    h_in = list(head.input[1:len(e_in) + 1])
    if len(embed.input) - 1 != len([i for i in head.input[1:4] if i]) or len(h_in) != len(e_in):
        log.info("TieWordEmbeddings: embedding and LM head have different quantization inputs")
        return
    for a, b in zip(e_in, h_in, strict=True):
        x, y = g.array(a), g.array(b)
        if x is None or y is None or x.size != y.size or not np.array_equal(x.ravel(), y.ravel()):
            log.info("TieWordEmbeddings: %s and %s differ; not tied", a, b)
            return
    base = head.name or "lm_head"
    shape = g.add_initializer(np.array(g.initializers[h_in[0]].dims, dtype=np.int64),
                              f"{base}_Reshape_tied_shape")
    tied = g.unique(f"{base}_Reshape_tied_output")
    reshape = helper.make_node("Reshape", [e_in[0], shape], [tied], name=g.unique(f"{base}_Reshape_tied"))
    new_head = onnx.NodeProto()
    new_head.CopyFrom(head)
    new_head.input[1] = tied
    for k, name in enumerate(e_in[1:], start=2):
        new_head.input[k] = name
    g.replace(head, [reshape, new_head])
    log.info("TieWordEmbeddings: quantized LM head now reads %s", e_in[0])


def _find(g: Graph, op_type: str, name_part: str) -> onnx.NodeProto | None:
    return next((n for n in g.graph.node if n.op_type == op_type and name_part in n.name), None)


def quantize_embedding_int8(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """The ``embed_tokens`` Gather on a float table -> int8 ``GatherBlockQuantized`` (block 32).

    Symmetric per-block scales (max |x| / 127), stored as uint8 with zero point 128; scales keep
    the table's float type.
    """
    g = Graph(model)
    gather = _find(g, "Gather", "embed_tokens")
    if gather is None or gather.input[0] not in g.initializers:
        log.warning("QuantizeEmbeddingInt8: no embed_tokens Gather on a constant table; skipped")
        return model
    init = g.initializers[gather.input[0]]
    if init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        log.info("QuantizeEmbeddingInt8: the embedding is not float16/float32; skipped")
        return model
    table = numpy_helper.to_array(init).astype(np.float32)
    vocab, hidden = table.shape
    block = 32
    if hidden % block:
        log.warning("QuantizeEmbeddingInt8: hidden size %d is not a multiple of %d; skipped",
                    hidden, block)
        return model
    scale_type = np.float16 if init.data_type == onnx.TensorProto.FLOAT16 else np.float32
    blocks = table.reshape(vocab, hidden // block, block)
    scales = (np.abs(blocks).max(axis=2) / 127.0).astype(scale_type)
    safe = np.where(scales.astype(np.float32) == 0, 1.0, scales.astype(np.float32))
    q = np.clip(np.round(blocks / safe[:, :, None]), -128, 127).astype(np.int16) + 128
    name = gather.input[0]
    qw = g.add_initializer(q.astype(np.uint8).reshape(vocab, hidden), f"{name}_Q8")
    sc = g.add_initializer(scales, f"{name}_scales")
    zp = g.add_initializer(np.full((vocab, hidden // block), 128, dtype=np.uint8), f"{name}_zp")
    g.ensure_opset("com.microsoft")
    g.replace(gather, [helper.make_node(
        "GatherBlockQuantized", [qw, gather.input[1], sc, zp], [gather.output[0]],
        name=g.unique(gather.name.replace("Gather", "GatherBlockQuantized")),
        domain="com.microsoft", bits=8, block_size=block, gather_axis=0, quantize_axis=1)])
    g.prune()
    return g.model


def share_embedding_lm_head(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """The ``lm_head`` MatMulNBits becomes an 8-bit MatMulNBits on the int8 embedding's tensors.

    Apply after ``QuantizeEmbeddingInt8``: one copy of the vocabulary weights serves both.
    """
    g = Graph(model)
    gbq = _find(g, "GatherBlockQuantized", "embed_tokens")
    head = _find(g, "MatMulNBits", "lm_head")
    if gbq is None or head is None:
        log.warning("ShareEmbeddingLmHead: needs an embed_tokens GatherBlockQuantized and an "
                    "lm_head MatMulNBits; skipped")
        return model
    attrs = {a.name: helper.get_attribute_value(a) for a in gbq.attribute}
    bits, block = attrs.get("bits", 4), attrs.get("block_size", 128)
    if bits != 8 or gbq.input[0] not in g.initializers:
        log.warning("ShareEmbeddingLmHead: the embedding is not a constant int8 table; skipped")
        return model
    if gbq.input[0] in head.input[1] or head.input[2] == gbq.input[2]:
        log.info("ShareEmbeddingLmHead: already shared")
        return model
    vocab, hidden = g.initializers[gbq.input[0]].dims
    shape = g.add_initializer(np.array([vocab, hidden // block, block], dtype=np.int64),
                              "lm_head.MatMulNBits.reshape_shape")
    weight = g.unique("lm_head.MatMulNBits.reshaped_weight")
    inputs = [head.input[0], weight, gbq.input[2]]
    if len(gbq.input) > 3 and gbq.input[3]:
        inputs.append(gbq.input[3])
    new_head = helper.make_node("MatMulNBits", inputs, [head.output[0]],
                                name=g.unique(f"{head.name}_shared"), domain="com.microsoft",
                                bits=8, block_size=block, K=hidden, N=vocab)
    new_head.attribute.extend(a for a in head.attribute if a.name == "accuracy_level")
    g.ensure_opset("com.microsoft")
    g.replace(head, [helper.make_node("Reshape", [gbq.input[0], shape], [weight],
                                      name=g.unique("lm_head/Reshape_shared_weight")), new_head])
    g.prune()
    return g.model


def remove_gidx_from_matmulnbits(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Drop the ``g_idx`` input of MatMulNBits nodes where it is sorted (no act-order): the
    default order gives the same result. A later bias input keeps its position."""
    g = Graph(model)
    changed = 0
    for node in g.graph.node:
        if node.op_type != "MatMulNBits" or len(node.input) < 5 or not node.input[4]:
            continue
        gidx = g.array(node.input[4])
        if gidx is None or not np.all(np.diff(gidx.ravel()) >= 0):
            continue
        node.input[4] = ""
        while node.input and not node.input[-1]:
            del node.input[-1]
        changed += 1
    log.info("RemoveGidxFromMatMulNBits: g_idx removed from %d nodes", changed)
    g.prune()
    return g.model


# -- attention -----------------------------------------------------------------------------------
def remove_rope_multi_cache(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """GroupQueryAttention/RotaryEmbedding read one cos/sin cache (large or small) instead of
    the output of an ``If`` that picks one by sequence length."""
    g = Graph(model)
    first = _first(g, {"GroupQueryAttention", "RotaryEmbedding"})
    if first is None or len(first.input) < 9:
        return model
    caches = {"cos_cache": first.input[7], "sin_cache": first.input[8]}
    producers = [g.producer.get(n) for n in caches.values()]
    if any(p is None or p.op_type != "If" for p in producers):
        return model
    size = "large" if options.use_large_cache else "small"
    for key, name in caches.items():
        value = _constant_anywhere(g, f"{key}_{size}")
        if value is None:
            raise SurgeryError(f"RemoveRopeMultiCache: no constant named {key}_{size} in the model")
        single = g.add_initializer(value, f"{key}_single")
        g.replace_input(name, single)
    log.info("RemoveRopeMultiCache: kept the %s rotary cache", size)
    g.prune()
    return g.model


def attention_mask_to_sequence_lengths(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """GroupQueryAttention reads new int32 inputs ``past_seq_len`` [batch, 1] and
    ``total_seq_len`` [] instead of values computed from ``attention_mask``, which goes away."""
    g = Graph(model)
    first = _first(g, {"GroupQueryAttention"})
    if first is None or len(first.input) < 7:
        return model
    names = {"past_seq_len": first.input[5], "total_seq_len": first.input[6]}
    if any(n in g.inputs for n in names.values()):
        return model
    if "input_ids" not in g.inputs:
        raise SurgeryError("AttentionMaskToSequenceLengths: the model has no input_ids input")
    batch = (g.shape("input_ids") or [None])[0]
    shapes: dict[str, list[Any]] = {"past_seq_len": [batch, 1], "total_seq_len": []}
    for key, old in names.items():
        g.graph.input.append(helper.make_tensor_value_info(key, onnx.TensorProto.INT32, shapes[key]))
        g.replace_input(old, key)
    g.prune()
    if "attention_mask" in g.inputs and "attention_mask" not in g.consumers:
        keep = [v for v in g.graph.input if v.name != "attention_mask"]
        del g.graph.input[:]
        g.graph.input.extend(keep)
    elif "attention_mask" in g.consumers:
        raise SurgeryError("AttentionMaskToSequenceLengths: attention_mask is still read by "
                           f"{', '.join(n.name or n.op_type for n in g.consumers['attention_mask'])}")
    g.refresh()
    return g.model


_MASK_CONSUMERS = {"Add", "Mul", "Expand", "Where", "Shape"}


def replace_attention_mask_value(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Float constants (Constant, ConstantOfShape, initializers) read only by Add, Mul, Expand,
    Where or Shape have values below ``threshold`` set to ``replacement``."""
    g = Graph(model)
    changed = 0

    def only_mask_readers(name: str) -> bool:
        return all(n.op_type in _MASK_CONSUMERS for n in g.consumers.get(name, []))

    def replaced(value: np.ndarray) -> np.ndarray | None:
        if not np.any(value < options.threshold):
            return None
        out = value.copy()
        out[out < options.threshold] = options.replacement
        return out

    for node in g.graph.node:
        if node.op_type not in ("Constant", "ConstantOfShape") or not node.attribute:
            continue
        attr = node.attribute[0]
        if attr.name != "value" or attr.t.data_type != onnx.TensorProto.FLOAT:
            continue
        if not only_mask_readers(node.output[0]):
            continue
        new = replaced(numpy_helper.to_array(attr.t))
        if new is not None:
            attr.t.CopyFrom(numpy_helper.from_array(new.astype(np.float32), attr.t.name))
            changed += 1
    for init in g.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or not only_mask_readers(init.name):
            continue
        new = replaced(numpy_helper.to_array(init))
        if new is not None:
            init.CopyFrom(numpy_helper.from_array(new.astype(np.float32), init.name))
            changed += 1
    log.info("ReplaceAttentionMaskValue: %d constants changed", changed)
    return g.model
