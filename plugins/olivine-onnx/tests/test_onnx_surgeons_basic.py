"""GraphSurgeries: validation, and the I/O, arithmetic and clean-up surgeons (same outputs in ONNX
Runtime before and after, or the documented change). Tolerance 1e-5 unless a test says otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_helpers import F, assert_same, make, op_types, random_feeds, save, session, surgery

import olivine
from olivine import ConfigError, PassError
from olivine.testing import make_workflow
from olivine_testutil import SHARED

RNG = np.random.default_rng(0)


def _mlp(tmp_path: Path) -> Path:
    """x[2,3,4] -> MatMul W[4,5] + b -> Relu -> MatMul W2 + b2 (3-D input: Gemm needs reshapes)."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="/fc/MatMul"),
             helper.make_node("Add", ["m", "b"], ["a"], name="/fc/Add"),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["m2"], name="/fc2/MatMul"),
             helper.make_node("Add", ["b2", "m2"], ["a2"]),
             helper.make_node("Identity", ["a2"], ["y"])]
    inits = {"W": RNG.standard_normal((4, 5)).astype(np.float32),
             "b": RNG.standard_normal(5).astype(np.float32),
             "W2": RNG.standard_normal((5, 2)).astype(np.float32),
             "b2": RNG.standard_normal(2).astype(np.float32)}
    return save(make(nodes, [helper.make_tensor_value_info("x", F, [2, 3, 4])],
                     [helper.make_tensor_value_info("y", F, [2, 3, 2])], inits),
                tmp_path / "in" / "model.onnx")


def test_unknown_surgeon_and_bad_options_are_config_errors(tmp_path: Path) -> None:
    model = _mlp(tmp_path)
    wf = make_workflow(tmp_path, model, {"gs": {"type": "GraphSurgeries", "surgeries": [
        {"surgeon": "MatMulAddToGemm"}, {"surgeon": "NoSuchSurgeon"},
        {"surgeon": "RenameInputs", "old_names": ["x"]},
        {"surgeon": "ReplaceAttentionMaskValue", "replacment": 1.0}, {"old_names": []}]}})
    with pytest.raises(ConfigError) as info:
        olivine.validate(wf)
    text = str(info.value)
    assert "passes.gs.surgeries[1].surgeon: unknown surgeon 'NoSuchSurgeon'" in text
    assert "known: RenameInputs, " in text and "TieWordEmbeddings" in text
    assert "passes.gs.surgeries[2].new_names: required key is missing" in text
    assert "passes.gs.surgeries[3].replacment: unknown key (did you mean 'replacement'?)" in text
    assert "passes.gs.surgeries[4].surgeon: required key is missing" in text
    assert not (tmp_path / "out").exists()


