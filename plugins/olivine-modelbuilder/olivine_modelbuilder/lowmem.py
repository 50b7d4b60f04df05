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
(tested byte for byte against the builder's own path; with ``rtn`` in another node
order, as that quantizer re-sorts the graph); the peak is one fp32 weight on top of the
lazy graph.

Two of the builder's quantizers are streamed. Its default method (MLAS, QOperator
format, ``DefaultWeightOnlyQuantizer``) writes ``<weight>_Q{bits}`` and ``<weight>_scales``;
its ``rtn`` method (``rtn_last`` is ``rtn`` with an 8-bit LM head; onnxruntime's port of
Intel Neural Compressor's round-to-nearest, ``neural_compressor.weight_only.quant_tensor``)
writes ``<weight>_Q{bits}G{block}``, ``<weight>_scale`` and, asymmetric, ``<weight>_zp``.
Per-node bit widths (the builder's ``int4_customized_weight_config``: ``rtn_last``'s 8-bit
LM head, ``matmul_mixed_precision``) are honoured for both. With tied embeddings the
builder's ``GatherBlockQuantized`` already reads the LM head's quantized tensors by name,
so an 8-bit LM head makes the shared table 8-bit too.

Not handled, so the builder's own ``to_nbits`` runs (before anything changed): k_quant,
exact per-node overrides, QDQ, a float embedding table to quantize (tied + asymmetric
default int4), CUDA weight prepacking, subgraphs, weights that are not 2-D initializers
used once, ``rtn`` on weights other than float32/float16 (the builder's ``rtn`` fails on
them), and the default method with per-node bits on a tied quantized table (the builder
names that table as ``rtn`` would).

The quantized tensors stay in the graph until the builder saves it: about 4 GB for a 7B
model. Past :data:`SPILL_AFTER_BYTES` they wait in a :class:`Spill` file in the output
folder instead, so the memory held is the budget, not the model's quantized size.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .spill import Spill

log = logging.getLogger(__name__)

_SUBGRAPH_ATTRS = ("GRAPH", "GRAPHS")

#: Output columns quantized at once: each column's blocks are independent, so a large
#: weight (the LM head: 896 x 151936) is copied to a contiguous float32 chunk at a time.
COLUMNS_PER_CHUNK = 8192
#: ... and at most this many weight elements per chunk (a tall weight, such as a 7B model's
#: 18944-row down projection, gets fewer columns at a time). ``rtn`` works on float64 copies;
#: at about 2**20 elements (8 MB) a chunk's passes stay near the cache and cost 6-8 ns an
#: element on an Intel Xeon, against 11-19 ns at 8 * 2**20 (benchmarks/rtn_chunk_bench.py).
ELEMENTS_PER_CHUNK = 2**20
#: Weight elements quantized between two calls of :func:`release_checkpoint_pages`.
RELEASE_EVERY = 128 * 2**20


def _node_bits(builder: Any, name: str) -> int:
    """The bit width the builder gives the MatMul ``name`` (per-node placement first)."""
    custom = getattr(builder, "int4_customized_weight_config", None) or {}
    return int(custom.get(name, {}).get("bits", builder.quant_attrs["bits"]))


def _eligible_nodes(builder: Any, graph: Any, method: str) -> list[Any] | None:
    """The MatMul nodes to quantize, or ``None`` when the graph needs the builder's path."""
    import onnx_ir as ir

    attrs = builder.quant_attrs
    exclude = set(attrs["nodes_to_exclude"])
    nodes = []
    for node in graph:
        if any(attr.type.name in _SUBGRAPH_ATTRS for attr in node.attributes.values()):
            return None
        if node.domain not in ("", "ai.onnx") or node.name in exclude:
            continue
        if node.op_type == "Gather" and method == "default" \
                and "Gather" in attrs["op_types_to_quantize"]:
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
        if method == "rtn" and weight.const_value.dtype not in (ir.DataType.FLOAT,
                                                                  ir.DataType.FLOAT16):
            return None
        nodes.append(node)
    return nodes


def _method(builder: Any) -> str | None:
    """``"default"`` or ``"rtn"`` when this module can stream the builder's settings."""
    attrs = builder.quant_attrs
    method = getattr(builder, "quantization_algo", "default")
    custom = getattr(builder, "int4_customized_weight_config", None) or {}
    if (method not in ("default", "rtn")
            or getattr(builder, "exact_quant_override_names", None)
            or getattr(builder, "exact_quant_overrides", None)
            or attrs["use_qdq"]
            or not set(attrs["op_types_to_quantize"]) <= {"MatMul", "Gather"}
            or attrs["bits"] not in (4, 8)
            or any(set(entry) != {"bits"} or entry["bits"] not in (4, 8)
                   for entry in custom.values())
            or (method == "default" and custom
                and getattr(builder, "tied_quantized_embeddings", False))
            or (getattr(builder, "ep", "") == "cuda"
                and getattr(builder, "matmul_attrs", {}).get("weights_prepacked", 0) > 0)):
        return None
    return str(method)


def _column_step(rows: int) -> int:
    return max(1, min(COLUMNS_PER_CHUNK, ELEMENTS_PER_CHUNK // max(rows, 1)))


def _source(tensor: Any) -> tuple[Any, Any] | None:
    """The builder's torch source of a lazy cast ``(tensor, torch dtype)``, when it has one.

    ``make_initializer(weight.T, name, to=io_dtype)`` keeps the checkpoint's tensor (bf16,
    memory-mapped) and casts it when the graph is saved; reading it a column chunk at a time
    casts the same values without a whole float32 copy (2.2 GB for a 7B model's LM head).
    """
    import onnx_ir as ir

    func = getattr(tensor, "_func", None) if isinstance(tensor, ir.LazyTensor) else None
    names = getattr(getattr(func, "__code__", None), "co_freevars", ())
    cells = dict(zip(names, getattr(func, "__closure__", None) or (), strict=False))
    try:
        import torch

        source, dtype = cells["tensor"].cell_contents, cells["torch_dtype"].cell_contents
    except (KeyError, ValueError, ImportError):
        return None
    if not isinstance(source, torch.Tensor) or dtype not in (torch.float32, torch.float16) \
            or tuple(source.shape) != tuple(tensor.shape) or source.dim() == 0:
        return None
    return source, dtype


#: Lazily cast float initializers at least this large are written a block of rows at a time
#: (the untied embedding table: 2.2 GB of float32 for a 7B model).
SAVE_IN_ROWS_BYTES = 64 * 2**20


def _rows_writer(tensor: Any, source: Any, dtype: Any) -> Any:
    """``tensor`` as a lazy tensor whose ``tofile`` (what ``ir.save`` calls) casts and writes
    ``source`` a block of rows at a time: the same bytes as the whole cast, in C order."""
    import onnx_ir as ir

    class RowsWriter(ir.LazyTensor):
        __slots__ = ()

        def tofile(self, file: Any) -> None:
            rows = int(source.shape[0])
            step = max(1, ELEMENTS_PER_CHUNK // max(1, source.numel() // max(rows, 1)))
            for start in range(0, rows, step):
                file.write(source[start:start + step].to(dtype).numpy().tobytes())
                if (start // step) % 8 == 7:
                    release_checkpoint_pages()
            release_checkpoint_pages()
            trim_heap()

    return RowsWriter(tensor._func, dtype=tensor.dtype, shape=tensor.shape, name=tensor.name,
                      doc_string=tensor.doc_string, metadata_props=dict(tensor.metadata_props))


def _write_large_initializers_in_rows(graph: Any) -> int:
    """Swap the large lazily cast initializers for :func:`_rows_writer`; return how many."""
    swapped = 0
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is None or tensor.nbytes < SAVE_IN_ROWS_BYTES:
            continue
        found = _source(tensor)
        if found is not None:
            value.const_value = _rows_writer(tensor, *found)
            swapped += 1
    return swapped


def _chunk_reader(tensor: Any, pieces: int = 1) -> tuple[list[int], Any]:
    """Column starts of ``W[K, N]`` and a function reading the chunk at a start (numpy).

    Chunks are small enough to copy and quantize (see :data:`COLUMNS_PER_CHUNK` and
    :data:`ELEMENTS_PER_CHUNK`), and at least ``pieces`` where the weight has the columns
    (so that threads share a weight; each column's blocks are independent). A chunk of the
    builder's lazy source (``weight.T``, a transposed view of the checkpoint's tensor) is
    copied into a contiguous float32 buffer by torch's blocked, multithreaded copy: the same
    values as ``.to(dtype)``, about three times faster than numpy transposing the strided
    result.
    """
    rows, cols = (int(d) for d in tensor.shape)
    step = max(1, min(_column_step(rows), -(-cols // pieces)))
    starts = list(range(0, cols, step))
    found = _source(tensor)
    if found is not None:
        import torch

        source, dtype = found

        def read_source(start: int) -> Any:
            part = source[:, start:start + step].detach()
            out = torch.empty(tuple(part.shape), dtype=dtype)
            out.copy_(part)
            return out.numpy()

        return starts, read_source
    array = tensor.numpy()
    return starts, lambda start: array[:, start:start + step]


def _weight_chunks(tensor: Any) -> Iterator[Any]:
    """Column slices of the weight ``W[K, N]`` (numpy), in order (see :func:`_chunk_reader`)."""
    starts, read = _chunk_reader(tensor)
    for start in starts:
        yield read(start)


def _workers() -> int:
    """Threads quantizing ``rtn`` chunks at once: ``OLIVINE_QUANT_THREADS``, else the CPUs
    this process may use (at most 4: each in-flight chunk holds about 150 MB)."""
    import os

    configured = os.environ.get("OLIVINE_QUANT_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def _ordered_map(func: Any, items: list[Any], workers: int) -> Iterator[Any]:
    """``map(func, items)`` on ``workers`` threads, in order, with at most ``workers`` results
    pending (numpy's and torch's kernels release the GIL, so chunks run side by side; the
    bound keeps memory at a few chunks whatever the weight's size)."""
    if workers <= 1 or len(items) <= 1:
        yield from map(func, items)
        return
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="olivine-quant") as pool:
        pending: deque[Future[Any]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(func, item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _quantize_by_columns(quantizer: Any, tensor: Any, bfloat16: bool) -> tuple[Any, Any, Any]:
    """``qbits_block_quant`` over column chunks of ``W[K, N]``, concatenated (same result)."""
    import numpy as np

    parts = []
    for chunk in _weight_chunks(tensor):
        # the kernel reads raw memory: a contiguous float32 copy of this chunk only
        chunk = np.ascontiguousarray(chunk, dtype=np.float32 if bfloat16 else chunk.dtype)
        parts.append(quantizer.qbits_block_quant(chunk))
        del chunk
    if len(parts) == 1:
        return parts[0]
    packed, scales, zeros = (np.concatenate([part[i] for part in parts], axis=0) for i in range(3))
    return packed, scales, zeros


def _rtn_chunk(chunk: Any, bits: int, block: int, symmetric: bool) -> tuple[Any, Any, Any]:
    """Round-to-nearest of ``W[K, n]`` in blocks of ``block`` rows, as onnxruntime's ``rtn``.

    The same arithmetic as ``neural_compressor.weight_only.quant_tensor`` with its
    ``"uint"`` type (float64 scales, ties to even), on the untransposed chunk: returns the
    levels ``(n, blocks, block)`` as uint8, float64 scales ``(n, blocks)`` and uint8 zero
    points ``(n * blocks,)`` (``None`` when symmetric).
    """
    import numpy as np

    rows, cols = chunk.shape
    blocks = -(-rows // block)
    if blocks * block != rows:  # the quantizer pads the rows with zeros to whole blocks
        chunk = np.pad(chunk, ((0, blocks * block - rows), (0, 0)))
    view = chunk.reshape(blocks, block, cols)
    maxq = (1 << bits) - 1
    rmin = view.min(axis=1, keepdims=True)
    rmax = view.max(axis=1, keepdims=True)
    scale = np.ones(rmin.shape)
    if symmetric:
        span = np.maximum(np.abs(rmin), np.abs(rmax))
        mask = span > 0
        scale[mask] = (span[mask] * 2.0).astype(np.float64) / maxq
        zero: Any = 1 << (bits - 1)
        zeros = None
    else:
        mask = rmin != rmax
        scale[mask] = (rmax - rmin)[mask].astype(np.float64) / maxq
        zero = np.clip(np.round(-rmin.astype(np.float64) / scale), 0, maxq).astype(np.uint8)
        zeros = np.ascontiguousarray(zero.reshape(blocks, cols).T).reshape(-1)
    levels = view.astype(np.float64)
    del view, chunk
    levels /= scale
    levels += zero
    np.round(levels, out=levels)
    np.clip(levels, 0, maxq, out=levels)
    q = np.ascontiguousarray(levels.astype(np.uint8).transpose(2, 0, 1))
    return q, scale.reshape(blocks, cols).T, zeros


def _rtn_by_columns(tensor: Any, bits: int, block: int, symmetric: bool) -> list[tuple[str, Any]]:
    """The ``rtn`` quantizer's tensors for ``W[K, N]``: (name suffix, array) pairs."""
    import numpy as np

    packed, scales, zeros = [], [], []
    dtype = tensor.dtype.numpy()
    workers = _workers()
    starts, read = _chunk_reader(tensor, pieces=2 * workers if workers > 1 else 1)

    def one(start: int) -> tuple[Any, Any, Any]:
        q, scale, zero = _rtn_chunk(read(start), bits, block, symmetric)
        return (q[..., ::2] | (q[..., 1::2] << 4) if bits == 4 else q), scale.astype(dtype), zero

    for q, scale, zero in _ordered_map(one, starts, workers):
        packed.append(q)
        scales.append(scale)
        if zero is not None:
            zeros.append(zero)
        del q
    cols = int(tensor.shape[1])
    out = [(f"_Q{bits}G{block}", np.concatenate(packed) if len(packed) > 1 else packed[0]),
           ("_scale", np.concatenate(scales) if len(scales) > 1 else scales[0])]
    if zeros:
        zero = np.concatenate(zeros)
        if bits == 4:  # two per byte, low nibble first; an odd count ends with the default 8
            pairs = np.full((zero.shape[0] + 1) // 2, 0x88, dtype=np.uint8)
            pairs[:zero.shape[0] // 2 + zero.shape[0] % 2] = zero[0::2] | 0x80
            pairs[:zero.shape[0] // 2] = (pairs[:zero.shape[0] // 2] & 0x0F) | (zero[1::2] << 4)
            zero = pairs
        out.append(("_zp", zero.reshape(cols, -1)))
    return out


def release_checkpoint_pages() -> int:
    """Unmap the checkpoint's resident pages; return the bytes advised away.

    transformers maps the ``.safetensors`` checkpoint; every weight read leaves its pages
    resident, counted in the process's RSS (15 GB for a 7B bf16 model by the last layer).
    A mapping none of whose pages was written (no anonymous copy-on-write pages in
    ``/proc/self/smaps``) holds only file pages, so ``madvise(MADV_DONTNEED)`` just unmaps
    them: a later read faults them back in from the page cache or the file. Linux only.
    """
    import sys

    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    try:
        smaps = Path("/proc/self/smaps").read_text().splitlines()
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return 0
    regions: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for line in smaps:
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            current = None
            if len(head) == 6 and head[5].endswith(".safetensors"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                current = (start, end)
        elif current is not None and line.startswith("Anonymous:"):
            if int(line.split()[1]) == 0:  # kB of written (copied) pages in this mapping
                regions.append(current)
            current = None
    advised = 0
    for start, end in regions:
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4) == 0:
            advised += end - start  # 4: MADV_DONTNEED
    return advised


def trim_heap() -> None:
    """glibc's ``malloc_trim(0)``: return freed heap (a chunk's temporaries) to the system."""
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(ctypes.c_size_t(0))


def streaming_to_nbits(builder: Any, spill: Spill | None = None) -> Any | None:
    """Quantize ``builder.model``'s MatMul weights in place, one at a time; return the model.

    Returns ``None`` without touching the graph when the builder's settings need its own
    ``to_nbits`` (see the module docstring). With ``spill``, quantized tensors past its
    in-memory budget wait in its file until the model is saved.
    """
    method = _method(builder)
    if method is None:
        return None
    import onnx_ir as ir

    model = builder.model
    graph = model.graph
    nodes = _eligible_nodes(builder, graph, method)
    if nodes is None:
        return None
    attrs = builder.quant_attrs

    def initializer(name: str, array: Any) -> Any:
        tensor = spill.hold(array) if spill is not None else ir.Tensor(array)
        tensor.name = name
        value = ir.Value(name=name, shape=ir.Shape(array.shape),
                         type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         const_value=tensor)
        graph.register_initializer(value)
        return value

    if method == "default" or "com.microsoft" not in model.opset_imports:
        model.opset_imports["com.microsoft"] = 1
    if method == "default" and "Gather" in attrs["op_types_to_quantize"]:
        # onnxruntime's quantizer raises these for int4 Gather support even when no Gather
        # gets quantized; do the same so that the two paths give the same model
        if model.opset_imports.get("", 21) < 21:
            model.opset_imports[""] = 21
        if model.ir_version is not None and model.ir_version < 10:
            model.ir_version = 10
    quantize = _default_quantizer(attrs) if method == "default" else None
    block_size, accuracy_level = int(attrs["matmul_block_size"]), attrs["accuracy_level"]
    since_release = 0
    for node in nodes:
        weight = node.inputs[1]
        bits = _node_bits(builder, node.name)
        rows, cols = (int(d) for d in weight.const_value.shape)
        unnamed = None if quantize is not None else f"_Q{bits}"  # as each quantizer names it
        if quantize is not None:
            tensors = quantize(weight.const_value, bits)
        else:
            tensors = _rtn_by_columns(weight.const_value, bits, block_size, attrs["is_symmetric"])
        inputs = [node.inputs[0], *(initializer(weight.name + suffix, value)
                                    for suffix, value in tensors)]
        del tensors
        # the same attributes, in the same (sorted) order, as onnx.helper.make_node writes
        node_attrs = [ir.AttrInt64("K", rows), ir.AttrInt64("N", cols)]
        if accuracy_level:
            node_attrs.append(ir.AttrInt64("accuracy_level", int(accuracy_level)))
        node_attrs += [ir.AttrInt64("bits", bits), ir.AttrInt64("block_size", block_size)]
        replacement = ir.Node("com.microsoft", "MatMulNBits", inputs, node_attrs, num_outputs=1,
                              name=f"{node.name}_Q{bits}" if node.name else unnamed)
        ir.convenience.replace_nodes_and_values(graph, node, [node], [replacement],
                                                list(node.outputs), list(replacement.outputs))
        if not weight.uses() and weight not in graph.outputs:
            graph.initializers.pop(weight.name)
        weight.const_value = None  # frees the fp32 copy (lazy tensors rebuild it on demand)
        trim_heap()
        since_release += rows * cols
        if since_release >= RELEASE_EVERY:  # reading smaps takes about 50 ms
            release_checkpoint_pages()
            since_release = 0
    if method == "default":
        # onnxruntime's quantizer ends with clean_initializers: drop whatever nothing reads
        # (its rtn path does not)
        used = {value.name for value in graph.outputs}
        for name, value in list(graph.initializers.items()):
            if not value.uses() and name not in used and value not in graph.inputs:
                graph.initializers.pop(name)
    release_checkpoint_pages()
    swapped = _write_large_initializers_in_rows(graph)
    log.debug("quantized %d MatMul weights (%s) one at a time; %d float initializers are "
              "written in blocks of rows", len(nodes), method, swapped)
    return model


def _default_quantizer(attrs: dict[str, Any]) -> Any:
    """``(array, bits) -> [(suffix, tensor)]`` with onnxruntime's MLAS block quantizer."""
    import ml_dtypes
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )
    from onnxruntime.quantization.quant_utils import QuantFormat

    quantizers: dict[int, Any] = {}

    def quantize(tensor: Any, bits: int) -> list[tuple[str, Any]]:
        if bits not in quantizers:
            quantizers[bits] = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
                block_size=int(attrs["matmul_block_size"]), is_symmetric=attrs["is_symmetric"],
                accuracy_level=attrs["accuracy_level"], quant_format=QuantFormat.QOperator,
                op_types_to_quantize=("MatMul",), bits=bits))
        bfloat16 = tensor.dtype.numpy() == ml_dtypes.bfloat16
        packed, scales, zero_points = _quantize_by_columns(quantizers[bits], tensor, bfloat16)
        if bfloat16:
            scales = scales.astype(ml_dtypes.bfloat16)
        out = [(f"_Q{bits}", packed), ("_scales", scales)]
        if not attrs["is_symmetric"]:
            out.append(("_zero_points", zero_points))
        return out

    return quantize


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
def low_memory_quantization(spill_dir: Path | None = None) -> Iterator[None]:
    """While active, the builder's ``to_nbits`` tries :func:`streaming_to_nbits` first.

    ``spill_dir`` (the build's output folder) holds a :class:`Spill` file for the quantized
    tensors of large models while the builder runs; it is removed on exit.
    """
    spill = Spill(spill_dir) if spill_dir is not None else None
    patched = []
    for cls in _builder_model_classes():
        original = cls.__dict__["to_nbits"]

        def to_nbits(self: Any, _original: Any = original) -> Any:
            model = streaming_to_nbits(self, spill)
            if model is None:
                log.info("the model builder's settings need its own quantizer (whole graph in "
                         "memory)")
                return _original(self)
            return model

        cls.to_nbits = to_nbits
        patched.append((cls, original))
    try:
        if not patched:
            raise RuntimeError("onnxruntime-genai's model builder has no Model class to patch")
        yield
    finally:
        for cls, original in patched:
            cls.to_nbits = original
        if spill is not None:
            spill.close()
