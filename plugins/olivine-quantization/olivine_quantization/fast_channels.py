"""Per-channel weight quantization in one vectorized pass, bit for bit onnxruntime's.

onnxruntime's ``BaseQuantizer.quantize_weight_per_channel_impl`` (used by
``quantize_dynamic`` and the QOperator format of ``quantize_static`` with
``per_channel``) computes each output channel's range, scale, zero point and integer
values in a Python loop: for MiniLM-L6 that is 21,125 iterations and about 3.5 s of a
5 s quantization. :func:`vectorized_channels` does the same arithmetic on every channel
at once (the same NumPy operations in the same dtypes: float32 ranges, float64 scale,
half-to-even rounding, the same clipping), so the model it writes is byte-identical
(``tests/test_fast_channels.py`` compares whole models both ways).

It covers the common case only: float32 weights, 8- or 16-bit integer types, no
per-tensor overrides, and an onnxruntime release it was checked against
(:data:`VERIFIED_ONNXRUNTIME`). Anything else (float16 weights, int4, float8, per-channel
overrides, an empty channel, a NaN) goes to onnxruntime's own loop, unchanged. Set
``OLIVINE_FAST_CHANNELS=0`` to always use onnxruntime's loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

#: onnxruntime releases whose per-channel loop this file was checked against (major.minor);
#: with any other release onnxruntime's own loop runs, until the tests here pass against it
VERIFIED_ONNXRUNTIME = ("1.32",)

#: how many weights took each path since the process started (the tests read it)
stats = {"vectorized": 0, "onnxruntime": 0}


def _fast_impl(original: Any) -> Any:
    """``quantize_weight_per_channel_impl`` with the vectorized path in front of ``original``."""

    def impl(self: Any, weight_name: str, weight_qType: int, channel_axis: int,
             reduce_range: bool = True, keep_float_weight: bool = False) -> Any:
        done = _vectorized(self, weight_name, weight_qType, channel_axis, reduce_range,
                           keep_float_weight)
        stats["vectorized" if done is not None else "onnxruntime"] += 1
        if done is None:
            return original(self, weight_name, weight_qType, channel_axis, reduce_range,
                            keep_float_weight)
        return done

    impl.__wrapped__ = original  # type: ignore[attr-defined]
    return impl


def _vectorized(quantizer: Any, weight_name: str, qtype: int, channel_axis: int,
                reduce_range: bool, keep_float_weight: bool) -> tuple[str, str, str] | None:
    """Quantize one weight per channel; ``None`` when the case is not covered."""
    import onnx
    from onnxruntime.quantization.quant_utils import (
        TENSOR_NAME_QUANT_SUFFIX,
        find_by_name,
        get_qmin_qmax_for_qType,
        normalize_axis,
        tensor_proto_to_array,
    )

    covered = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
               onnx.TensorProto.UINT16)
    if qtype not in covered:
        return None
    initializer = find_by_name(weight_name, quantizer.model.initializer())
    if initializer is None or initializer.data_type != onnx.TensorProto.FLOAT:
        return None
    weights = tensor_proto_to_array(initializer)
    valid, axis = normalize_axis(channel_axis, len(weights.shape))
    if not valid or weights.dtype != np.float32:
        return None
    overrides = quantizer.tensor_quant_overrides.get_per_channel_overrides(
        weight_name, default_val=[{"axis": axis}])
    if overrides != [{"axis": axis}]:
        return None  # user overrides: onnxruntime's loop reads them per channel
    channels = weights.shape[axis]
    moved = np.moveaxis(weights, axis, 0)
    rows = moved.reshape(channels, -1)
    if channels == 0 or rows.shape[1] == 0:
        return None
    symmetric = quantizer.is_weight_symmetric(qtype)
    reduce_range = bool(quantizer.reduce_range and reduce_range)
    qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range, symmetric=symmetric)

    # the ranges, as compute_data_quant_params and compute_scale_zp compute them
    rmin = np.minimum(rows.min(axis=1), np.array(0, dtype=np.float32))
    rmax = np.maximum(rows.max(axis=1), np.array(0, dtype=np.float32))
    if np.isnan(rmin).any() or np.isnan(rmax).any():
        return None  # onnxruntime's assertion is the error to give
    if quantizer.min_real_range is not None:
        widened = rmin + np.asarray(quantizer.min_real_range, dtype=np.float32)
        rmax = np.where(widened > rmax, widened, rmax)  # Python's max(rmax, widened)
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, +absmax
    scale64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / (
        np.array(qmax, dtype=np.float64) - np.array(qmin, dtype=np.float64))
    if (scale64 < 0).any():
        return None
    tiny = scale64 < np.finfo(np.float32).tiny
    if symmetric:
        middle = np.array(np.round((qmin + qmax) / np.array(2.0, dtype=np.float64)), dtype=qmin.dtype)
        zero = np.full(channels, middle, dtype=qmin.dtype)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):  # tiny scales are replaced below
            zero = np.array(np.round(qmin - rmin / np.where(tiny, 1.0, scale64)), dtype=qmin.dtype)
    zero = np.where(tiny, np.array(0, dtype=qmin.dtype), zero)
    scale = np.where(tiny, np.float32(1.0), scale64.astype(np.float32))

    # the integer values, as quantize_nparray computes them (the full range of the type)
    low, high = get_qmin_qmax_for_qType(qtype, reduce_range=False, symmetric=False)
    values = np.asarray((rows / scale[:, None]).round() + zero[:, None])
    np.clip(values, low, high, out=values)
    quantized = np.moveaxis(values.astype(qmin.dtype).reshape(moved.shape), 0, axis)

    q_name = weight_name + TENSOR_NAME_QUANT_SUFFIX
    zp_name, scale_name = weight_name + "_zero_point", weight_name + "_scale"
    quantizer.model.initializer_extend([
        onnx.helper.make_tensor(scale_name, initializer.data_type, [initializer.dims[axis]],
                                scale.tolist()),
        onnx.helper.make_tensor(zp_name, qtype, [initializer.dims[axis]], zero.tolist()),
    ])
    if not keep_float_weight:
        array = np.asarray(quantized, dtype=onnx.helper.tensor_dtype_to_np_dtype(qtype))
        quantizer.model.initializer_extend(
            [onnx.numpy_helper.from_array(array.reshape(initializer.dims), q_name)])
    return q_name, zp_name, scale_name


def verified() -> bool:
    """Whether the installed onnxruntime is a release this arithmetic was checked against."""
    import onnxruntime

    return ".".join(onnxruntime.__version__.split(".")[:2]) in VERIFIED_ONNXRUNTIME


@contextlib.contextmanager
def vectorized_channels() -> Iterator[None]:
    """Within the block, onnxruntime's quantizers use the vectorized per-channel path."""
    if os.environ.get("OLIVINE_FAST_CHANNELS", "1") == "0" or not verified():
        yield
        return
    from onnxruntime.quantization.base_quantizer import BaseQuantizer

    original = BaseQuantizer.quantize_weight_per_channel_impl
    if getattr(original, "__wrapped__", None) is not None:  # already inside such a block
        yield
        return
    BaseQuantizer.quantize_weight_per_channel_impl = _fast_impl(original)
    try:
        yield
    finally:
        BaseQuantizer.quantize_weight_per_channel_impl = original