def test_recipe_graph_surgeries_block_validates(tmp_path: Path) -> None:
    recipes = SHARED / "olive-recipes"
    if not recipes.is_dir():
        pytest.skip("../shared/olive-recipes is absent")
    seen = 0
    for path in sorted(recipes.rglob("*.json")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if '"GraphSurgeries"' not in text:
            continue
        try:
            passes = json.loads(text).get("passes", {})
        except ValueError:
            continue
        for name, spec in passes.items():
            if isinstance(spec, dict) and spec.get("type") == "GraphSurgeries":
                options = {k: v for k, v in spec.items() if k != "type"}
                wf = make_workflow(tmp_path, _mlp(tmp_path), {name: {"type": "GraphSurgeries",
                                                                     **options}})
                olivine.validate(wf)
                seen += 1
    assert seen >= 40


def test_gemm_to_matmul_add_and_back(tmp_path: Path) -> None:
    model = _mlp(tmp_path)
    gemm = surgery(tmp_path / "a", model, {"surgeon": "MatMulAddToGemm"})
    assert op_types(gemm).count("Gemm") == 2 and "MatMul" not in op_types(gemm)
    assert_same(model, gemm)
    back = surgery(tmp_path / "b", gemm, {"surgeon": "GemmToMatMulAdd"})
    assert "Gemm" not in op_types(back) and op_types(back).count("MatMul") == 2
    assert_same(model, back)


def test_gemm_to_matmul_add_transposed_weight(tmp_path: Path) -> None:
    nodes = [helper.make_node("Gemm", ["x", "W", "c"], ["y"], transB=1, name="g1"),
             helper.make_node("Gemm", ["y", "x2"], ["z"], transB=1, name="g2")]
    model = save(make(nodes, [helper.make_tensor_value_info("x", F, [3, 4]),
                              helper.make_tensor_value_info("x2", F, [2, 5])],
                      [helper.make_tensor_value_info("z", F, [3, 2])],
                      {"W": RNG.standard_normal((5, 4)).astype(np.float32),
                       "c": RNG.standard_normal(5).astype(np.float32)}), tmp_path / "m.onnx")
    out = surgery(tmp_path, model, {"surgeon": "GemmToMatMulAdd"})
    assert "Gemm" not in op_types(out) and "Transpose" in op_types(out)
    assert_same(model, out)


def test_reciprocal_mul_to_div(tmp_path: Path) -> None:
    nodes = [helper.make_node("Sqrt", ["x"], ["s"]), helper.make_node("Reciprocal", ["s"], ["r"]),
             helper.make_node("Mul", ["r", "a"], ["y"], name="/norm/Mul")]
    vi = [helper.make_tensor_value_info(n, F, [2, 3]) for n in ("x", "a")]
    model = save(make(nodes, vi, [helper.make_tensor_value_info("y", F, [2, 3])], {}),
                 tmp_path / "m.onnx")
    out = surgery(tmp_path, model, {"surgeon": "ReciprocalMulToDiv"})
    assert op_types(out) == ["Sqrt", "Div"]
    feeds = {"x": RNG.random((2, 3)).astype(np.float32) + 0.5,
             "a": RNG.standard_normal((2, 3)).astype(np.float32)}
    assert_same(model, out, feeds=feeds)


def test_pow_reducesum_pow_div_to_lpnorm(tmp_path: Path) -> None:
    nodes = [helper.make_node("Pow", ["x", "two"], ["p"]),
             helper.make_node("ReduceSum", ["p", "axes"], ["s"], keepdims=1),
             helper.make_node("Pow", ["s", "half"], ["n"]),
             helper.make_node("Div", ["x", "n"], ["y"])]
    inits = {"two": np.array(2.0, np.float32), "half": np.array(0.5, np.float32),
             "axes": np.array([-1], np.int64)}
    model = save(make(nodes, [helper.make_tensor_value_info("x", F, [2, 3, 8])],
                      [helper.make_tensor_value_info("y", F, [2, 3, 8])], inits), tmp_path / "m.onnx")
    out = surgery(tmp_path, model, {"surgeon": "PowReduceSumPowDiv2LpNorm"})
    assert op_types(out) == ["LpNormalization"]
    assert_same(model, out)


@pytest.mark.parametrize("skip", [False, True])
def test_simplified_layernorm_to_l2norm(tmp_path: Path, skip: bool) -> None:
    h = 16
    if skip:
        nodes = [helper.make_node("SkipSimplifiedLayerNormalization", ["x", "k", "w"],
                                  ["y", "", "", "sum"], domain="com.microsoft", epsilon=1e-12),
                 helper.make_node("Mul", ["sum", "y"], ["z"])]
        ins = [helper.make_tensor_value_info(n, F, [2, 3, h]) for n in ("x", "k")]
    else:
        nodes = [helper.make_node("SimplifiedLayerNormalization", ["x", "w"], ["z"], axis=-1,
                                  epsilon=1e-12)]
        ins = [helper.make_tensor_value_info("x", F, [2, 3, h])]
    model = save(make(nodes, ins, [helper.make_tensor_value_info("z", F, [2, 3, h])],
                      {"w": RNG.standard_normal(h).astype(np.float32)}, ms=skip), tmp_path / "m.onnx",
                 check=False)
    out = surgery(tmp_path, model, {"surgeon": "SimplifiedLayerNormToL2Norm"})
    assert "LpNormalization" in op_types(out) and not any("Simplified" in o for o in op_types(out))
    assert_same(model, out, atol=1e-4, rtol=1e-4)  # differs by the norm's epsilon only


def test_rename_inputs_outputs_and_dims(tmp_path: Path) -> None:
    model = _mlp(tmp_path)
    out = surgery(tmp_path, model,
                  {"surgeon": "RenameInputs", "old_names": ["x"], "new_names": ["input.1"]},
                  {"surgeon": "renameoutputs", "old_names": ["y"], "new_names": ["out"]},
                  {"surgeon": "RenameInputDims", "input_name": "input.1", "dim_idx": 0,
                   "dim_name": "batch"},
                  {"surgeon": "RenameOutputDims", "output_idx": 0, "dim_idx": 0, "dim_name": "batch"})
    sess = session(out)
    assert [(i.name, i.shape) for i in sess.get_inputs()] == [("input.1", ["batch", 3, 4])]
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [("out", ["batch", 3, 2])]
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"input.1": x})[0],
                               session(model).run(None, {"x": x})[0], atol=1e-6)


