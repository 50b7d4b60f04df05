"""olivine.ortshapes: onnxruntime's shape inference without weight copies gives the same results.

The fusion and the quantization pre-processing run inside ``lean_shape_inference``; these
tests compare what onnxruntime computes with and without it on a real exported BERT.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from olivine.ortshapes import LEAN_MIN_ELEMENTS, lean_shape_inference


def _digest(proto: onnx.ModelProto) -> str:
    return hashlib.sha256(proto.SerializeToString()).hexdigest()


def _large_float(proto: onnx.ModelProto) -> list[str]:
    names = []
    for t in proto.graph.initializer:
        count = 1
        for d in t.dims:
            count *= d
        if t.data_type == TensorProto.FLOAT and count >= LEAN_MIN_ELEMENTS:
            names.append(t.name)
    return names


def test_fusion_inside_the_context_writes_the_same_model(exported_tiny_bert: Path) -> None:
    """onnxruntime's bert fuser gives byte-identical graphs with and without lean inference."""
    from onnxruntime.transformers.optimizer import optimize_model

    source = str(exported_tiny_bert / "model.onnx")

    def fused() -> str:
        model = optimize_model(source, model_type="bert", num_heads=4, hidden_size=32)
        model.topological_sort()
        ops = {n.op_type for n in model.model.graph.node}
        assert {"Attention", "SkipLayerNormalization"} <= ops  # the shapes let it fuse
        return _digest(model.model)

    plain = fused()
    with lean_shape_inference() as active:
        assert active
        lean = fused()
    assert lean == plain


def test_the_copies_hold_no_weights_and_infer_the_same_shapes(exported_tiny_bert: Path) -> None:
    from onnxruntime.transformers.shape_infer_helper import SymbolicShapeInferenceHelper

    proto = onnx.load(str(exported_tiny_bert / "model.onnx"))
    large = _large_float(proto)
    assert large, "the tiny BERT has weights above the threshold"
    before = _digest(proto)

    def shapes(helper_: SymbolicShapeInferenceHelper) -> dict[str, list[object]]:
        assert helper_.infer({"batch_size": 2})
        return {name: helper_.get_edge_shape(name) for name in helper_.known_vi_}

    plain = shapes(SymbolicShapeInferenceHelper(proto))
    with lean_shape_inference():
        lean_helper = SymbolicShapeInferenceHelper(proto)
        lean = shapes(lean_helper)
    assert lean == plain
    kept = {t.name: t for t in lean_helper.out_mp_.graph.initializer}
    assert all(not kept[name].HasField("raw_data") for name in large)
    assert _digest(proto) == before  # the caller's model is untouched


def test_infer_shapes_returns_the_same_bytes(exported_tiny_bert: Path) -> None:
    """The model handed back (as quantization pre-processing saves it) has all its weights."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    proto = onnx.load(str(exported_tiny_bert / "model.onnx"))
    plain = SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    with lean_shape_inference():
        lean = SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    assert len(lean.graph.value_info) > 0
    assert _digest(lean) == _digest(plain)


def _unknown_op_model() -> onnx.ModelProto:
    """A graph whose output shape no inference can know (an op of an unknown domain)."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], [0.5] * 4096)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Mystery", ["h"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.example", 1)])


def test_incomplete_inference_writes_nothing_into_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime saves sym_shape_infer_temp.onnx into the cwd before raising; olivine does not."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    lean_dir, plain_dir = tmp_path / "lean", tmp_path / "plain"
    lean_dir.mkdir()
    plain_dir.mkdir()
    monkeypatch.chdir(lean_dir)
    with lean_shape_inference(), pytest.raises(Exception, match="Incomplete symbolic shape"):
        SymbolicShapeInference.infer_shapes(_unknown_op_model())
    assert list(lean_dir.iterdir()) == []
    monkeypatch.chdir(plain_dir)  # what the guard is for: onnxruntime's own behaviour
    with pytest.raises(Exception, match="Incomplete symbolic shape"):
        SymbolicShapeInference.infer_shapes(_unknown_op_model())
    assert list(plain_dir.iterdir()), "onnxruntime no longer writes its temp file: simplify"


def _patched_attributes() -> list[object]:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from onnxruntime.transformers.shape_infer_helper import SymbolicShapeInferenceHelper

    classes = (SymbolicShapeInference, SymbolicShapeInferenceHelper.__mro__[1])
    assert classes[0] is not classes[1]  # onnxruntime loads the module under two names
    return [c.__dict__[name] for c in classes for name in ("_preprocess", "infer_shapes")]


def test_the_classes_are_restored_after_nested_use_and_after_an_error() -> None:
    before = _patched_attributes()
    with lean_shape_inference():
        inner = _patched_attributes()
        assert all(a is not b for a, b in zip(inner, before, strict=True))
        with lean_shape_inference():
            assert _patched_attributes() == inner
        assert _patched_attributes() == inner
    assert _patched_attributes() == before
    with pytest.raises(RuntimeError, match="inside"), lean_shape_inference():
        raise RuntimeError("inside")
    assert _patched_attributes() == before


def test_onnxruntimes_own_infer_shapes_keeps_full_copies_while_patched(
        exported_tiny_bert: Path) -> None:
    """A reference to onnxruntime's function taken before the block returns whole weights."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    proto = onnx.load(str(exported_tiny_bert / "model.onnx"))
    original = SymbolicShapeInference.infer_shapes
    plain = original(proto, auto_merge=True)
    with lean_shape_inference():
        inside = original(proto, auto_merge=True)
    assert _digest(inside) == _digest(plain)


def test_float16_weights_go_lean_with_the_same_shapes() -> None:
    from onnxruntime.transformers.shape_infer_helper import SymbolicShapeInferenceHelper

    weight = onnx.numpy_helper.from_array(np.full((64, 96), 0.5, np.float16), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
                              [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def shapes(h: SymbolicShapeInferenceHelper) -> object:
        assert h.infer({"n": 3})
        return h.get_edge_shape("y")

    plain = shapes(SymbolicShapeInferenceHelper(proto))
    with lean_shape_inference():
        lean_helper = SymbolicShapeInferenceHelper(proto)
        assert shapes(lean_helper) == plain == [3, 96]
    assert not lean_helper.out_mp_.graph.initializer[0].HasField("raw_data")


def test_values_the_inference_reads_come_from_the_callers_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``Resize`` reads its float scales; with every tensor lean they still come out whole."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    import olivine.ortshapes as ortshapes

    monkeypatch.setattr(ortshapes, "LEAN_MIN_ELEMENTS", 1)
    raw = onnx.numpy_helper.from_array(np.array([1.0, 1.0, 2.0, 3.0], np.float32), "scales_raw")
    nodes = [helper.make_node("Resize", ["x", "", "scales_raw"], ["y"], mode="nearest")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [raw])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plain = SymbolicShapeInference.infer_shapes(proto)
    with lean_shape_inference():
        lean = SymbolicShapeInference.infer_shapes(proto)
    dims = [d.dim_value for d in lean.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 2, 8, 12]
    assert _digest(lean) == _digest(plain)
