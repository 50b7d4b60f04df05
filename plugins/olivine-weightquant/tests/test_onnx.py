"""The ONNX passes through the engine: real models in, MatMulNBits models out, run by ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from wq_onnx import make_onnx

import olivine


def _run(tmp_path: Path, model: Path, passes: dict, name: str = "out") -> Path:
    result = olivine.run({"input_model": {"type": "ONNXModel", "model_path": str(model)},
                          "passes": passes, "output_dir": str(tmp_path / name),
                          "cache_dir": str(tmp_path / "cache"), "log_severity_level": 4})
    return Path(result.output_model.path)


def _ops(folder: Path) -> dict[str, int]:
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _outputs(folder: Path, ids: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"ids": ids})[0]


def test_onnx_rtn_quantizes_matmul_and_gather(tmp_path: Path) -> None:
    src = make_onnx(tmp_path / "src")
    (src.parent / "genai_config.json").write_text("{}")
    out = _run(tmp_path, src.parent, {"q": {"type": "OnnxRtnQuantization", "bits": 4, "block_size": 32,
                                             "is_symmetric": False,
                                             "op_types_to_quantize": ["MatMul", "Gather"]}})
    assert _ops(out) == {"GatherBlockQuantized": 1, "MatMulNBits": 2, "Relu": 1}
    assert (out / "genai_config.json").is_file() and (out / "model.onnx.data").is_file()
    ids = np.arange(50, dtype=np.int64)
    fp, q = _outputs(src.parent, ids), _outputs(out, ids)
    assert float(np.abs(q - fp).max() / np.abs(fp).max()) < 0.15
    size_in = sum(p.stat().st_size for p in src.parent.iterdir() if "model.onnx" in p.name)
    size_out = sum(p.stat().st_size for p in out.iterdir() if "model.onnx" in p.name)
    assert size_out < 0.3 * size_in


def test_int8_and_excluded_nodes(tmp_path: Path) -> None:
    src = make_onnx(tmp_path / "src")
    out = _run(tmp_path, src, {"q": {"type": "OnnxBlockWiseRtnQuantization", "bits": 8, "block_size": 16,
                                      "accuracy_level": 4, "nodes_to_exclude": ["fc2"]}})
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert [n.name for n in nbits] == ["fc1_Q8"]
    attrs = {a.name: a.i for a in nbits[0].attribute}
    assert attrs == {"K": 200, "N": 48, "bits": 8, "block_size": 16, "accuracy_level": 4}
    assert [n.name for n in model.graph.node if n.op_type == "MatMul"] == ["fc2"]
    ids = np.arange(50, dtype=np.int64)
    fp, q = _outputs(src.parent, ids), _outputs(out, ids)
    assert float(np.abs(q - fp).max() / np.abs(fp).max()) < 0.03  # int8 (int8 activations, level 4)


def test_hqq_pass(tmp_path: Path) -> None:
    src = make_onnx(tmp_path / "src")
    out = _run(tmp_path, src, {"q": {"type": "hqq", "block_size": 64}})
    assert _ops(out)["MatMulNBits"] == 2 and "Gather" in _ops(out)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    zp = [i for i in model.graph.initializer if i.name.endswith("_zero_points")]
    assert zp and all(i.data_type == onnx.TensorProto.FLOAT for i in zp)
    ids = np.arange(50, dtype=np.int64)
    fp, q = _outputs(src.parent, ids), _outputs(out, ids)
    assert float(np.abs(q - fp).max() / np.abs(fp).max()) < 0.25


def _no_weights_model(folder: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"], name="dyn"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    folder.mkdir(parents=True)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                    str(folder / "model.onnx"))
    return folder


def test_a_model_without_constant_weights_is_refused(tmp_path: Path, cli) -> None:
    folder = _no_weights_model(tmp_path / "m")
    code, _, err = cli("quantize", "-m", str(folder), "-o", str(tmp_path / "o"),
                       "--cache_dir", str(tmp_path / "c"), "--log_level", "3")
    assert code == 2
    assert "model.onnx has nothing to quantize" in err
    assert "1 MatMul (1 skipped: weight is computed, not a constant initializer)" in err
    assert not (tmp_path / "o").exists()


def test_cli_onnx_flags_reach_the_pass(tmp_path: Path, cli) -> None:
    src = make_onnx(tmp_path / "src")
    code, out, _ = cli("quantize", "-m", str(src), "--precision", "int8", "--block_size", "32",
                       "--asymmetric", "--accuracy_level", "4", "--quantize_embeddings",
                       "--nodes_to_exclude", "fc2", "-o", str(tmp_path / "o"), "--dry_run")
    assert code == 0
    cfg = json.loads(out)["passes"]["quantize"]
    assert cfg == {"type": "OnnxBlockWiseRtnQuantization", "bits": 8, "block_size": 32,
                   "is_symmetric": False, "op_types_to_quantize": ["MatMul", "Gather"],
                   "accuracy_level": 4, "nodes_to_exclude": ["fc2"]}
    code, _, _ = cli("quantize", "-m", str(src), "--precision", "int8", "--block_size", "32",
                     "-o", str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c"), "--log_level", "4")
    assert code == 0
    model = onnx.load(str(tmp_path / "o" / "model.onnx"), load_external_data=False)
    bits = {a.name: a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute}
    assert bits["bits"] == 8 and bits["block_size"] == 32


@pytest.mark.parametrize(("args", "message"), [
    (["--algorithm", "awq", "--data_files", "x.txt"], "--algorithm awq needs the Hugging Face model"),
    (["--algorithm", "gptq", "--quantize_embeddings", "--data_files", "x.txt"],
     "--quantize_embeddings: gptq quantizes MatMul weights"),
    (["--block_size", "48"], "block_size: expected a power of two from 16 to 256"),
    (["--algorithm", "hqq", "--symmetric"], "--symmetric: hqq fits a zero point per block"),
    (["--lm_head"], "--lm_head: applies to Hugging Face models"),
    (["--max_samples", "4"], "--max_samples: rtn uses no calibration data"),
])
def test_cli_refusals_on_onnx(tmp_path: Path, cli, args: list[str], message: str) -> None:
    src = make_onnx(tmp_path / "src")
    code, _, err = cli("quantize", "-m", str(src), "-o", str(tmp_path / "o"), *args, "--dry_run")
    assert code == 2 and message in err, err


def test_gptq_on_onnx_needs_the_tokenizer(tmp_path: Path, cli) -> None:
    src = make_onnx(tmp_path / "src")
    text = tmp_path / "calib.txt"
    text.write_text("some calibration text\n" * 20)
    code, _, err = cli("quantize", "-m", str(src), "-o", str(tmp_path / "o"), "--algorithm", "gptq",
                       "--data_files", str(text), "--cache_dir", str(tmp_path / "c"), "--log_level", "4")
    assert code == 2 and "needs the model's tokenizer beside" in err, err
    assert not (tmp_path / "o").exists()


def test_cli_onnx_gptq_flags_reach_the_pass(tmp_path: Path, cli) -> None:
    src = make_onnx(tmp_path / "src")
    text = tmp_path / "calib.jsonl"
    text.write_text('{"body": "some text"}\n')
    code, out, err = cli("quantize", "-m", str(src), "--algorithm", "gptq", "--precision", "int8",
                         "--block_size", "64", "--symmetric", "--act_order", "--damp_percent", "0.05",
                         "--accuracy_level", "4", "--nodes_to_exclude", "fc2", "--data_files", str(text),
                         "--text_field", "body", "--max_samples", "16", "--max_seq_len", "64",
                         "-o", str(tmp_path / "o"), "--dry_run")
    assert code == 0, err
    cfg = json.loads(out)["passes"]["quantize"]
    assert cfg == {"type": "OnnxGptqQuantization", "bits": 8, "block_size": 64, "is_symmetric": True,
                   "act_order": True, "damp_percent": 0.05, "data_files": [str(text.resolve())],
                   "text_field": "body", "max_samples": 16, "max_seq_len": 64, "accuracy_level": 4,
                   "nodes_to_exclude": ["fc2"]}
