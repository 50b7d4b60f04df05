"""GraphSurgeries: PackedAttentionToLoopMHA and the smaller surgeons of Olive 0.13's catalogue.
Each rewritten model loads in ONNX Runtime and computes what the original (or a numpy
reference, where ONNX Runtime cannot run the original op) computes on random inputs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_helpers import F, assert_same, make, op_types, save, session, surgery

RNG = np.random.default_rng(11)


def _attention_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, cu: np.ndarray,
                         scale: float) -> np.ndarray:
    """Each segment attends only to itself; [B, heads, seq, d] in, [B, seq, heads, d] out."""
    out = np.zeros((q.shape[0], q.shape[2], q.shape[1], q.shape[3]), np.float32)
    for a, b in itertools.pairwise(cu):
        scores = np.einsum("bhsd,bhtd->bhst", q[:, :, a:b], k[:, :, a:b]) * scale
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, a:b] = np.einsum("bhst,bhtd->bshd", p, v[:, :, a:b])
    return out


def test_packed_attention_to_loop_mha(tmp_path: Path) -> None:
    """Within 1e-5 of the per-segment attention (measured max difference 2e-7)."""
    b, heads, seq, d = 1, 2, 7, 4
    node = helper.make_node("PackedAttention", ["q", "k", "v", "cu_seqlens"], ["attn"],
                            domain="custom", scale=0.5, num_heads=heads, name="attn")
    inputs = [helper.make_tensor_value_info(n, F, [b, heads, seq, d]) for n in "qkv"]
    inputs.append(helper.make_tensor_value_info("cu_seqlens", TensorProto.INT32, ["n"]))
    model = helper.make_model(
        helper.make_graph([node], "g", inputs,
                          [helper.make_tensor_value_info("attn", F, [b, seq, heads, d])]),
        opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("custom", 1)])
    path = save(model, tmp_path / "in" / "model.onnx", check=False)
    out = surgery(tmp_path, path, {"surgeon": "PackedAttentionToLoopMHA"})
    assert "Loop" in op_types(out) and "PackedAttention" not in op_types(out)
    assert not any(o.domain == "custom" for o in onnx.load(str(out)).opset_import)
    q, k, v = (RNG.standard_normal((b, heads, seq, d)).astype(np.float32) for _ in range(3))
    for cu in ([0, 3, 7], [0, 7], [0, 1, 2, 7]):
        cu_arr = np.array(cu, np.int32)
        got = session(out).run(None, {"q": q, "k": k, "v": v, "cu_seqlens": cu_arr})[0]
        np.testing.assert_allclose(got, _attention_reference(q, k, v, cu_arr, 0.5), atol=1e-5)


def _unary(tmp_path: Path, op: str, domain: str = "", **attrs: float) -> Path:
    nodes = [helper.make_node(op, ["x"], ["y"], domain=domain, name="n", **attrs),
             helper.make_node("Add", ["y", "x"], ["z"], name="add")]
    return save(make(nodes, [helper.make_tensor_value_info("x", F, [2, 8])],
                     [helper.make_tensor_value_info("z", F, [2, 8])], {}, ms=bool(domain)),
                tmp_path / "in" / "model.onnx", check=not domain)


def test_replace_erf_with_tanh(tmp_path: Path) -> None:
    """tanh(605/503 x) is within 0.02 of erf(x) (measured max 0.0187 over [-3, 3])."""
    model = _unary(tmp_path, "Erf")
    out = surgery(tmp_path, model, {"surgeon": "ReplaceErfWithTanh"})
    assert op_types(out) == ["Mul", "Tanh", "Add"]
    x = np.linspace(-3, 3, 16, dtype=np.float32).reshape(2, 8)
    assert_same(model, out, feeds={"x": x}, atol=0.02, rtol=0)


def test_decompose_quick_gelu(tmp_path: Path) -> None:
    model = _unary(tmp_path, "QuickGelu", domain="com.microsoft", alpha=1.5)
    out = surgery(tmp_path, model, {"surgeon": "DecomposeQuickGelu"})
    assert op_types(out) == ["Mul", "Sigmoid", "Mul", "Add"]
    assert_same(model, out, atol=1e-6)


def _two_inputs(tmp_path: Path) -> Path:
    nodes = [helper.make_node("Mul", ["x", "m"], ["xm"], name="mul"),
             helper.make_node("Relu", ["xm"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], ["y"], name="add")]
    return save(make(nodes, [helper.make_tensor_value_info("x", F, [2, 3]),
                             helper.make_tensor_value_info("m", F, [2, 3])],
                     [helper.make_tensor_value_info("y", F, [2, 3])], {}),
                tmp_path / "in" / "model.onnx")


def test_zero_out_input(tmp_path: Path) -> None:
    model = _two_inputs(tmp_path)
    out = surgery(tmp_path, model, {"surgeon": "ZeroOutInput", "node_name": "add", "input_idx": 0})
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    got = session(out).run(None, {"x": x, "m": x})[0]
    np.testing.assert_array_equal(got, x)  # relu(x*m) replaced by zeros


def test_remove_inputs_and_expose_outputs(tmp_path: Path) -> None:
    """Clip(x, lo) with the optional ``lo`` input removed is x; relu's output exposed."""
    nodes = [helper.make_node("Clip", ["x", "lo"], ["c"], name="clip"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], ["y"], name="add")]
    model = save(make(nodes, [helper.make_tensor_value_info("x", F, [2, 3]),
                              helper.make_tensor_value_info("lo", F, [])],
                      [helper.make_tensor_value_info("y", F, [2, 3])], {}),
                 tmp_path / "in" / "model.onnx")
    out = surgery(tmp_path / "r", model, {"surgeon": "RemoveInputs", "names": ["lo"]},
                  {"surgeon": "ExposeOutputs", "names": ["relu"]})
    sess = session(out)
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert [o.name for o in sess.get_outputs()] == ["y", "r"]
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    y, r = sess.run(None, {"x": x})
    np.testing.assert_allclose(r, np.maximum(x, 0))
    np.testing.assert_allclose(y, session(model).run(None, {"x": x, "lo": np.array(-1e9, np.float32)})[0],
                               atol=1e-6)


