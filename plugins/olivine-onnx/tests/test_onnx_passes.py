"""The ONNX passes of olivine-onnx: each runs through the engine and ONNX Runtime loads and runs
the result (same outputs within 1e-5 where the pass must not change them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_helpers import F, assert_same, make, op_types, run_pass, save, session

import olivine
from olivine import ConfigError
from olivine.testing import make_workflow

RNG = np.random.default_rng(2)


def _model(tmp_path: Path, opset: int = 17) -> Path:
    """x[b,4] -> Identity -> Reshape(6) -> Reshape(-1) -> Cast fp16 -> Cast fp32 -> Add (W*2 folded)."""
    nodes = [helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Mul", ["w", "two"], ["w2"]),
             helper.make_node("Reshape", ["i", "s1"], ["r1"]),
             helper.make_node("Reshape", ["r1", "s2"], ["r2"]),
             helper.make_node("Cast", ["r2"], ["c1"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["c1"], ["c2"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["c2", "w2"], ["y"])]
    inits = {"w": RNG.standard_normal(8).astype(np.float32), "two": np.array(2.0, np.float32),
             "s1": np.array([4, 2], np.int64), "s2": np.array([-1], np.int64)}
    return save(make(nodes, [helper.make_tensor_value_info("x", F, [2, 4])],
                     [helper.make_tensor_value_info("y", F, [8])], inits, opset=opset),
                tmp_path / "in" / "model.onnx")


def test_peephole_optimizer(tmp_path: Path) -> None:
    model = _model(tmp_path)
    out = run_pass(tmp_path, model, "OnnxPeepholeOptimizer", cast_chain_elimination=True,
                   fix_com_microsoft_opset=True)
    assert op_types(out) == ["Reshape", "Add"]
    assert any(o.domain == "com.microsoft" for o in onnx.load(str(out)).opset_import)
    feeds = {"x": RNG.standard_normal((2, 4)).astype(np.float16).astype(np.float32)}
    assert_same(model, out, feeds=feeds)


def test_dynamic_to_fixed_shape(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = save(make(nodes, [helper.make_tensor_value_info("x", F, ["batch", "seq"])],
                      [helper.make_tensor_value_info("y", F, ["batch", "seq"])], {}),
                 tmp_path / "in" / "model.onnx")
    out = run_pass(tmp_path / "a", model, "DynamicToFixedShape", dim_param=["batch", "seq"],
                   dim_value=[1, 7])
    sess = session(out)
    assert sess.get_inputs()[0].shape == [1, 7] and sess.get_outputs()[0].shape == [1, 7]
    out = run_pass(tmp_path / "b", model, "DynamicToFixedShape", input_name=["x"], input_shape=[[2, 3]])
    assert session(out).get_inputs()[0].shape == [2, 3]
    wf = make_workflow(tmp_path, model, {"f": {"type": "DynamicToFixedShape", "dim_param": ["b"],
                                               "input_name": ["x"], "input_shape": [[0, 1]]}})
    with pytest.raises(ConfigError) as info:
        olivine.validate(wf)
    text = str(info.value)
    assert "passes.f.dim_param: set dim_param/dim_value or input_name/input_shape, not both" in text
    assert "passes.f.dim_value: dim_param and dim_value go together" in str(info.value)


def test_io_datatype_converter(tmp_path: Path) -> None:
    nodes = [helper.make_node("Add", ["x", "x"], ["logits"])]
    f16 = TensorProto.FLOAT16
    model = save(make(nodes, [helper.make_tensor_value_info("x", f16, [2])],
                      [helper.make_tensor_value_info("logits", f16, [2])], {}),
                 tmp_path / "in" / "model.onnx")
    out = run_pass(tmp_path, model, "OnnxIODataTypeConverter", name_pattern=".*")
    sess = session(out)
    assert sess.get_inputs()[0].type == "tensor(float)" and sess.get_outputs()[0].type == "tensor(float)"
    np.testing.assert_allclose(sess.run(None, {"x": np.array([1.5, 2.0], np.float32)})[0], [3.0, 4.0])


def test_op_version_conversion(tmp_path: Path) -> None:
    model = _model(tmp_path, opset=13)
    out = run_pass(tmp_path, model, "OnnxOpVersionConversion", target_opset=18)
    assert next(o.version for o in onnx.load(str(out)).opset_import if o.domain == "") == 18
    assert_same(model, out, feeds={"x": np.ones((2, 4), np.float32)})


def test_quantization_preprocess(tmp_path: Path) -> None:
    model = _model(tmp_path)
    out = run_pass(tmp_path, model, "OnnxQuantizationPreprocess")
    assert len(onnx.load(str(out)).graph.value_info) > 0  # shapes recorded
    assert_same(model, out, feeds={"x": np.ones((2, 4), np.float32)})


def test_add_olive_metadata(tmp_path: Path) -> None:
    model = _model(tmp_path)
    out = run_pass(tmp_path, model, "AddOliveMetadata", graph_name="tiny",
                   custom_metadata={"owner": "me", "n": 3})
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert proto.graph.name == "tiny" and props["owner"] == "me" and props["n"] == "3"
    assert len(props["model_hash"]) == 64
    assert_same(model, out, feeds={"x": np.ones((2, 4), np.float32)})
    for options, message in (({}, "passes.m.graph_name: required key is missing"),
                             ({"graph_name": "g", "external_data_name": "../x.data"},
                              "passes.m.external_data_name: must be a single name")):
        wf = make_workflow(tmp_path, model, {"m": {"type": "AddOliveMetadata", **options}})
        with pytest.raises(ConfigError, match=message):
            olivine.validate(wf)
