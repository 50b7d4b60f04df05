"""Clean-up surgeons: duplicate initializers and nodes, Memcpy nodes."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import onnx

from olivine_onnx.surgeons.graph import rename_inputs, topological

log = logging.getLogger("olivine.pass.surgeries")


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield attr.g
                yield from _subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield sub
                    yield from _subgraphs(sub)


def dedupe_subgraph_initializers(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """In Loop/If/Scan bodies, keep the first initializer of each name and drop the repeats."""
    removed = 0
    for sub in _subgraphs(model.graph):
        seen: set[str] = set()
        drop = []
        for k in range(len(sub.initializer)):
            name = sub.initializer[k].name
            if name in seen:
                drop.append(k)
            seen.add(name)
        for k in reversed(drop):
            del sub.initializer[k]
        removed += len(drop)
    log.info("DeduplicateSubgraphInitializers: %d repeated initializers removed", removed)
    return model


def dedupe_nodes(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Drop every node that produces a tensor an earlier node already produces."""
    seen: set[str] = set()
    drop = []
    for k, node in enumerate(model.graph.node):
        outs = [o for o in node.output if o]
        if any(o in seen for o in outs):
            drop.append(k)
        else:
            seen.update(outs)
    for k in reversed(drop):
        del model.graph.node[k]
    log.info("DeduplicateNodes: %d nodes removed", len(drop))
    return model


_MEMCPY = ("MemcpyToHost", "MemcpyFromHost")


def remove_memcpy(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Drop MemcpyToHost/MemcpyFromHost nodes (ONNX Runtime inserts the copies it needs when
    it loads the model), in the main graph and every subgraph; graph output names stay."""
    removed = _remove_memcpy(model.graph)
    log.info("RemoveMemcpy: %d nodes removed", removed)
    return model


def _remove_memcpy(graph: onnx.GraphProto) -> int:
    bypass = {n.output[0]: n.input[0] for n in graph.node
              if n.op_type in _MEMCPY and len(n.input) == 1 and len(n.output) == 1}
    for key in list(bypass):
        target = bypass[key]
        while target in bypass:
            target = bypass[target]
        bypass[key] = target
    outputs = {o.name for o in graph.output}
    # a copy that feeds a graph output: its source is renamed to the output's name instead
    rename = {src: out for out, src in bypass.items() if out in outputs}
    keep = []
    for node in graph.node:
        if node.op_type in _MEMCPY and len(node.input) == 1 and len(node.output) == 1:
            continue
        rename_inputs(node, {k: rename.get(v, v) for k, v in bypass.items()})
        rename_inputs(node, rename)
        for j, out in enumerate(node.output):
            if out in rename:
                node.output[j] = rename[out]
        keep.append(node)
    removed = len(graph.node) - len(keep)
    if removed:
        copies = [onnx.NodeProto() for _ in keep]
        for copy, node in zip(copies, keep, strict=True):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(copies)
        ordered = [onnx.NodeProto() for _ in graph.node]
        for copy, node in zip(ordered, topological(graph), strict=True):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(ordered)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                removed += _remove_memcpy(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    removed += _remove_memcpy(sub)
    return removed


def dedupe_hashed_initializers(model: onnx.ModelProto) -> int:
    """Initializers of the main graph with equal type, shape and bytes become one; returns how
    many were merged away (Olive's ``remove_duplicate_initializers``)."""
    from onnx import numpy_helper

    first: dict[tuple[Any, ...], str] = {}
    mapping: dict[str, str] = {}
    outputs = {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}
    for init in model.graph.initializer:
        if init.name in outputs or init.name in inputs:
            continue
        data = numpy_helper.to_array(init).tobytes()
        key = (init.data_type, tuple(init.dims), hashlib.sha256(data).hexdigest(), len(data))
        if key in first:
            mapping[init.name] = first[key]
        else:
            first[key] = init.name
    if not mapping:
        return 0
    for node in model.graph.node:
        rename_inputs(node, mapping)
    for k in range(len(model.graph.initializer) - 1, -1, -1):
        if model.graph.initializer[k].name in mapping:
            del model.graph.initializer[k]
    return len(mapping)