def test_add_intermediate_tensors_and_remove_value_shapes(tmp_path: Path) -> None:
    model = _two_inputs(tmp_path)
    out = surgery(tmp_path, model, {"surgeon": "InferShapes"},
                  {"surgeon": "AddIntermediateTensorsToOutputs", "intermediate_tensor_to_add": ["xm"]},
                  {"surgeon": "RemoveAllTensorValueShapes"})
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["y", "xm"]
    assert all(not v.type.tensor_type.HasField("shape") for v in proto.graph.value_info)
    feeds = {n: RNG.standard_normal((2, 3)).astype(np.float32) for n in ("x", "m")}
    y, xm = session(out).run(None, feeds)
    np.testing.assert_allclose(xm, feeds["x"] * feeds["m"], atol=1e-6)
    np.testing.assert_allclose(y, session(model).run(None, feeds)[0], atol=1e-6)


def _qdq_model(tmp_path: Path) -> tuple[Path, float]:
    """x -> Q/DQ (uint8, scale 0.02, zero 128) -> MatMul with an int8 DequantizeLinear weight
    -> Q/DQ -> y."""
    scale = 0.02
    # |w| <= 63: ONNX Runtime fuses the original into a u8 x s8 MatMul, whose AVX2 kernel (CPUs
    # without VNNI, e.g. AMD EPYC) saturates pairs of products at int16 (2 x 255 x 127 > 32767)
    # where the folded float MatMul does not; a fixed generator keeps the test order-free
    w = np.random.default_rng(7).integers(-63, 64, (4, 3)).astype(np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_in"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dq_w"),
             helper.make_node("MatMul", ["xd", "wd"], ["m"], name="mm"),
             helper.make_node("QuantizeLinear", ["m", "s", "z"], ["mq"], name="q_out"),
             helper.make_node("DequantizeLinear", ["mq", "s", "z"], ["y"], name="dq_out")]
    inits = {"s": np.array(scale, np.float32), "z": np.array(128, np.uint8), "w": w,
             "ws": np.array(0.01, np.float32), "wz": np.array(0, np.int8)}
    path = save(make(nodes, [helper.make_tensor_value_info("x", F, [2, 4])],
                     [helper.make_tensor_value_info("y", F, [2, 3])], inits), tmp_path / "in" / "model.onnx")
    return path, scale


