"""GPTQ on an existing ONNX model's MatMul weights.

The Hessian of a MatMul weight is ``X^T X`` of the activations that reach the MatMul.
ONNX Runtime computes them: the activation tensors are added as graph outputs and the
model runs on the calibration windows (batch 1, empty past for models with a KV cache).
Weights that read the same activation (q/k/v, gate/up) share one Hessian.

Memory is bounded by ``hessian_memory_mb``: the Hessians are collected for as many
activations (in graph order) as fit in it, then factored and used, and the next group
is collected by another pass over the calibration data. Unlike the torch path, which
goes layer by layer through the already quantized layers, all Hessians here come from
the float model (as onnxruntime's and Intel Neural Compressor's ONNX GPTQ do).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from olivine import UsageError

log = logging.getLogger("olivine.pass.OnnxGptqQuantization")

ProgressFn = Callable[[float, "float | None", str], None]


def past_sizes(folder: Path) -> dict[int, int]:
    """Axis sizes of the past inputs that a genai_config.json beside the model gives
    (axis 1: KV heads, axis 3: head size); the graph may leave them symbolic."""
    import json

    config = folder / "genai_config.json"
    if not config.is_file():
        return {}
    decoder = json.loads(config.read_text(encoding="utf-8")).get("model", {}).get("decoder", {})
    sizes = {1: decoder.get("num_key_value_heads"), 3: decoder.get("head_size")}
    return {axis: int(v) for axis, v in sizes.items() if isinstance(v, int)}


def calibration_feeds(session: Any, window: np.ndarray,
                      past_axes: dict[int, int] | None = None) -> dict[str, np.ndarray]:
    """One window (1-D token ids) as the model's inputs: ids, mask, positions, empty past.

    A past input's batch axis is 1 and its sequence axis (2) is 0; other symbolic axes
    come from ``past_axes``.
    """
    feeds: dict[str, np.ndarray] = {}
    seq = int(window.shape[0])
    for arg in session.get_inputs():
        int_type = np.int32 if arg.type == "tensor(int32)" else np.int64
        name = arg.name
        if name == "input_ids":
            feeds[name] = window[None, :].astype(int_type)
        elif name == "attention_mask":
            feeds[name] = np.ones((1, seq), int_type)
        elif name == "position_ids":
            feeds[name] = np.arange(seq, dtype=int_type)[None, :]
        elif name == "token_type_ids":
            feeds[name] = np.zeros((1, seq), int_type)
        elif name.startswith("past"):
            shape = []
            for axis, dim in enumerate(arg.shape):
                if isinstance(dim, int) and dim > 0:
                    shape.append(dim)
                elif axis in (0, 2):
                    shape.append(1 if axis == 0 else 0)
                elif past_axes and axis in past_axes:
                    shape.append(past_axes[axis])
                else:
                    raise UsageError(f"OnnxGptqQuantization: the size of axis {axis} ({dim!r}) of "
                                     f"the model input {name!r} is not known: the graph leaves it "
                                     "open and there is no genai_config.json beside the model")
            dtype = np.float16 if "float16" in arg.type else np.float32
            feeds[name] = np.zeros(shape, dtype)
        else:
            raise UsageError(f"OnnxGptqQuantization: the model input {name!r} is not one a text model "
                             "is fed with (input_ids, attention_mask, position_ids, token_type_ids, "
                             "past_*); GPTQ on ONNX supports language models")
    return feeds


def collect_hessians(model_file: Path, graph: Any, activations: dict[str, int], windows: np.ndarray,
                     threads: int | None = None) -> dict[str, Any]:
    """``X^T X / tokens`` (torch float32, ``[K, K]``) of each named activation on ``windows``.

    ``graph`` is the model at ``model_file`` loaded without its weights (it is copied,
    not changed); ``activations`` maps tensor names to their ONNX element type (the
    graph outputs added to read them).
    """
    import onnx
    import onnxruntime as ort
    import torch

    proto = onnx.ModelProto()
    proto.CopyFrom(graph)
    existing = {o.name for o in proto.graph.output}
    for name, elem_type in activations.items():
        if name not in existing:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    # the graph goes in as bytes; its external data is read from the model's own folder
    options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                     str(model_file.parent.resolve()))
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    del proto
    names = list(activations)
    past_axes = past_sizes(model_file.parent)
    sums: dict[str, Any] = {}
    tokens = 0
    for window in windows:
        outputs = session.run(names, calibration_feeds(session, window, past_axes))
        for name, value in zip(names, outputs, strict=True):
            x = torch.from_numpy(np.ascontiguousarray(value)).float().reshape(-1, value.shape[-1])
            if name in sums:
                sums[name].addmm_(x.t(), x)
            else:
                sums[name] = x.t() @ x
        tokens += int(window.shape[0])
    return {name: h.div_(max(tokens, 1)) for name, h in sums.items()}


class OnnxGptq:
    """The per-weight quantizer that :func:`~olivine_weightquant.onnx_nbits.quantize_onnx` calls.

    :meth:`plan` learns which activation each weight reads; :meth:`__call__` collects the
    Hessians of the next group of activations when it reaches one it has not seen.
    """

    def __init__(self, model_file: Path, windows: np.ndarray, *, bits: int, block_size: int,
                 symmetric: bool, damp_percent: float, act_order: bool, memory_mb: int,
                 progress: ProgressFn | None = None) -> None:
        self.model_file = model_file
        self.windows = windows
        self.bits, self.block_size, self.symmetric = bits, block_size, symmetric
        self.damp_percent, self.act_order = damp_percent, act_order
        self.budget = memory_mb << 20
        self.progress = progress
        self.activation_of: dict[str, str] = {}  # weight -> activation
        self.order: list[str] = []  # activations in graph order
        self.sizes: dict[str, int] = {}  # activation -> K
        self.types: dict[str, int] = {}  # activation -> ONNX element type
        self.readers: dict[str, int] = {}  # activation -> weights still to quantize
        self.factors: dict[str, Any] = {}
        self.graph: Any = None  # the model without weights, read once by plan()
        self.losses: dict[str, float] = {}
        self.passes = 0

    def plan(self, candidates: Sequence[Any]) -> None:
        """Record each candidate MatMul's activation input, its width and its element type."""
        import onnx

        self.graph = onnx.load(str(self.model_file), load_external_data=False)
        for cand in candidates:
            if cand.op_type != "MatMul":
                continue
            activation = cand.node.input[0]
            if cand.weight not in self.activation_of:
                self.activation_of[cand.weight] = activation
                self.readers[activation] = self.readers.get(activation, 0) + 1
            if activation not in self.sizes:
                self.order.append(activation)
                self.sizes[activation] = int(cand.shape[1])
                self.types[activation] = cand.data_type

    def _collect_next(self, first: str) -> None:
        start = self.order.index(first)
        group: dict[str, int] = {}
        used = 0
        for activation in self.order[start:]:
            if activation in self.factors:
                continue
            size = 2 * 4 * self.sizes[activation] ** 2  # the Hessian and its factor
            if group and used + size > self.budget:
                break
            group[activation] = self.types[activation]
            used += size
        self.passes += 1
        if self.progress:
            self.progress(0, None, f"calibration pass {self.passes}: {len(group)} activations, "
                                   f"{len(self.windows)} windows")
        from olivine_weightquant.core import factor_hessian

        hessians = collect_hessians(self.model_file, self.graph, group, self.windows)
        for activation in list(hessians):
            self.factors[activation] = factor_hessian(hessians.pop(activation), self.damp_percent,
                                                      self.act_order)

    def __call__(self, w: Any, name: str) -> Any:
        """GPTQ of ``W[N, K]`` (the weight ``name``) with its activation's Hessian."""
        from olivine_weightquant.core import gptq

        activation = self.activation_of[name]
        if activation not in self.factors:
            self._collect_next(activation)
        qw, loss = gptq(w.float(), self.factors[activation], self.bits, self.block_size, self.symmetric)
        self.losses[name] = float(loss)
        self.readers[activation] -= 1
        if self.readers[activation] == 0:
            del self.factors[activation]
        return qw
