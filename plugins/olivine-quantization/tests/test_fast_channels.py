"""The vectorized per-channel weight quantization writes the bytes onnxruntime's loop writes.

A graph with MatMul, Gemm and Conv weights (channels of mixed sign, all positive, all
negative, all zero and nearly zero) is quantized by onnxruntime twice, with and without
:func:`olivine_quantization.fast_channels.vectorized_channels`, for every weight type,
range and symmetry setting; the two model files must be identical and the vectorized path
must have taken the weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from olivine_quantization import fast_channels
from olivine_quantization.fast_channels import vectorized_channels


def _weights(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Random float32 weights with special channels along ``axis``."""
    w = rng.normal(0.0, 0.2, size=shape).astype(np.float32)
    moved = np.moveaxis(w, axis, 0)
    moved[0] = np.abs(moved[0]) + 0.01            # all positive
    moved[1] = -np.abs(moved[1]) - 0.01           # all negative
    moved[2] = 0.0                                # all zero: scale 1, zero point 0
    moved[3] = 1e-39                              # a range below float32's tiny
    moved[4] *= 40.0                              # a wide one
    return w


def _model(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    w_matmul = _weights(rng, (48, 40), axis=1)
    w_gemm = _weights(rng, (24, 40), axis=0)      # transB: output channels on axis 0
    w_conv = _weights(rng, (8, 3, 3, 3), axis=0)
    nodes = [
        helper.make_node("MatMul", ["x", "w_matmul"], ["h"], name="matmul"),
        helper.make_node("Gemm", ["h", "w_gemm"], ["y"], name="gemm", transB=1),
        helper.make_node("Conv", ["img", "w_conv"], ["z"], name="conv", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "channels",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 48]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 24]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 6, 6])],
        [numpy_helper.from_array(w_matmul, "w_matmul"), numpy_helper.from_array(w_gemm, "w_gemm"),
         numpy_helper.from_array(w_conv, "w_conv")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
@pytest.mark.parametrize("reduce_range", [False, True])
@pytest.mark.parametrize("extra", [{}, {"WeightSymmetric": True}, {"WeightSymmetric": False},
                                   {"MinimumRealRange": 0.5}])
def test_vectorized_channels_write_onnxruntimes_bytes(tmp_path: Path, weight_type: str,
                                                      reduce_range: bool,
                                                      extra: dict[str, object]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = _model(tmp_path / "model.onnx", seed=len(str(extra)) + reduce_range)
    outputs = {}
    for fast in (False, True):
        out = tmp_path / f"q_{fast}.onnx"
        before = dict(fast_channels.stats)
        kwargs = {"per_channel": True, "reduce_range": reduce_range,
                  "weight_type": QuantType[weight_type], "extra_options": dict(extra),
                  "op_types_to_quantize": ["MatMul", "Gemm", "Conv"]}
        if fast:
            with vectorized_channels():
                quantize_dynamic(str(source), str(out), **kwargs)
            if fast_channels.verified():
                assert fast_channels.stats["vectorized"] - before["vectorized"] >= 2
            else:  # another onnxruntime release: its own loop, until this file is checked
                assert fast_channels.stats["vectorized"] == before["vectorized"]
        else:
            quantize_dynamic(str(source), str(out), **kwargs)
        outputs[fast] = out.read_bytes()
    assert outputs[True] == outputs[False]


def test_the_patch_is_undone_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxruntime.quantization.base_quantizer import BaseQuantizer

    if not fast_channels.verified():
        pytest.skip("the installed onnxruntime is not a release the vectorized path was checked "
                    "against; it is never patched there")
    original = BaseQuantizer.quantize_weight_per_channel_impl
    with vectorized_channels():
        assert BaseQuantizer.quantize_weight_per_channel_impl is not original
        with vectorized_channels():  # nested: one layer only
            assert BaseQuantizer.quantize_weight_per_channel_impl.__wrapped__ is original
    assert BaseQuantizer.quantize_weight_per_channel_impl is original
    monkeypatch.setenv("OLIVINE_FAST_CHANNELS", "0")
    with vectorized_channels():
        assert BaseQuantizer.quantize_weight_per_channel_impl is original