def test_remove_deqlin_folds_constant_dequantization(tmp_path: Path) -> None:
    model, _ = _qdq_model(tmp_path)
    out = surgery(tmp_path, model, {"surgeon": "RemoveDeqLin"})
    assert op_types(out).count("DequantizeLinear") == 2  # only the activations' remain
    assert_same(model, out, atol=1e-6)


def test_qdq_to_clip_and_remove_qdq(tmp_path: Path) -> None:
    """Without the Q/DQ rounding the outputs move by at most half a step per rounding
    (2 roundings through a weight of at most 4 x 1.27: bound 0.01 + 4 x 1.27 x 0.01 + 0.01)."""
    model, scale = _qdq_model(tmp_path)
    x = RNG.uniform(-1, 1, (2, 4)).astype(np.float32)
    clip = surgery(tmp_path / "c", model, {"surgeon": "QDQToClip"})
    assert op_types(clip).count("Clip") == 2 and "QuantizeLinear" not in op_types(clip)
    bound = scale / 2 + 4 * 1.27 * scale / 2 + scale / 2
    assert_same(model, clip, feeds={"x": x}, atol=bound, rtol=0)
    removed = surgery(tmp_path / "r", model, {"surgeon": "RemoveQDQ"})
    assert "QuantizeLinear" not in op_types(removed)
    assert_same(model, removed, feeds={"x": x}, atol=bound, rtol=0)
    kept = surgery(tmp_path / "k", model, {"surgeon": "RemoveQDQ", "keep_clip_after_inputs": True})
    assert op_types(kept)[0] == "Clip" and op_types(kept).count("Clip") == 1
    big = np.full((2, 4), 9.0, np.float32)  # clipped to the input's range, (255 - 128) x 0.02
    edge = np.full((2, 4), 127 * scale, np.float32)
    np.testing.assert_allclose(session(kept).run(None, {"x": big})[0],
                               session(removed).run(None, {"x": edge})[0], atol=1e-5)


def test_rmsnorm_to_l2norm(tmp_path: Path) -> None:
    """Both written forms (x / sqrt and x * 1/sqrt), the second through a Cast; a weight also
    read elsewhere keeps its value there. Equal up to the epsilon (1e-6 against mean(x^2) ~ 1:
    measured max difference 3.8e-6 on outputs up to 7; bound 1e-4)."""
    n = 16
    w = RNG.standard_normal(n).astype(np.float32)
    nodes: list[onnx.NodeProto] = []
    for k, (form, src, out) in enumerate((("div", "x", "a"), ("mul", "a", "b"))):
        pre = f"/l{k}"
        nodes += [helper.make_node("Pow", [src, "two"], [f"{pre}p"], name=f"{pre}/Pow"),
                  helper.make_node("ReduceMean", [f"{pre}p"], [f"{pre}m"], axes=[-1], name=f"{pre}/Mean"),
                  helper.make_node("Add", [f"{pre}m", "eps"], [f"{pre}e"], name=f"{pre}/Add"),
                  helper.make_node("Sqrt", [f"{pre}e"], [f"{pre}s"], name=f"{pre}/Sqrt")]
        if form == "div":
            nodes += [helper.make_node("Div", [src, f"{pre}s"], [f"{pre}d"], name=f"{pre}/Div"),
                      helper.make_node("Mul", [f"{pre}d", "w"], [out], name=f"{pre}/MulW")]
        else:
            nodes += [helper.make_node("Div", ["one", f"{pre}s"], [f"{pre}r"], name=f"{pre}/Div"),
                      helper.make_node("Mul", [src, f"{pre}r"], [f"{pre}d"], name=f"{pre}/Mul"),
                      helper.make_node("Cast", [f"{pre}d"], [f"{pre}c"], to=TensorProto.FLOAT),
                      helper.make_node("Mul", [f"{pre}c", "w"], [f"{pre}o"], name=f"{pre}/MulW"),
                      helper.make_node("Add", [f"{pre}o", "w"], [out], name="uses_w")]
    inits = {"two": np.array(2.0, np.float32), "eps": np.array(1e-6, np.float32),
             "one": np.array(1.0, np.float32), "w": w}
    model = save(make(nodes, [helper.make_tensor_value_info("x", F, [2, 3, n])],
                      [helper.make_tensor_value_info("b", F, [2, 3, n])], inits, opset=17),
                 tmp_path / "in" / "model.onnx")
    out = surgery(tmp_path, model, {"surgeon": "RMSNormToL2Norm"})
    assert op_types(out).count("LpNormalization") == 2 and "Sqrt" not in op_types(out)
    assert_same(model, out, atol=1e-4)


