"""Tests of the example plugin: a real ONNX model in, a real ONNX model out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

import olivine

MODEL = Path(__file__).resolve().parents[4] / "examples" / "hello" / "model"


def _session(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def test_metadata_lands_in_the_model_and_outputs_are_unchanged(tmp_path: Path) -> None:
    result = olivine.run({
        "input_model": {"type": "ONNXModel", "model_path": str(MODEL)},
        "passes": {"stamp": {"type": "OnnxMetadata", "doc_string": "tested",
                             "model_version": 3, "metadata": {"team": "olivine"}}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 4,
    })
    out = Path(result.output_model.path)
    meta = _session(out).get_modelmeta()
    assert meta.custom_metadata_map == {"team": "olivine"}
    assert meta.description == "tested" and meta.version == 3
    x = np.ones((3, 16), np.float32)
    np.testing.assert_array_equal(_session(out).run(None, {"x": x})[0],
                                  _session(MODEL).run(None, {"x": x})[0])
    assert (out / "model.onnx.data").exists()  # external data stays external


def test_bad_metadata_key_is_a_config_error(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(olivine.ConfigError) as err:
        olivine.validate({"input_model": {"type": "ONNXModel", "model_path": str(MODEL)},
                          "passes": {"stamp": {"type": "OnnxMetadata", "metadata": {"a b": "c"}}}})
    assert err.value.problems == [
        "passes.stamp.metadata: key 'a b' must start with a letter or _ and hold only letters, "
        "digits, '_', '.' and '-'"]
