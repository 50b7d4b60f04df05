"""Rewrite an ONNX model's MatMul and Gather weights into MatMulNBits / GatherBlockQuantized.

The model is streamed: the graph is loaded without its external data, each weight is
read from the data file through a memory map when its turn comes, quantized, and its
packed bytes appended to the output data file at once. Peak memory is the graph plus
about one weight, whatever the model's size, and a model with external data is read
correctly (ONNX Runtime's own quantizer, given the path of such a model, is not).
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from olivine import UsageError

log = logging.getLogger("olivine.pass.weightquant")

MS_DOMAIN = "com.microsoft"
_NP_TYPES = {1: np.float32, 10: np.float16}  # TensorProto FLOAT, FLOAT16
_INLINE_LIMIT = 1024  # tensors below this many bytes stay inside model.onnx

#: Takes ``W[N, K]`` (torch, float32) and returns a QuantizedWeight (optionally also ``name=``).
QuantizeFn = Callable[..., Any]


@attrs.frozen
class Selection:
    """Which nodes to quantize."""

    op_types: tuple[str, ...] = ("MatMul",)
    nodes_to_include: tuple[str, ...] = ()
    nodes_to_exclude: tuple[str, ...] = ()


@attrs.define
class Candidate:
    """A node whose constant weight will be quantized."""

    node: Any
    weight: str
    op_type: str
    shape: tuple[int, int]
    data_type: int  # the weight's ONNX element type


class TensorReader:
    """Reads initializers of a model loaded without external data, one at a time."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    def array(self, tensor: Any) -> np.ndarray:
        """The tensor's values (a read-only memory map for external data)."""
        from onnx import TensorProto, numpy_helper

        if tensor.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(tensor)
        info = {e.key: e.value for e in tensor.external_data}
        dtype = _NP_TYPES.get(tensor.data_type)
        if dtype is None:
            raise ValueError(f"initializer {tensor.name}: external data of type {tensor.data_type} "
                             "is not read here")
        path = self.model_dir / info["location"]
        offset = int(info.get("offset", 0))
        shape = tuple(tensor.dims)
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)

    def raw_chunks(self, tensor: Any, chunk: int = 64 << 20) -> Iterable[bytes]:
        """The stored bytes of an external tensor, in chunks."""
        info = {e.key: e.value for e in tensor.external_data}
        path = self.model_dir / info["location"]
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else os.path.getsize(path) - offset
        with path.open("rb") as fh:
            fh.seek(offset)
            left = length
            while left > 0:
                data = fh.read(min(chunk, left))
                if not data:
                    raise ValueError(f"initializer {tensor.name}: {path.name} ends early")
                left -= len(data)
                yield data


