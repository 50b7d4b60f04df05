"""A thin view of an ``onnx.GraphProto`` for surgeons: who produces and consumes each tensor.

Imported only when a surgery runs (it imports onnx and numpy).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


class SurgeryError(Exception):
    """A surgery cannot apply to this model; the message says why."""


class Graph:
    """The main graph of a model, with producer/consumer maps rebuilt on :meth:`refresh`."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the maps after nodes or tensors were changed."""
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node_inputs(node):
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.inputs = {v.name: v for v in self.graph.input}
        self.outputs = {v.name: v for v in self.graph.output}
        self.value_info = {v.name: v for v in self.graph.value_info}
        self.pending: dict[int, list[onnx.NodeProto]] = {}
        self.reserved: set[str] = getattr(self, "reserved", set())

    # -- lookups -------------------------------------------------------------------------------
    def array(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a Constant node's output, else ``None``."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
            if attr.name in ("value_float", "value_int"):
                return np.array(onnx.helper.get_attribute_value(attr))
            if attr.name in ("value_floats", "value_ints"):
                return np.array(onnx.helper.get_attribute_value(attr))
        return None

    def shape(self, name: str) -> list[int | str | None] | None:
        """The shape recorded for a tensor (ints, dim names or ``None``), else ``None``."""
        if name in self.initializers:
            return list(self.initializers[name].dims)
        info = self.inputs.get(name) or self.outputs.get(name) or self.value_info.get(name)
        if info is None or not info.type.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in info.type.tensor_type.shape.dim]

    def elem_type(self, name: str) -> int | None:
        """The element type recorded for a tensor, else ``None``."""
        if name in self.initializers:
            return int(self.initializers[name].data_type)
        info = self.inputs.get(name) or self.outputs.get(name) or self.value_info.get(name)
        return int(info.type.tensor_type.elem_type) if info is not None else None

    def unique(self, base: str) -> str:
        """A tensor or node name not yet used in the graph, derived from ``base``."""
        taken = set(self.producer) | set(self.initializers) | set(self.inputs) | {
            n.name for n in self.graph.node} | self.reserved
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        self.reserved.add(name)
        return name

    # -- edits ---------------------------------------------------------------------------------
    def add_initializer(self, array: np.ndarray, name: str) -> str:
        """Add an initializer under a fresh name derived from ``name``; return the name."""
        name = self.unique(name)
        tensor = numpy_helper.from_array(np.asarray(array), name)
        self.graph.initializer.append(tensor)
        self.initializers[name] = tensor
        return name

    def replace_input(self, old: str, new: str, only: onnx.NodeProto | None = None) -> None:
        """Make consumers of ``old`` (or only node ``only``) read ``new``, in subgraphs too."""
        for node in ([only] if only is not None else list(self.consumers.get(old, []))):
            rename_inputs(node, {old: new})

    def replace(self, node: onnx.NodeProto, new_nodes: list[onnx.NodeProto]) -> None:
        """Put ``new_nodes`` where ``node`` is (none: remove it), at the next :meth:`commit`.

        Edits are collected while the graph is scanned, so node objects stay valid until then.
        """
        self.pending[id(node)] = new_nodes

    def taken(self, node: onnx.NodeProto) -> bool:
        """True when ``node`` is already replaced or removed by a pending edit."""
        return id(node) in self.pending

    def commit(self) -> None:
        """Apply the pending edits and rebuild the maps."""
        if self.pending:
            nodes: list[onnx.NodeProto] = []
            for node in self.graph.node:
                nodes.extend(self.pending.get(id(node), [node]))
            copies = [onnx.NodeProto() for _ in nodes]
            for copy, node in zip(copies, nodes, strict=True):
                copy.CopyFrom(node)
            del self.graph.node[:]
            self.graph.node.extend(copies)
        self.refresh()

    def prune(self) -> None:
        """Commit; drop nodes whose outputs nobody uses and initializers nobody reads; sort."""
        self.commit()
        needed = set(self.outputs)
        keep: list[onnx.NodeProto] = []
        for node in reversed(topological(self.graph)):
            if any(o in needed for o in node.output if o):
                keep.append(node)
                needed.update(node_inputs(node))
        keep.reverse()
        copies = [onnx.NodeProto() for _ in keep]
        for copy, node in zip(copies, keep, strict=True):
            copy.CopyFrom(node)
        del self.graph.node[:]
        self.graph.node.extend(copies)
        used = needed | set(self.inputs)
        for field in (self.graph.initializer, self.graph.value_info):
            for k in reversed(range(len(field))):
                if field[k].name not in used:
                    del field[k]
        self.refresh()

    def ensure_opset(self, domain: str, version: int = 1) -> None:
        """Declare ``domain`` in the model's opset imports if it is not yet."""
        if not any(o.domain == domain for o in self.model.opset_import):
            self.model.opset_import.append(onnx.helper.make_opsetid(domain, version))


def node_inputs(node: onnx.NodeProto) -> Iterator[str]:
    """Every tensor name a node reads: its inputs and outer names its subgraphs use."""
    for name in node.input:
        if name:
            yield name
    for attr in node.attribute:
        for sub in _subgraphs(attr):
            yield from _outer_names(sub)


def _subgraphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attr.type == onnx.AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == onnx.AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    local = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        local.update(o for o in node.output if o)
    used: set[str] = set()
    for node in graph.node:
        used.update(node_inputs(node))
    used.update(v.name for v in graph.output)
    return used - local


def rename_inputs(node: onnx.NodeProto, mapping: dict[str, str]) -> None:
    """Rename tensors a node reads, following outer-scope references into its subgraphs."""
    for i, name in enumerate(node.input):
        if name in mapping:
            node.input[i] = mapping[name]
    for attr in node.attribute:
        for sub in _subgraphs(attr):
            local = {v.name for v in sub.input} | {t.name for t in sub.initializer} | {
                o for n in sub.node for o in n.output}
            outer = {k: v for k, v in mapping.items() if k not in local}
            if outer:
                for inner in sub.node:
                    rename_inputs(inner, outer)
                for out in sub.output:
                    if out.name in outer:
                        out.name = outer[out.name]


def topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes in an order where each tensor is produced before it is read.

    Stable: nodes already in order keep their order. Nodes in a cycle keep their place at the end.
    """
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    producers = {o for n in graph.node for o in n.output if o}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    progress = True
    while pending and progress:
        progress = False
        rest = []
        for node in pending:
            needs = [i for i in node_inputs(node) if i in producers and i not in available]
            if needs:
                rest.append(node)
            else:
                ordered.append(node)
                available.update(node.output)
                progress = True
        pending = rest
    return ordered + pending


def set_shape(info: Any, dims: list[int | str | None]) -> None:
    """Write ``dims`` (ints, names, ``None`` for unknown) into a ValueInfoProto's shape."""
    shape = info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif isinstance(d, str):
            dim.dim_param = d
