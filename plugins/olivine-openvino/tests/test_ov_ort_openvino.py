"""The encapsulated model on onnxruntime's OpenVINO execution provider, for real.

onnxruntime-openvino replaces the ``onnxruntime`` module and bundles its own OpenVINO
(2025.4 in 1.24.1), so it lives in a virtual environment of its own (README: two commands).
This test builds that environment (slow: an 84 MB wheel), encapsulates an IR here, then in the
second environment (1) runs it with ``OpenVINOExecutionProvider`` and compares with the OpenVINO
runtime here, and (2) measures it with ``olivine run`` (a latency metric) from that environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

from olivine_testutil import REPO

pytest.importorskip("openvino")
VENV = Path(os.environ.get("OLIVINE_ORT_OPENVINO_VENV", "/tmp/olivine-ort-openvino"))


def _venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        venv.create(VENV, with_pip=True)
    probe = subprocess.run([str(python), "-c", "import onnxruntime, olivine_evaluators"],
                           capture_output=True)
    if probe.returncode != 0:
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "onnxruntime-openvino==1.24.1", "numpy", "onnx", "attrs",
                        "filelock", "pluggy", "PyYAML"], check=True, timeout=1200)
        # olivine and the evaluators without their onnxruntime dependency (it would clobber
        # onnxruntime-openvino's module)
        subprocess.run([*pip, "--no-deps", "-e", str(REPO), "-e",
                        str(REPO / "plugins" / "olivine-evaluators")], check=True, timeout=600)
    return python


@pytest.mark.slow
def test_encapsulated_model_runs_on_onnxruntime_openvino(tmp_path: Path) -> None:
    import openvino as ov
    from openvino import opset13 as ops

    python = _venv()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    x = ops.parameter([1, 16], np.float32, name="x")
    y = ops.relu(ops.matmul(x, ops.constant(w), False, False))
    y.output(0).get_tensor().set_names({"y"})
    x.output(0).get_tensor().set_names({"x"})
    (tmp_path / "ir").mkdir()
    ov.save_model(ov.Model([y], [x], "tiny"), str(tmp_path / "ir" / "tiny.xml"))
    import olivine

    result = olivine.run({
        "input_model": {"type": "OpenVINOModel", "model_path": str(tmp_path / "ir")},
        "passes": {"encap": {"type": "OpenVINOEncapsulation", "ov_version": "2025.4"}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 3})
    onnx_file = Path(result.output_dir or "") / "tiny.onnx"
    feed = rng.standard_normal((1, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", feed)
    script = (f"import numpy as np, onnxruntime as ort\n"
              f"s = ort.InferenceSession({str(onnx_file)!r}, providers=['OpenVINOExecutionProvider'],"
              f" provider_options=[{{'device_type': 'CPU'}}])\n"
              f"assert s.get_providers()[0] == 'OpenVINOExecutionProvider', s.get_providers()\n"
              f"np.save({str(tmp_path / 'y.npy')!r}, s.run(None, {{'x': np.load("
              f"{str(tmp_path / 'x.npy')!r})}})[0])\n")
    proc = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "Available frontends: onnx" in proc.stderr:
        # measured on Linux x86_64 (2026-12): every onnxruntime-openvino wheel on PyPI (1.20.0,
        # 1.21.0, 1.22.0, 1.23.0, 1.24.1) bundles libopenvino with the ONNX frontend only (no
        # libopenvino_ir_frontend.so), so the EPContext's .xml cannot be read. pip openvino
        # 2025.4.1 has that frontend, but its wheel (manylinux2014) is built with the old C++
        # string ABI and the bundled libopenvino.so.2541 (manylinux_2_28) with the new one:
        # copied into onnxruntime/capi, dlopen fails ("undefined symbol:
        # _ZN2ov3Any4Base9to_stringEv", 82 of its 269 ov symbols missing); preloading pip's
        # libopenvino instead leaves the provider 40 symbols short. A compiled blob in the
        # EPContext (embed_mode 1, or 0 with a .bin) does not avoid it: OpenVINO 2025.4's CPU
        # import_model reads the blob's model through the IR frontend too (the provider's own
        # ep.context_enable output fails to reload: "EP_FAIL : Unhandled exception type: 1").
        # openvino 2026.x wheels use the new ABI, so a wheel bundling 2026.x may work.
        pytest.xfail("onnxruntime-openvino 1.24.1's Linux wheel bundles no OpenVINO IR frontend, "
                     "and pip openvino 2025.4.1's cannot load beside it (C++ ABI differs)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.maximum(feed @ w, 0), rtol=1e-3,
                              atol=1e-4)

    wf = {"input_model": {"type": "ONNXModel", "model_path": str(onnx_file.parent),
                          "onnx_file_name": onnx_file.name},
          "systems": {"local": {"type": "LocalSystem", "accelerators": [
              {"device": "cpu", "execution_providers": ["OpenVINOExecutionProvider"]}]}},
          "evaluators": {"e": {"metrics": [{"name": "lat", "type": "latency",
                                            "sub_types": [{"name": "avg"}],
                                            "user_config": {"warmup_num": 2,
                                                            "repeat_test_num": 10}}]}},
          "evaluator": "e", "passes": {}, "output_dir": str(tmp_path / "eval"),
          "cache_dir": str(tmp_path / "cache2")}
    (tmp_path / "eval.json").write_text(json.dumps(wf))
    proc = subprocess.run([str(python), "-m", "olivine", "run", "--config",
                           str(tmp_path / "eval.json")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(next((tmp_path / "eval").rglob("run.json")).read_text())
    assert 0 < report["metrics"]["input_model"]["lat"]["avg"] < 1000