class DataWriter:
    """Appends tensors to one external-data file and makes the TensorProtos that refer to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = path.open("wb")
        self.offset = 0

    def _align(self) -> None:
        pad = (-self.offset) % 64
        if pad:
            self.fh.write(b"\0" * pad)
            self.offset += pad

    def _external(self, name: str, data_type: int, dims: Iterable[int], offset: int, length: int) -> Any:
        from onnx import TensorProto

        t = TensorProto(name=name, data_type=data_type, dims=list(dims))
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)),
                           ("length", str(length))):
            t.external_data.add(key=key, value=value)
        return t

    def add(self, name: str, array: np.ndarray) -> Any:
        """A tensor for ``array``: inline when small, else appended to the data file."""
        from onnx import helper, numpy_helper

        array = np.ascontiguousarray(array)
        if array.nbytes < _INLINE_LIMIT:
            return numpy_helper.from_array(array, name)
        self._align()
        t = self._external(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape, self.offset,
                           array.nbytes)
        self.fh.write(array.tobytes())
        self.offset += array.nbytes
        return t

    def copy(self, tensor: Any, reader: TensorReader) -> Any:
        """``tensor`` with its external bytes copied into this file (inline tensors as they are)."""
        from onnx import TensorProto

        if tensor.data_location != TensorProto.EXTERNAL:
            return tensor
        self._align()
        start = self.offset
        for chunk in reader.raw_chunks(tensor):
            self.fh.write(chunk)
            self.offset += len(chunk)
        return self._external(tensor.name, tensor.data_type, tensor.dims, start, self.offset - start)

    def close(self) -> None:
        """Close the file (removed if nothing was written)."""
        self.fh.close()
        if self.offset == 0:
            self.path.unlink()


def find_candidates(graph: Any, selection: Selection) -> tuple[list[Candidate], dict[str, int]]:
    """Nodes whose weight is a constant float 2-D initializer, and why others were skipped."""
    inits = {t.name: t for t in graph.initializer}
    chosen: list[Candidate] = []
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for node in graph.node:
        if node.op_type not in ("MatMul", "Gather"):
            continue
        if node.op_type not in selection.op_types:
            skip(f"{node.op_type} not in op_types_to_quantize")
            continue
        if node.name in selection.nodes_to_exclude:
            skip("in nodes_to_exclude")
            continue
        if selection.nodes_to_include and node.name not in selection.nodes_to_include:
            skip("not in nodes_to_include")
            continue
        index = 1 if node.op_type == "MatMul" else 0
        weight = inits.get(node.input[index]) if len(node.input) > index else None
        if weight is None:
            skip("weight is computed, not a constant initializer")
            continue
        if weight.data_type not in _NP_TYPES:
            skip("weight is not float32 or float16")
            continue
        if len(weight.dims) != 2:
            skip("weight is not 2-D")
            continue
        if node.op_type == "Gather" and any(a.name == "axis" and a.i != 0 for a in node.attribute):
            skip("Gather on an axis other than 0")
            continue
        if node.op_type == "Gather" and weight.dims[1] % 2:
            skip("Gather table with an odd row length")
            continue
        rows, cols = int(weight.dims[0]), int(weight.dims[1])
        shape = (cols, rows) if node.op_type == "MatMul" else (rows, cols)  # as W[N, K]
        chosen.append(Candidate(node, weight.name, node.op_type, shape, weight.data_type))
    return chosen, skipped


def _no_candidates_message(path: Path, graph: Any, skipped: dict[str, int]) -> str:
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ("MatMul", "Gather"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    found = ", ".join(f"{n} {op}" for op, n in sorted(counts.items())) or "no MatMul or Gather nodes"
    why = "; ".join(f"{n} skipped: {reason}" for reason, n in sorted(skipped.items()))
    return (f"{path.name} has nothing to quantize: weight-only quantization needs MatMul (or Gather) "
            f"nodes with a constant float 2-D weight, and the model has {found}"
            f"{' (' + why + ')' if why else ''}")


def quantize_onnx(source: Path, target_dir: Path, quantize: QuantizeFn, *, bits: int, block_size: int,
                  accuracy_level: int | None, selection: Selection,
                  progress: Callable[[float, float | None, str], None] | None = None,
                  candidates_hook: Callable[[list[Candidate]], None] | None = None,
                  settings: Callable[[Candidate], tuple[int, int]] | None = None) -> Path:
    """Quantize ``source`` (a .onnx file) into ``target_dir``; return the new model file.

    ``quantize`` maps one ``W[N, K]`` to a QuantizedWeight. A quantizer that needs to
    know which weight it is given (GPTQ) has a ``name`` keyword: it is called as
    ``quantize(w, name=weight_name)``; ``candidates_hook`` sees the chosen nodes first.
    ``settings`` gives ``(bits, block_size)`` per node (Olive's ``customized_weight_config``);
    the quantizer is then called as ``quantize(w, bits=..., block_size=...)``.
    MatMul weights are stored as ``[K, N]`` in ONNX and transposed on the way in. Raises :class:`UsageError`
    when no node qualifies.
    """
    import onnx
    import torch

    from olivine_weightquant.packing import gather_tensors, matmul_nbits_tensors

    proto = onnx.load(str(source), load_external_data=False)
    graph = proto.graph
    candidates, skipped = find_candidates(graph, selection)
    if not candidates:
        raise UsageError(_no_candidates_message(source, graph, skipped))
    if candidates_hook is not None:
        candidates_hook(candidates)
    named = "name" in inspect.signature(quantize).parameters
    reader = TensorReader(source.parent)
    inits = {t.name: t for t in graph.initializer}
    target_dir.mkdir(parents=True, exist_ok=True)
    out_file = target_dir / source.name
    writer = DataWriter(target_dir / f"{source.name}.data")
    done: dict[tuple[str, str, int, int], list[str]] = {}
    new_tensors: list[Any] = []
    total = len(candidates)
    try:
        for i, cand in enumerate(candidates):
            if progress:
                progress(i, total, f"{cand.op_type} {cand.node.name or cand.weight}")
            node_bits, node_block = settings(cand) if settings else (bits, block_size)
            key = (cand.weight, cand.op_type, node_bits, node_block)
            if key not in done:
                tensor = inits[cand.weight]
                array = reader.array(tensor)
                scale_dtype = np.dtype(_NP_TYPES[tensor.data_type])
                with warnings.catch_warnings():  # a read-only memory map; it is only read
                    warnings.simplefilter("ignore", UserWarning)
                    w = torch.from_numpy(np.asarray(array))
                w = w.t() if cand.op_type == "MatMul" else w
                if settings:
                    qw = quantize(w, bits=node_bits, block_size=node_block)
                else:
                    qw = quantize(w, name=cand.weight) if named else quantize(w)
                del w, array
                base = f"{cand.weight}_Q{node_bits}G{node_block}"
                if cand.op_type == "MatMul":
                    packed, scales, zeros = matmul_nbits_tensors(qw, scale_dtype)
                else:
                    packed, scales, zeros = gather_tensors(qw, scale_dtype)
                names = [base, f"{base}_scales"]
                new_tensors += [writer.add(base, packed), writer.add(f"{base}_scales", scales)]
                if zeros is not None:
                    names.append(f"{base}_zero_points")
                    new_tensors.append(writer.add(f"{base}_zero_points", zeros))
                done[key] = names
            _replace_node(cand, done[key], node_bits, node_block, accuracy_level)
        used = {name for node in graph.node for name in node.input}
        used |= _subgraph_inputs(graph)
        kept = []
        for tensor in graph.initializer:
            if tensor.name in used:
                kept.append(writer.copy(tensor, reader))
        del graph.initializer[:]
        graph.initializer.extend(kept + new_tensors)
        dropped = {c.weight for c in candidates} - used
        keep_inputs = [i for i in graph.input if i.name not in dropped]
        del graph.input[:]
        graph.input.extend(keep_inputs)
    finally:
        writer.close()
    if not any(o.domain == MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.add(domain=MS_DOMAIN, version=1)
    onnx.save_model(proto, str(out_file))
    if progress:
        progress(total, total, "saved")
    return out_file


def _subgraph_inputs(graph: Any) -> set[str]:
    """Names read by nodes of subgraphs (If/Loop/Scan bodies), which may use outer initializers."""
    from onnx import AttributeProto

    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                names |= {n for inner in sub.node for n in inner.input}
                names |= _subgraph_inputs(sub)
    return names


def _replace_node(cand: Candidate, names: list[str], bits: int, block_size: int,
                  accuracy_level: int | None) -> None:
    from onnx import helper

    node = cand.node
    n, k = cand.shape
    if cand.op_type == "MatMul":
        attrs_: dict[str, Any] = {"K": k, "N": n, "bits": bits, "block_size": block_size}
        if accuracy_level:
            attrs_["accuracy_level"] = accuracy_level
        new = helper.make_node("MatMulNBits", [node.input[0], *names], list(node.output),
                               name=(node.name + f"_Q{bits}") if node.name else "",
                               domain=MS_DOMAIN, **attrs_)
    else:
        new = helper.make_node("GatherBlockQuantized", [names[0], node.input[1], *names[1:]],
                               list(node.output), name=(node.name + f"_Q{bits}") if node.name else "",
                               domain=MS_DOMAIN, gather_axis=0, quantize_axis=1,
                               block_size=block_size, bits=bits)
    node.CopyFrom(new)