def test_expose_quantized_output(tmp_path: Path) -> None:
    """The quantized output with its exposed scale and zero point dequantizes to the original."""
    model, _ = _qdq_model(tmp_path)
    out = surgery(tmp_path, model, {"surgeon": "ExposeQuantizedOutput", "output_name": "y"})
    sess = session(out)
    assert [o.name for o in sess.get_outputs()] == ["mq", "y_exposed_scale_output",
                                                    "y_exposed_zero_point_output"]
    x = RNG.uniform(-1, 1, (2, 4)).astype(np.float32)
    q, scale, zero = sess.run(None, {"x": x})
    assert q.dtype == np.uint8
    want = session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose((q.astype(np.int32) - zero.astype(np.int32)) * scale, want, atol=1e-6)


@pytest.mark.parametrize(("rank", "interleaved", "rotary_dim"), [
    (4, 0, 0), (4, 1, 0), (3, 0, 0), (4, 0, 4)], ids=["4d", "4d-interleaved", "3d", "4d-partial"])
def test_decompose_rotary_embedding(tmp_path: Path, rank: int, interleaved: int,
                                    rotary_dim: int) -> None:
    """Same outputs as ONNX Runtime's RotaryEmbedding kernel within 1e-5."""
    b, n, s, h, max_pos = 2, 2, 5, 8, 16
    half = (rotary_dim or h) // 2
    angles = np.arange(max_pos)[:, None] / 10000 ** (np.arange(half)[None, :] / half)
    shape = [b, n, s, h] if rank == 4 else [b, s, n * h]
    attrs = {"interleaved": interleaved, **({"num_heads": n} if rank == 3 or rotary_dim else {}),
             **({"rotary_embedding_dim": rotary_dim} if rotary_dim else {})}
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"],
                            domain="com.microsoft", name="rope", **attrs)
    model = save(make([node], [helper.make_tensor_value_info("x", F, shape),
                               helper.make_tensor_value_info("pos", TensorProto.INT64, [b, s])],
                      [helper.make_tensor_value_info("y", F, shape)],
                      {"cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)},
                      ms=True), tmp_path / "in" / "model.onnx", check=False)
    out = surgery(tmp_path, model, {"surgeon": "DecomposeRotaryEmbedding"})
    assert "RotaryEmbedding" not in op_types(out)
    feeds = {"x": RNG.standard_normal(shape).astype(np.float32),
             "pos": RNG.integers(0, max_pos, (b, s)).astype(np.int64)}
    assert_same(model, out, feeds=feeds, atol=1e-5)


@pytest.mark.parametrize("opset", [17, 18])
def test_simplified_layernorm_to_rmsnorm(tmp_path: Path, opset: int) -> None:
    """SimplifiedLayerNormalization then SkipSimplifiedLayerNormalization (with its residual sum
    read later) in primitive ops: the same outputs as ONNX Runtime's kernels within 1e-5."""
    n = 16
    nodes = [helper.make_node("SimplifiedLayerNormalization", ["x", "g1"], ["a"], axis=-1,
                              epsilon=1e-5, name="ln"),
             helper.make_node("SkipSimplifiedLayerNormalization", ["a", "skip", "g2"],
                              ["b", "", "", "res"], domain="com.microsoft", epsilon=1e-6, name="sln"),
             helper.make_node("Add", ["b", "res"], ["y"], name="out")]
    inits = {"g1": RNG.standard_normal(n).astype(np.float32), "g2": RNG.standard_normal(n).astype(np.float32)}
    model = save(make(nodes, [helper.make_tensor_value_info("x", F, [2, 3, n]),
                              helper.make_tensor_value_info("skip", F, [2, 3, n])],
                      [helper.make_tensor_value_info("y", F, [2, 3, n])], inits, opset=opset, ms=True),
                 tmp_path / "in" / "model.onnx", check=False)
    out = surgery(tmp_path, model, {"surgeon": "SimplifiedLayerNormToRMSNorm"})
    assert "SimplifiedLayerNormalization" not in op_types(out)
    assert op_types(out).count("ReduceMean") == 2
    assert_same(model, out, atol=1e-5)
