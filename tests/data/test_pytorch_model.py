"""Olive's current ``PyTorchModel``: ``model_path``, ``model_loader``, ``model_script``,
``script_dir``, ``io_config``, ``dummy_inputs_func`` at the top level, exported by
``OnnxConversion`` and checked here against torch on inputs of another batch size.

The model script is written the way the recipes' scripts are (it even imports Olive's
``Registry``), with a tiny module of two inputs and two outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import olivine
from olivine.cli import main

MODEL_SCRIPT = '''
import torch
from olive.data.registry import Registry  # as the recipes' model scripts do

from helpers import Tiny  # a module beside the script: script_dir is on sys.path


def model_loader(model_path):
    model = Tiny()
    model.load_state_dict(torch.load(model_path))
    return model


def dummy_inputs(model):
    assert model.model_path.endswith("tiny.pt")
    return (torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.int64))


def io_config(model):
    return {"input_names": ["features", "mask"], "output_names": ["pooled", "scores"],
            "dynamic_axes": {"features": {"0": "batch", "1": "seq"}, "mask": {"0": "batch", "1": "seq"},
                             "pooled": {"0": "batch"}, "scores": {"0": "batch", "1": "seq"}}}
'''

HELPERS = '''
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 6)
        self.score = torch.nn.Linear(6, 1)

    def forward(self, features, mask):
        hidden = torch.tanh(self.proj(features)) * mask.unsqueeze(-1).to(features.dtype)
        pooled = hidden.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).to(features.dtype)
        return {"pooled": pooled, "scores": self.score(hidden).squeeze(-1)}
'''

IO = {"input_names": ["features", "mask"], "output_names": ["pooled", "scores"],
      "dynamic_axes": {"features": {"0": "batch", "1": "seq"}, "mask": {"0": "batch", "1": "seq"},
                       "pooled": {"0": "batch"}, "scores": {"0": "batch", "1": "seq"}}}


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """A recipe folder: the model script, a helper module and the saved weights."""
    import torch

    code = tmp_path / "code"
    code.mkdir()
    (code / "model_script.py").write_text(MODEL_SCRIPT)
    (code / "helpers.py").write_text(HELPERS)
    sys.path.insert(0, str(code))
    try:
        from helpers import Tiny
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("helpers", None)
    torch.manual_seed(0)
    torch.save(Tiny().state_dict(), tmp_path / "tiny.pt")
    return tmp_path


def _workflow(root: Path, model: dict[str, Any]) -> Path:
    wf = {"input_model": {"type": "PyTorchModel", **model},
          # in this process: the tests stay fast (a child process imports torch again)
          "systems": {"local": {"type": "LocalSystem", "isolation": "never"}},
          "passes": {"convert": {"type": "OnnxConversion", "target_opset": 17}},
          "output_dir": str(root / "out"), "cache_dir": str(root / "cache"),
          "log_severity_level": 3}
    path = root / "wf.json"
    path.write_text(json.dumps(wf))
    return path


def _torch_outputs(root: Path, features: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    sys.path.insert(0, str(root / "code"))
    try:
        from helpers import Tiny
    finally:
        sys.path.remove(str(root / "code"))
        sys.modules.pop("helpers", None)
    model = Tiny()
    model.load_state_dict(torch.load(root / "tiny.pt"))
    with torch.no_grad():
        out = model(torch.from_numpy(features), torch.from_numpy(mask))
    return {k: v.numpy() for k, v in out.items()}


def _check_against_torch(root: Path, onnx_file: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features", "mask"]
    assert [o.name for o in session.get_outputs()] == ["pooled", "scores"]
    rng = np.random.default_rng(1)
    features = rng.standard_normal((3, 7, 8)).astype(np.float32)  # another batch and length
    mask = np.ones((3, 7), np.int64)
    mask[1, 4:] = 0
    pooled, scores = session.run(None, {"features": features, "mask": mask})
    want = _torch_outputs(root, features, mask)
    np.testing.assert_allclose(pooled, want["pooled"], atol=1e-5)
    np.testing.assert_allclose(scores, want["scores"], atol=1e-5)


def test_model_loader_with_dummy_inputs_func_exports_and_matches_torch(
        recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(recipe)
    result = olivine.run(_workflow(recipe, {
        "model_path": "tiny.pt", "model_loader": "model_loader", "model_script": "model_script.py",
        "script_dir": "code", "io_config": IO, "dummy_inputs_func": "dummy_inputs"}))
    assert result.output_model is not None
    attrs_ = result.output_model.attrs_dict()
    assert max(attrs_["validation_max_abs_diff"].values()) < 1e-5  # the pass checked it too
    _check_against_torch(recipe, result.output_model.model_file())


def test_io_config_as_a_function_and_shapes_without_dummy_inputs_func(
        recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``io_config`` names a function in the script; then fixed shapes instead of a function."""
    monkeypatch.chdir(recipe)
    script = recipe / "code" / "model_script.py"
    model = {"model_path": str(recipe / "tiny.pt"), "model_loader": "model_loader",
             "model_script": str(script), "script_dir": str(recipe / "code"),
             "io_config": "io_config", "dummy_inputs_func": "dummy_inputs"}
    first = olivine.run(_workflow(recipe, model))
    assert first.output_model is not None
    _check_against_torch(recipe, first.output_model.model_file())
    assert olivine.run(_workflow(recipe, model)).report["steps"][0]["status"] == "cached"
    # the model's identity covers model_script: editing it invalidates the cached step
    script.write_text(script.read_text() + "\n# edited\n")
    shapes = {**IO, "input_shapes": [[2, 5, 8], [2, 5]], "input_types": ["float32", "int64"]}
    model = {k: v for k, v in model.items() if k != "dummy_inputs_func"}
    result = olivine.run(_workflow(recipe, {**model, "io_config": shapes}))
    assert result.report["steps"][0]["status"] == "ran"
    assert result.output_model is not None
    _check_against_torch(recipe, result.output_model.model_file())


@pytest.mark.parametrize(("model", "message"), [
    ({"model_path": "tiny.pt", "model_script": "code/model_script.py"},
     "input_model.model_loader: required"),
    ({"model_loader": "model_loader", "model_script": "nope.py"},
     "input_model.model_script: no such file: 'nope.py'"),
    ({"model_loader": "model_loader", "model_script": "code/model_script.py",
      "io_config": {"input_name": ["x"]}},
     "io_config.input_name: unknown key (did you mean 'input_names'?)"),
    ({"model_loader": "model_loader", "model_script": "code/model_script.py",
      "model_file_format": "PyTorch.Pickle"},
     "input_model.model_file_format: unknown format 'PyTorch.Pickle'"),
])
def test_bad_pytorch_models_are_config_errors(recipe: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str],
                                              model: dict[str, Any], message: str) -> None:
    monkeypatch.chdir(recipe)
    assert main(["run", "--config", str(_workflow(recipe, model))]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (recipe / "out").exists()


def test_a_failing_model_loader_is_named(recipe: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(recipe)
    wf = _workflow(recipe, {"model_path": "missing.pt", "model_loader": "model_loader",
                            "model_script": "code/model_script.py", "script_dir": "code",
                            "io_config": IO, "dummy_inputs_func": "dummy_inputs"})
    assert main(["run", "--config", str(wf)]) == 2
    err = capsys.readouterr().err
    assert "input_model.model_loader: model_loader() failed: FileNotFoundError" in err
    assert not (recipe / "out").exists()
