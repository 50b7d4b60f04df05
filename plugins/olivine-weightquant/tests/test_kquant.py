"""OnnxKQuantQuantization and MatMulNBitsToQDQ on a small ONNX model (K = 200: a padded last block).

ONNX Runtime runs every output. Its random weights make int4 noise large: the RMS output error
of k-quant int4 (block 32) is 5.1% of the float output's largest value (RTN asymmetric: 4.9%),
tested below 8%; int8 0.27%, tested below 0.5%. The QDQ form computes the same weights as
MatMulNBits, so with fp32 compute on both sides (accuracy_level 1, and the same for the
MatMulNBits kernel ONNX Runtime fuses DequantizeLinear + MatMul into) the outputs agree within
1e-5 of that scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from olivine.testing import make_workflow

pytest.importorskip("onnxruntime")

import wq_onnx

IDS = np.array([0, 3, 7, 11, 19, 42, 49], dtype=np.int64)


def _run(path: Path) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    # ONNX Runtime fuses DequantizeLinear + MatMul back into MatMulNBits, by default with int8
    # activations (accuracy level 4); level 1 (fp32) makes the QDQ form exact
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"ids": IDS})[0])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def _nodes(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _output(result: Any) -> Path:
    return next(Path(result.output_dir).rglob("*.onnx"))


@pytest.fixture
def float_model(tmp_path: Path) -> Path:
    """Gather -> MatMul (200 x 48) -> Relu -> MatMul (48 x 16), weights in external data."""
    return wq_onnx.make_onnx(tmp_path / "float")


def test_kquant_per_node_settings_run_in_onnxruntime(tmp_path: Path, float_model: Path) -> None:
    import olivine

    passes = {"k": {"type": "OnnxKQuantQuantization", "bits": 4, "block_size": 32, "accuracy_level": 1,
                    "customized_weight_config": {"fc2": {"bits": 8, "group_size": 16}},
                    "save_as_external_data": True}}
    result = olivine.run(make_workflow(tmp_path, float_model, passes))
    out = _output(result)
    assert (out.parent / "model.onnx.data").is_file()  # save_as_external_data honoured
    nodes = {n.name: n for n in _nodes(out)}
    assert set(nodes) == {"embed", "fc1_Q4", "relu", "fc2_Q8"}  # Gather is not k-quant's
    fc1, fc2 = _attrs(nodes["fc1_Q4"]), _attrs(nodes["fc2_Q8"])
    assert (fc1["bits"], fc1["block_size"], fc1["K"], fc1["N"], fc1["accuracy_level"]) == (4, 32, 200, 48, 1)
    assert (fc2["bits"], fc2["block_size"]) == (8, 16)
    assert all(len(nodes[n].input) == 4 for n in ("fc1_Q4", "fc2_Q8"))  # always with zero points
    ref = _run(float_model)
    scale = float(np.abs(ref).max())
    assert _rms(_run(out) - ref) < 0.08 * scale

    passes8 = {"k": {"type": "OnnxKQuantQuantization", "bits": 8}}
    out8 = _output(olivine.run(make_workflow(tmp_path / "b8", float_model, passes8)))
    assert _rms(_run(out8) - ref) < 0.005 * scale
    assert not (out8.parent / "model.onnx.data").exists()  # Olive's default: one file


def test_kquant_bad_option_is_a_config_error(tmp_path: Path, float_model: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from olivine.testing import cli_main as main

    passes = {"k": {"type": "OnnxKQuantQuantization", "customized_weight_config": {"fc1": {"bitz": 8}}}}
    config = tmp_path / "wf.json"
    config.write_text(json.dumps(make_workflow(tmp_path, float_model, passes)))
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "customized_weight_config.fc1.bitz" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("quantizer", "options", "expect"), [
    ({"type": "OnnxBlockWiseRtnQuantization", "bits": 4, "block_size": 32, "is_symmetric": True,
      "accuracy_level": 1},
     {"use_int4": True, "add_zero_point": False}, {"zero_point": False, "transpose": False, "type": 22}),
    ({"type": "OnnxKQuantQuantization", "bits": 4, "block_size": 32, "accuracy_level": 1},
     {"use_transpose_op": True}, {"zero_point": True, "transpose": True, "type": 21}),
    pytest.param({"type": "OnnxKQuantQuantization", "bits": 8, "block_size": 64, "accuracy_level": 1},
                 {"use_signed_int": True}, {"zero_point": True, "transpose": False, "type": 3},
                 marks=pytest.mark.slow),
], ids=["int4-sym-no-zero-point", "uint4-transpose", "int8"])
def test_matmulnbits_to_qdq_computes_the_same(tmp_path: Path, float_model: Path, quantizer: dict[str, Any],
                                             options: dict[str, Any], expect: dict[str, Any]) -> None:
    import onnx

    import olivine

    passes = {"q": quantizer, "d": {"type": "MatMulNBitsToQDQ", **options}}
    result = olivine.run(make_workflow(tmp_path, float_model, passes))
    nbits = Path(result.report["steps"][0]["output_model"]["path"]) / "model.onnx"
    out = _output(result)
    nodes = _nodes(out)
    ops = [n.op_type for n in nodes]
    assert "MatMulNBits" not in ops and ops.count("DequantizeLinear") == 2 and ops.count("MatMul") == 2
    assert ("Transpose" in ops) == expect["transpose"]
    dqs = [n for n in nodes if n.op_type == "DequantizeLinear"]
    assert all((len(n.input) == 3) == expect["zero_point"] for n in dqs)
    model = onnx.load(str(out))
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert {types[n.input[0]] for n in dqs} == {expect["type"]}
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21
    ref = _run(nbits)
    assert float(np.abs(_run(out) - ref).max()) < 1e-5 * float(np.abs(ref).max())
