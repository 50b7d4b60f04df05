"""Small ONNX models for the weight-quantization tests."""

from __future__ import annotations

from pathlib import Path


def make_onnx(folder: Path, k: int = 200, n: int = 48, vocab: int = 50, seed: int = 0,
              external: bool = True) -> Path:
    """A Gather -> MatMul -> MatMul model with odd sizes (K = 200: 7 blocks of 32, 13 of 16)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((vocab, k)).astype(np.float32)
    w1 = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    w2 = (rng.standard_normal((n, 16)) / np.sqrt(n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["h"], name="embed"),
         helper.make_node("MatMul", ["h", "w1"], ["a"], name="fc1"),
         helper.make_node("Relu", ["a"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")],
        "tiny", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(w1, "w1"),
         numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=external, location="model.onnx.data",
                    size_threshold=0)
    return path
