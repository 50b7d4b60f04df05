"""Helpers for the olivine-onnx tests: tiny graphs, one workflow run, ONNX Runtime comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import olivine
from olivine.testing import make_workflow

F = TensorProto.FLOAT


def save(model: onnx.ModelProto, path: Path, check: bool = True) -> Path:
    """Check (unless it holds ONNX Runtime's own ops) and save ``model`` at ``path``."""
    if check:
        onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def make(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: dict[str, np.ndarray],
         opset: int = 17, ms: bool = False) -> onnx.ModelProto:
    """A model from nodes, value infos and initializer arrays."""
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def session(path: Path) -> ort.InferenceSession:
    """A one-thread CPU session."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_pass(tmp_path: Path, model: Path, pass_type: str, **options: Any) -> Path:
    """Run one pass through the engine; the output ``.onnx`` file."""
    wf = make_workflow(tmp_path, model, {"p": {"type": pass_type, **options}})
    result = olivine.run(wf)
    assert result.ok, result
    out = tmp_path / "out"
    files = sorted(out.rglob("*.onnx"))
    assert len(files) == 1, files
    return files[0]


def surgery(tmp_path: Path, model: Path, *surgeries: dict[str, Any], **options: Any) -> Path:
    """Run ``GraphSurgeries`` with these surgeries; the output file."""
    return run_pass(tmp_path, model, "GraphSurgeries", surgeries=list(surgeries), **options)


def random_feeds(sess: ort.InferenceSession, seed: int = 0,
                 fixed: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Random inputs for a session (symbolic dims of size 3 unless ``fixed`` names them)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else (fixed or {}).get(str(d), 3) for d in inp.shape]
        if "int64" in inp.type:
            feeds[inp.name] = rng.integers(0, 4, shape).astype(np.int64)
        elif "float16" in inp.type:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float16)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def assert_same(before: Path, after: Path, atol: float = 1e-5, rtol: float = 1e-5,
                feeds: dict[str, np.ndarray] | None = None) -> None:
    """Both models load in ONNX Runtime and give the same outputs on the same random inputs."""
    a, b = session(before), session(after)
    feeds = feeds if feeds is not None else random_feeds(a)
    out_a = a.run(None, feeds)
    out_b = b.run(None, feeds)
    assert [o.name for o in a.get_outputs()] == [o.name for o in b.get_outputs()]
    for x, y in zip(out_a, out_b, strict=True):
        np.testing.assert_allclose(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64),
                                   atol=atol, rtol=rtol)


def op_types(path: Path) -> list[str]:
    """The op types of the saved model's main graph, in order."""
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
