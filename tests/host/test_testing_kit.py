"""olivine.testing, the test kit for plugin authors: opt-in loading, models, run_pass, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

import olivine
from olivine.testing import assert_config_error, make_onnx_model

_USES_FIXTURE = """
def test_model(tiny_onnx_model):
    assert (tiny_onnx_model / "model.onnx").is_file()
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
                           "--rootdir", str(folder), *args, str(folder)], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def test_the_kit_is_loaded_only_when_asked_for(tmp_path: Path) -> None:
    for dist in distributions():
        for ep in dist.entry_points:
            assert not (ep.group == "pytest11" and ep.value.startswith("olivine")), dist.metadata["Name"]
    (tmp_path / "test_uses_kit.py").write_text(_USES_FIXTURE)
    without = _pytest(tmp_path)
    assert without.returncode == 1 and "fixture 'tiny_onnx_model' not found" in without.stdout
    with_kit = _pytest(tmp_path, "-p", "olivine.testing")
    assert with_kit.returncode == 0, with_kit.stdout
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["olivine.testing"]\n')
    assert _pytest(tmp_path).returncode == 0


@attrs.frozen
class _ScaleConfig:
    factor: float = attrs.field(default=2.0, metadata=olivine.option(help="multiply the output"))


class _ScaleOutput(olivine.Pass):
    """Multiply the model's output by ``factor`` (a pass no installed plugin registers)."""

    name = "KitScaleOutput"
    Config = _ScaleConfig

    def run(self, model: Any, config: _ScaleConfig, context: olivine.PassContext) -> olivine.OnnxModel:
        """Append a Mul node."""
        import onnx
        from onnx import helper, numpy_helper

        proto = onnx.load(str(model.model_file()))
        out = proto.graph.output[0].name
        proto.graph.node[-1].output[0] = "unscaled"
        proto.graph.initializer.append(numpy_helper.from_array(np.float32(config.factor), "factor"))
        proto.graph.node.append(helper.make_node("Mul", ["unscaled", "factor"], [out]))
        onnx.save_model(proto, str(context.work_dir / "model.onnx"))
        return olivine.OnnxModel(path=str(context.work_dir), onnx_file_name="model.onnx")


def test_run_pass_runs_an_unregistered_pass_class_on_a_real_model(tiny_onnx_model: Path,
                                                                   run_pass: Any) -> None:
    import onnxruntime as ort

    out = run_pass(_ScaleOutput, tiny_onnx_model, {"factor": 3.0})
    assert isinstance(out, olivine.OnnxModel)
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    before = ort.InferenceSession(str(tiny_onnx_model / "model.onnx")).run(None, {"x": x})[0]
    after = ort.InferenceSession(str(out.model_file())).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, 3 * before, rtol=1e-6)
    # the class was loaded for that call only
    assert olivine.get_plugin_host().passes.get("KitScaleOutput") is None


def test_assert_config_error_checks_message_and_exit_code(tiny_onnx_model: Path, tmp_path: Path) -> None:
    bad = {"input_model": {"type": "ONNXModel", "model_path": str(tiny_onnx_model)},
           "passes": {"s": {"type": "OnnxMetadata", "metdata": {}}}}
    error = assert_config_error(bad, "passes.s.metdata: unknown", tmp_path=tmp_path)
    assert isinstance(error, olivine.ConfigError)
    with pytest.raises(AssertionError, match="exit code 2, not 1"):
        assert_config_error(bad, "passes.s.metdata", exit_code=1, tmp_path=tmp_path)
    with pytest.raises(AssertionError, match="does not say"):
        assert_config_error(bad, "something else", tmp_path=tmp_path)
    good = {**bad, "passes": {"s": {"type": "OnnxMetadata"}}}
    with pytest.raises(pytest.fail.Exception, match="the config was accepted and ran"):
        assert_config_error(good, "anything", tmp_path=tmp_path)


def test_onnx_model_with_external_data(tmp_path: Path) -> None:
    folder = make_onnx_model(tmp_path / "m", external_data=True)
    assert (folder / "model.onnx.data").stat().st_size > 16 * 32 * 4
    assert (folder / "model.onnx").stat().st_size < 2000


def test_tiny_hf_model_loads_and_tokenizes_offline(tiny_hf_model: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_model)
    assert model.config.model_type == "llama" and model.config.num_key_value_heads == 2
    ids = tokenizer("the quick brown fox", return_tensors="pt")["input_ids"]
    assert ids.shape == (1, 4) and tokenizer.unk_token_id not in ids[0].tolist()
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 4, len(tokenizer))


def test_input_model_config_reads_handles_and_paths(tiny_onnx_model: Path, tmp_path: Path) -> None:
    from olivine.testing import input_model_config

    tiny_hf_model = tmp_path / "hf"
    tiny_hf_model.mkdir()
    (tiny_hf_model / "config.json").write_text("{}")
    assert input_model_config(tiny_onnx_model) == {"type": "ONNXModel", "model_path": str(tiny_onnx_model)}
    assert input_model_config(tiny_hf_model) == {"type": "HfModel", "model_path": str(tiny_hf_model)}
    handle = olivine.OnnxModel(path=str(tiny_onnx_model), onnx_file_name="model.onnx")
    assert input_model_config(handle)["model_path"] == str(tiny_onnx_model / "model.onnx")
    with pytest.raises(ValueError, match="neither a Hugging Face folder"):
        input_model_config(tiny_onnx_model.parent / "nothing")
