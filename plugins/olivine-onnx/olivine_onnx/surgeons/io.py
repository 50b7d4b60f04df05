"""Surgeons on the graph's inputs and outputs: names, dimension names, order, shapes."""

from __future__ import annotations

from typing import Any

import onnx

from olivine_onnx.surgeons.graph import Graph, SurgeryError
from olivine_onnx.surgeons.graph import rename_inputs as rename_reads


def _check_renames(g: Graph, old: list[str], new: list[str], kind: str, pool: dict[str, Any]) -> None:
    missing = [n for n in old if n not in pool]
    if missing:
        raise SurgeryError(f"old_names: {', '.join(map(repr, missing))} not among the model's "
                           f"{kind}s ({', '.join(pool)})")
    taken = (set(g.producer) | set(g.initializers) | set(g.inputs) | set(g.outputs)) - set(old)
    clash = [n for n in new if n in taken]
    if clash or len(set(new)) != len(new):
        raise SurgeryError(f"new_names: {', '.join(map(repr, clash or new))} would clash with "
                           "names the model already uses")


def rename_inputs(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Rename graph inputs, and every node (also in subgraphs) that reads them."""
    g = Graph(model)
    _check_renames(g, options.old_names, options.new_names, "input", g.inputs)
    mapping = dict(zip(options.old_names, options.new_names, strict=True))
    for info in g.graph.input:
        if info.name in mapping:
            info.name = mapping[info.name]
    for node in g.graph.node:
        _rename_all(node, mapping)
    for out in g.graph.output:  # an input passed straight through to an output
        if out.name in mapping:
            raise SurgeryError(f"old_names: {out.name!r} is also a graph output; rename it with "
                               "RenameOutputs too")
    return model


def _rename_all(node: onnx.NodeProto, mapping: dict[str, str]) -> None:
    rename_reads(node, mapping)


def rename_outputs(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Rename graph outputs, the nodes producing them and every reader."""
    g = Graph(model)
    _check_renames(g, options.old_names, options.new_names, "output", g.outputs)
    mapping = dict(zip(options.old_names, options.new_names, strict=True))
    for info in list(g.graph.output) + list(g.graph.value_info):
        if info.name in mapping:
            info.name = mapping[info.name]
    for node in g.graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        _rename_all(node, mapping)
    if any(name in g.inputs or name in g.initializers for name in mapping):
        raise SurgeryError("old_names: an output that is also a graph input or initializer "
                           "cannot be renamed")
    return model


def _set_dim(info: onnx.ValueInfoProto, dim_idx: int, dim_name: str, what: str) -> None:
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        raise SurgeryError(f"{what} {info.name!r} has no shape information")
    if dim_idx >= len(tensor.shape.dim):
        raise SurgeryError(f"dim_idx: {dim_idx} is out of range: {what} {info.name!r} has "
                           f"{len(tensor.shape.dim)} dimensions")
    dim = tensor.shape.dim[dim_idx]
    dim.Clear()
    dim.dim_param = dim_name


def rename_output_dims(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Dimension ``dim_idx`` of output ``output_idx`` gets the symbolic name ``dim_name``."""
    outputs = model.graph.output
    if options.output_idx >= len(outputs):
        raise SurgeryError(f"output_idx: {options.output_idx} is out of range: the model has "
                           f"{len(outputs)} outputs")
    _set_dim(outputs[options.output_idx], options.dim_idx, options.dim_name, "output")
    return model


def rename_input_dims(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Dimension ``dim_idx`` of an input (by name or index) gets the symbolic name ``dim_name``."""
    inputs = list(model.graph.input)
    if options.input_name is not None:
        found = [v for v in inputs if v.name == options.input_name]
        if not found:
            raise SurgeryError(f"input_name: {options.input_name!r} is not an input of the model "
                               f"({', '.join(v.name for v in inputs)})")
        target = found[0]
    else:
        if options.input_idx >= len(inputs):
            raise SurgeryError(f"input_idx: {options.input_idx} is out of range: the model has "
                               f"{len(inputs)} inputs")
        target = inputs[options.input_idx]
    _set_dim(target, options.dim_idx, options.dim_name, "input")
    return model


def reorder_inputs(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Put the graph inputs in the order ``permutation`` gives."""
    inputs = list(model.graph.input)
    if sorted(options.permutation) != list(range(len(inputs))):
        raise SurgeryError(f"permutation: expected an order of 0..{len(inputs) - 1} (the model "
                           f"has {len(inputs)} inputs), got {options.permutation}")
    reordered = [inputs[i] for i in options.permutation]
    copies = [onnx.ValueInfoProto() for _ in reordered]
    for copy, info in zip(copies, reordered, strict=True):
        copy.CopyFrom(info)
    del model.graph.input[:]
    model.graph.input.extend(copies)
    return model


def infer_shapes(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """ONNX shape inference (intermediate shapes recorded as value_info)."""
    return onnx.shape_inference.infer_shapes(model)


def remove_shapes(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Drop the recorded intermediate shapes (value_info)."""
    del model.graph.value_info[:]
    return model


def remove_initializer_from_inputs(model: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Initializers also listed as graph inputs (old exporters) stop being inputs."""
    names = {t.name for t in model.graph.initializer}
    keep = [v for v in model.graph.input if v.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return model
