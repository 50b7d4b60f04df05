"""GraphSurgeries on decoder-style graphs: embeddings, LM head, quantized weights, mask values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx_helpers import F, assert_same, make, op_types, save, session, surgery

RNG = np.random.default_rng(1)
V, H = 40, 64


def _ids(n: int = 5) -> dict[str, np.ndarray]:
    return {"input_ids": RNG.integers(0, V, (2, n)).astype(np.int64)}


def _decoder(tmp_path: Path, head: np.ndarray) -> Path:
    table = RNG.standard_normal((V, H)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["model.embed_tokens.weight", "input_ids"], ["e"],
                              name="/model/embed_tokens/Gather"),
             helper.make_node("Tanh", ["e"], ["h"]),
             helper.make_node("MatMul", ["h", "lm_head.weight"], ["logits"], name="/lm_head/MatMul")]
    model = make(nodes, [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                 [helper.make_tensor_value_info("logits", F, ["b", "s", V])],
                 {"model.embed_tokens.weight": table,
                  "lm_head.weight": table.T.copy() if head is None else head})
    return save(model, tmp_path / "in" / "model.onnx")


def test_tie_word_embeddings(tmp_path: Path) -> None:
    model = _decoder(tmp_path, None)  # type: ignore[arg-type]
    out = surgery(tmp_path, model, {"surgeon": "TieWordEmbeddings"})
    proto = onnx.load(str(out))
    assert [t.name for t in proto.graph.initializer if t.name.endswith("weight")] == [
        "model.embed_tokens.weight"]
    assert "Gemm" in op_types(out)
    assert_same(model, out, feeds=_ids(), atol=1e-4)


def test_tie_word_embeddings_leaves_different_weights(tmp_path: Path) -> None:
    model = _decoder(tmp_path, RNG.standard_normal((H, V)).astype(np.float32))
    out = surgery(tmp_path, model, {"surgeon": "TieWordEmbeddings"})
    assert op_types(out) == op_types(model)


def test_quantize_embedding_int8_then_share_with_lm_head(tmp_path: Path) -> None:
    """QuantizeEmbeddingInt8: int8 GatherBlockQuantized within half a quantization step of the
    float table; ShareEmbeddingLmHead: the head becomes an 8-bit MatMulNBits on the same tensors
    and computes what the dequantized table computes."""
    table = RNG.standard_normal((V, H)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["model.embed_tokens.weight", "input_ids"], ["e"],
                              name="/model/embed_tokens/Gather"),
             helper.make_node("MatMulNBits", ["e", "qw", "sc"], ["logits"], name="/lm_head/MatMulNBits",
                              domain="com.microsoft", K=H, N=V, bits=4, block_size=32)]
    inits = {"model.embed_tokens.weight": table,
             "qw": RNG.integers(0, 255, (V, H // 32, 16)).astype(np.uint8),
             "sc": np.full(V * H // 32, 0.1, np.float32)}
    model = save(make(nodes, [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                      [helper.make_tensor_value_info("logits", F, ["b", "s", V]),
                       ], inits, ms=True), tmp_path / "in" / "model.onnx", check=False)
    # embedding only: expose the gathered rows to compare them with the float table
    emb = make(nodes[:1], [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
               [helper.make_tensor_value_info("e", F, ["b", "s", H])], {"model.embed_tokens.weight": table})
    emb_path = save(emb, tmp_path / "emb" / "model.onnx")
    q_emb = surgery(tmp_path / "q", emb_path, {"surgeon": "QuantizeEmbeddingInt8"})
    assert op_types(q_emb) == ["GatherBlockQuantized"]
    ids = _ids()
    got = session(q_emb).run(None, ids)[0]
    step = np.abs(table).reshape(V, H // 32, 32).max(axis=2) / 127.0
    half_step = np.repeat(step, 32, axis=1)[ids["input_ids"]] / 2
    assert np.all(np.abs(got - table[ids["input_ids"]]) <= half_step + 1e-6)

    shared = surgery(tmp_path / "s", model, {"surgeon": "QuantizeEmbeddingInt8"},
                     {"surgeon": "ShareEmbeddingLmHead"})
    proto = onnx.load(str(shared))
    head = next(n for n in proto.graph.node if n.op_type == "MatMulNBits")
    assert {a.name: helper.get_attribute_value(a) for a in head.attribute}["bits"] == 8
    assert {t.name for t in proto.graph.initializer} >= {"model.embed_tokens.weight_Q8"}
    assert "qw" not in {t.name for t in proto.graph.initializer}
    logits = session(shared).run(None, ids)[0]
    deq = session(q_emb).run(None, {"input_ids": np.arange(V, dtype=np.int64)[None]})[0][0]
    np.testing.assert_allclose(logits, got @ deq.T, atol=1e-3, rtol=1e-3)


def test_remove_gidx_from_matmulnbits(tmp_path: Path) -> None:
    k, n, block = 64, 8, 32
    nodes = [helper.make_node("MatMulNBits", ["x", "qw", "sc", "zp", "g_idx"], ["y"],
                              domain="com.microsoft", K=k, N=n, bits=4, block_size=block)]
    inits = {"qw": RNG.integers(0, 255, (n, k // block, block // 2)).astype(np.uint8),
             "sc": RNG.random(n * k // block).astype(np.float32),
             "zp": np.full(n * ((k // block + 1) // 2), 0x88, np.uint8),
             "g_idx": (np.arange(k) // block).astype(np.int32)}
    model = save(make(nodes, [helper.make_tensor_value_info("x", F, [3, k])],
                      [helper.make_tensor_value_info("y", F, [3, n])], inits, ms=True),
                 tmp_path / "m.onnx", check=False)
    out = surgery(tmp_path, model, {"surgeon": "RemoveGidxFromMatMulNBits"})
    proto = onnx.load(str(out))
    assert list(proto.graph.node[0].input) == ["x", "qw", "sc", "zp"]
    assert_same(model, out, atol=1e-4)


def test_replace_attention_mask_value(tmp_path: Path) -> None:
    mask_min = np.finfo(np.float32).min
    nodes = [helper.make_node("Where", ["m", "zero", "neg"], ["bias"]),
             helper.make_node("Add", ["x", "bias"], ["s"]),
             helper.make_node("Softmax", ["s"], ["y"], axis=-1)]
    inits = {"zero": np.array(0.0, np.float32), "neg": np.array(mask_min, np.float32)}
    model = save(make(nodes, [helper.make_tensor_value_info("m", TensorProto.BOOL, [2, 4]),
                              helper.make_tensor_value_info("x", F, [2, 4])],
                      [helper.make_tensor_value_info("y", F, [2, 4])], inits), tmp_path / "m.onnx")
    out = surgery(tmp_path, model, {"surgeon": "ReplaceAttentionMaskValue", "replacement": -50.0})
    proto = onnx.load(str(out))
    values = {t.name: onnx.numpy_helper.to_array(t).item() for t in proto.graph.initializer}
    assert values["neg"] == -50.0
    feeds = {"m": np.array([[1, 1, 0, 0], [1, 0, 1, 1]], bool),
             "x": RNG.standard_normal((2, 4)).astype(np.float32)}
    assert_same(model, out, feeds=feeds, atol=1e-6)  # exp(-50) vanishes next to exp(x)
