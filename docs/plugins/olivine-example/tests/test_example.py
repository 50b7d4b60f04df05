"""Tests of the example plugin: a real ONNX model in, a real ONNX model out.

They use olivine's test kit (``olivine.testing``, loaded by ``-p olivine.testing`` in
``pyproject.toml``): ``run_pass`` runs one pass in a temporary cache and returns the
output model's handle, ``assert_config_error`` checks that a config is rejected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from olivine.testing import make_onnx_model


def _session(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def test_metadata_lands_in_the_model_and_outputs_are_unchanged(tmp_path: Path, run_pass: Any) -> None:
    source = make_onnx_model(tmp_path / "model", external_data=True)
    out = Path(run_pass("OnnxMetadata", source, {"doc_string": "tested", "model_version": 3,
                                                  "metadata": {"team": "olivine"}}).path)
    meta = _session(out).get_modelmeta()
    assert meta.custom_metadata_map == {"team": "olivine"}
    assert meta.description == "tested" and meta.version == 3
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_array_equal(_session(out).run(None, {"x": x})[0],
                                  _session(source).run(None, {"x": x})[0])
    assert (out / "model.onnx.data").exists()  # external data stays external


def test_bad_metadata_key_is_a_config_error(tiny_onnx_model: Path, assert_config_error: Any) -> None:
    assert_config_error(
        {"input_model": {"type": "ONNXModel", "model_path": str(tiny_onnx_model)},
         "passes": {"stamp": {"type": "OnnxMetadata", "metadata": {"a b": "c"}}}},
        "passes.stamp.metadata: key 'a b' must start with a letter or _ and hold only letters, "
        "digits, '_', '.' and '-'")
