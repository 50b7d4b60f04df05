"""Adapters in onnxruntime-genai: one export with LoRA inputs, adapter files loaded at run time,
and the merged path (MergeAdapterWeights then ModelBuilder)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lora_helpers import genai_logits, torch_logits, workflow

pytest.importorskip("onnxruntime_genai")

PROMPT = "### Question: What is the opposite of day?\n### Answer: The opposite of day is"


@pytest.fixture(scope="session")
def prompt_ids(torch_models: tuple[Any, Any, Any]) -> list[int]:
    return list(torch_models[0](PROMPT)["input_ids"])


def test_export_has_lora_inputs(exported: Path) -> None:
    from olivine_lora.onnx_adapter import lora_inputs, read_adapter_file

    inputs = lora_inputs(exported / "model.onnx")
    assert len(inputs) == 2 * 7 * 2  # A and B of 7 projections in 2 layers
    params = read_adapter_file(exported / "adapter.onnx_adapter")
    assert set(params) == set(inputs)
    assert params["model.layers.0.attn.q_proj.lora_A.MatMul.weight"].shape == (64, 8)
    assert params["model.layers.1.mlp.down_proj.lora_B.MatMul.weight"].shape == (8, 64)


def test_adapter_file_changes_logits_as_peft_does(exported: Path, torch_models: tuple[Any, Any, Any],
                                                  prompt_ids: list[int]) -> None:
    _, base, peft = torch_models
    torch_base, torch_tuned = torch_logits(base, prompt_ids), torch_logits(peft, prompt_ids)
    genai_base = genai_logits(exported, prompt_ids)
    genai_tuned = genai_logits(exported, prompt_ids, exported / "adapter.onnx_adapter")
    effect = np.abs(torch_tuned - torch_base).max()
    assert effect > 1.0  # the adapter matters
    assert np.abs(genai_base - torch_base).max() < 1e-3  # no adapter: the base model
    assert np.abs((genai_tuned - genai_base) - (torch_tuned - torch_base)).max() < 1e-3 * effect
    # and the adapted model answers as peft does
    assert int(genai_tuned[-1].argmax()) == int(torch_tuned[-1].argmax())


def test_convert_adapters_matches_the_export(exported: Path, trained: Path, tmp_path: Path,
                                             cli: Callable[..., tuple[int, str, str]]) -> None:
    from olivine_lora.onnx_adapter import read_adapter_file

    target = tmp_path / "converted.onnx_adapter"
    code, out, err = cli("convert-adapters", "-a", str(trained / "adapter"), "-m", str(exported),
                         "-o", str(target))
    assert code == 0, err
    assert "28 tensors" in out
    ours, theirs = read_adapter_file(target), read_adapter_file(exported / "adapter.onnx_adapter")
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-6, atol=1e-7)


def _other_adapter(trained: Path, folder: Path) -> Path:
    """A second adapter for the same base: the shared one's matrices shuffled and rescaled."""
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(trained / "adapter", folder)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    rng = np.random.default_rng(1)
    changed = {k: (rng.permutation(v) * rng.uniform(0.5, 1.5)).astype(v.dtype)
               for k, v in tensors.items()}
    save_file(changed, str(folder / "adapter_model.safetensors"))
    return folder


def test_second_adapter_loads_at_run_time(exported: Path, trained: Path, base_model: Path,
                                          tmp_path: Path, prompt_ids: list[int],
                                          torch_models: tuple[Any, Any, Any],
                                          cli: Callable[..., tuple[int, str, str]]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    other = _other_adapter(trained, tmp_path / "other")
    target = tmp_path / "other.onnx_adapter"
    assert cli("convert-adapters", "-a", str(other), "-m", str(exported), "-o", str(target))[0] == 0
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model),
                                     str(other)).eval()
    torch_base = torch_logits(torch_models[1], prompt_ids)
    torch_other = torch_logits(peft, prompt_ids)
    genai_other = genai_logits(exported, prompt_ids, target)
    effect = np.abs(torch_other - torch_base).max()
    assert effect > 1.0
    assert np.abs(genai_other - torch_other).max() < 1e-3 * effect


def test_merged_model_export_matches_peft(base_model: Path, trained: Path, tmp_path: Path,
                                          torch_models: tuple[Any, Any, Any],
                                          prompt_ids: list[int]) -> None:
    import olivine

    wf = workflow(tmp_path, base_model, {
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "fp32"}},
        adapter_path=str(trained / "adapter"), data=[])
    result = olivine.run(wf)
    steps = result.report["steps"]
    assert [s["pass"] for s in steps] == ["MergeAdapterWeights", "ModelBuilder"]
    torch_tuned = torch_logits(torch_models[2], prompt_ids)
    genai_merged = genai_logits(result.output_dir, prompt_ids)
    assert np.abs(genai_merged - torch_tuned).max() < 1e-3