def test_surgery_that_cannot_apply_fails_the_step(tmp_path: Path) -> None:
    model = _mlp(tmp_path)
    wf = make_workflow(tmp_path, model, {"gs": {"type": "GraphSurgeries", "surgeries": [
        {"surgeon": "RenameOutputDims", "output_idx": 3, "dim_idx": 0, "dim_name": "n"}]}})
    with pytest.raises(PassError, match="output_idx: 3 is out of range: the model has 1 outputs"):
        olivine.run(wf)
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_cleanup_surgeons(tmp_path: Path) -> None:
    """DeduplicateNodes, RemoveMemcpy, DeduplicateSubgraphInitializers and the merge of equal
    initializers; the model loads and computes the same."""
    then = helper.make_graph([helper.make_node("Add", ["x", "k"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", F, [2])],
                             [onnx.numpy_helper.from_array(np.ones(2, np.float32), "k")] * 2)
    other = helper.make_graph([helper.make_node("Sub", ["x", "k2"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", F, [2])],
                              [onnx.numpy_helper.from_array(np.ones(2, np.float32), "k2")])
    nodes = [helper.make_node("MemcpyToHost", ["x"], ["xh"], domain="com.microsoft"),
             helper.make_node("Cast", ["xh"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["xh"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["c", "w1"], ["m1"]), helper.make_node("Mul", ["m1", "w2"], ["m2"]),
             helper.make_node("If", ["cond"], ["i"], then_branch=then, else_branch=other),
             helper.make_node("Add", ["m2", "i"], ["y0"]),
             helper.make_node("MemcpyFromHost", ["y0"], ["y"], domain="com.microsoft")]
    inits = {"w1": np.full(2, 3.0, np.float32), "w2": np.full(2, 3.0, np.float32)}
    bad = make(nodes, [helper.make_tensor_value_info("x", F, [2]),
                       helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
               [helper.make_tensor_value_info("y", F, [2])], inits, ms=True)
    path = tmp_path / "m.onnx"
    onnx.save_model(bad, str(path))  # invalid on purpose: checker and ORT refuse it
    out = surgery(tmp_path, path, {"surgeon": "DeduplicateNodes"}, {"surgeon": "RemoveMemcpy"},
                  {"surgeon": "DeduplicateSubgraphInitializers"})
    proto = onnx.load(str(out))
    assert [n.op_type for n in proto.graph.node].count("Cast") == 1
    assert not any(n.op_type.startswith("Memcpy") for n in proto.graph.node)
    assert len(proto.graph.initializer) == 1  # w1 and w2 merged
    assert [o.name for o in proto.graph.output] == ["y"]
    x = np.array([1.0, 2.0], np.float32)
    for cond, extra in ((True, 1.0), (False, -1.0)):
        got = session(out).run(None, {"x": x, "cond": np.array(cond)})[0]
        np.testing.assert_allclose(got, x * 9 + x + extra)


def test_external_data_options(tmp_path: Path) -> None:
    model = _mlp(tmp_path)
    out = surgery(tmp_path, model, {"surgeon": "InferShapes"}, save_as_external_data=True,
                  external_data_name="weights.bin", size_threshold=0)
    assert (out.parent / "weights.bin").stat().st_size > 0
    assert out.stat().st_size < (out.parent / "weights.bin").stat().st_size + 2000
    assert_same(model, out)
    feeds = random_feeds(session(model))
    assert set(feeds) == {"x"}
