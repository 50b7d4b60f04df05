"""ModelBuilder with ``metadata_only``: genai_config.json for OnnxConversion's decoder, which
onnxruntime-genai then runs (the chain of the Llama-3.2 LoRA-family recipes); and a target
provider the builder does not know (QNN) built for cpu, said in the log and in run.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mb_helpers import genai_greedy

from olivine.testing import record_quality
from olivine_testutil import plugin_tests_module

pytest.importorskip("onnxruntime_genai")

PROMPT_IDS = [5, 90, 120, 7, 33, 41, 250, 9, 17]


def _workflow(tmp: Path, model: Path, passes: dict[str, Any], provider: str = "CPUExecutionProvider",
              device: str = "cpu", task: str = "text-generation-with-past") -> dict[str, Any]:
    return {
        "input_model": {"type": "HfModel", "model_path": str(model), "task": task},
        "systems": {"local": {"type": "LocalSystem", "isolation": "never", "accelerators": [
            {"device": device, "execution_providers": [provider]}]}},
        "passes": passes, "output_dir": str(tmp / "out"), "cache_dir": str(tmp / "cache"),
        "log_severity_level": 3,
    }


def _genai_logits(folder: Path, ids: list[int], nxt: int) -> np.ndarray:
    """Last-position logits of the prompt, then of the token ``nxt`` decoded through the KV
    cache (onnxruntime-genai, one thread)."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": 1, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 4, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    first = np.array(generator.get_output("logits"))[0, -1]
    generator.append_tokens([nxt])
    second = np.array(generator.get_output("logits"))[0, -1]
    return np.stack([first, second])


def test_metadata_only_on_onnx_conversion_output_runs_in_genai(trained_model: Path,
                                                               torch_model: Any,
                                                               tmp_path: Path) -> None:
    import torch

    import olivine

    result = olivine.run(_workflow(tmp_path, trained_model, {
        "c": {"type": "OnnxConversion", "save_metadata_for_token_generation": True},
        "m": {"type": "ModelBuilder", "metadata_only": True, "precision": "fp32",
              "search": {"max_length": 64}}}))
    assert result.ok
    out = Path(result.output_dir)
    converted = Path(result.report["steps"][0]["output_model"]["path"])
    genai = json.loads((out / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["filename"] == "model.onnx"
    assert genai["search"]["max_length"] == 64
    attributes = result.report["steps"][1]["output_model"]["attributes"]
    # names in the output folder (Olive's absolute paths would point into the cache's tmp)
    assert list(attributes["additional_files"]) == ["config.json", "generation_config.json",
                                              "tokenizer.json", "tokenizer_config.json",
                                              "genai_config.json"]
    assert all((out / name).is_file() for name in attributes["additional_files"])
    assert "provider_fallback" not in attributes
    # the graph is OnnxConversion's, untouched
    assert (out / "model.onnx").read_bytes() == (converted / "model.onnx").read_bytes()
    assert not (converted / "genai_config.json").exists()

    with torch.no_grad():
        logits = torch_model(input_ids=torch.tensor([PROMPT_IDS])).logits[0, -1]
        nxt = int(logits.argmax())
        then = torch_model(input_ids=torch.tensor([[*PROMPT_IDS, nxt]])).logits[0, -1]
    want = np.stack([logits.numpy(), then.numpy()])
    got = _genai_logits(out, PROMPT_IDS, nxt)
    diff = float(np.abs(got - want).max())
    record_quality("metadata_only_genai_vs_torch", max_abs_diff=diff)
    # float32 both sides; measured max abs diff ~2e-6 on the prompt and the first decode step
    assert diff < 1e-4, diff
    tokens = genai_greedy(out, PROMPT_IDS, 6, suppress_eos=True)
    with torch.no_grad():
        ref = torch_model.generate(torch.tensor([PROMPT_IDS]), max_new_tokens=6, min_new_tokens=6,
                                   do_sample=False)[0, len(PROMPT_IDS):].tolist()
    assert tokens == ref


def test_metadata_only_needs_the_saved_config(trained_model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An ONNX decoder alone in its folder: the builder has no config.json to read."""
    import shutil

    import olivine
    from olivine.testing import cli_main as main

    result = olivine.run(_workflow(tmp_path / "convert", trained_model,
                                   {"c": {"type": "OnnxConversion"}}))
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(Path(result.output_dir) / "model.onnx", alone / "model.onnx")
    config = _workflow(tmp_path, trained_model, {
        "m": {"type": "ModelBuilder", "metadata_only": True, "precision": "fp32"}})
    config["input_model"] = {"type": "ONNXModel", "model_path": str(alone / "model.onnx")}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(config))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no config.json beside model.onnx" in err and "Traceback" not in err
    assert "save_metadata_for_token_generation: true" in err


@pytest.mark.parametrize(("metadata_only", "task", "wanted"), [
    (True, "text-generation", "metadata_only: writes genai_config.json for an ONNX model; the "
                              "input is a hf model"),
    (False, None, "the input is an ONNX model: ModelBuilder builds from a Hugging Face model"),
])
def test_metadata_only_and_input_kind_must_agree(metadata_only: bool, task: str | None,
                                                 wanted: str, trained_model: Path,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from olivine.testing import cli_main as main

    passes: dict[str, Any] = {"m": {"type": "ModelBuilder", "metadata_only": metadata_only,
                                    "precision": "fp32"}}
    if task is None:
        passes = {"c": {"type": "OnnxConversion"}, **passes}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(_workflow(tmp_path, trained_model, passes,
                                         task=task or "text-generation-with-past")))
    # refused before the run when ModelBuilder is the first step, else when the step starts
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert wanted in err and "Traceback" not in err


def test_unknown_target_provider_builds_for_cpu_and_says_so(
        trained_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Olive's EP_MAP falls back to cpu for QNN (the aitk qnn_gpu recipes); olivine does the
    same, with a warning in the log and ``provider_fallback`` in the step's record."""
    import olivine

    caplog.set_level(logging.WARNING)
    result = olivine.run(_workflow(tmp_path, trained_model, {
        "m": {"type": "ModelBuilder", "precision": "int4"}},
        provider="QNNExecutionProvider", device="gpu", task="text-generation"))
    assert result.ok
    note = ("the model builder has no QNNExecutionProvider target (it builds for cpu, cuda, dml, "
            "webgpu, NvTensorRtRtx); built for cpu instead, as Olive does")
    assert any(note in r.getMessage() for r in caplog.records)
    run_json = json.loads((Path(result.output_dir) / "run.json").read_text())
    attributes = run_json["steps"][0]["output_model"]["attributes"]
    assert attributes["provider_fallback"].startswith(note)
    assert attributes["execution_provider"] == "cpu"
    genai = json.loads((Path(result.output_dir) / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["session_options"].get("provider_options", []) == []
    assert len(genai_greedy(result.output_dir, PROMPT_IDS, 3, suppress_eos=True)) == 3


@pytest.mark.slow
def test_dora_recipe_chain_runs_in_genai(trained_model: Path, tmp_path: Path) -> None:
    """The chain of meta-llama-Llama-3.2-1B-Instruct/olive/dora.json without its ONNX
    optimization and adapter extraction: DoRA (10 steps), OnnxConversion with the KV cache and
    the DoRA ops unmerged, ModelBuilder metadata_only; genai computes what peft computes."""
    pytest.importorskip("peft")
    pytest.importorskip("olivine_lora")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import olivine

    lora = plugin_tests_module("olivine-lora", "lora_helpers")
    LORA_STEP, data_config = lora.LORA_STEP, lora.data_config
    config = _workflow(tmp_path, trained_model, {
        "d": {**LORA_STEP, "type": "DoRA", "max_steps": 10},
        "c": {"type": "OnnxConversion", "save_metadata_for_token_generation": True},
        "m": {"type": "ModelBuilder", "metadata_only": True, "precision": "fp32"}})
    config["data_configs"] = [data_config()]
    result = olivine.run(config)
    assert result.ok
    adapter = Path(result.report["steps"][0]["output_model"]["path"]) / "adapter"
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(trained_model),
                                      str(adapter)).eval()
    with torch.no_grad():
        logits = tuned(input_ids=torch.tensor([PROMPT_IDS])).logits[0, -1]
        nxt = int(logits.argmax())
        then = tuned(input_ids=torch.tensor([[*PROMPT_IDS, nxt]])).logits[0, -1]
    diff = float(np.abs(_genai_logits(Path(result.output_dir), PROMPT_IDS, nxt)
                        - np.stack([logits.numpy(), then.numpy()])).max())
    record_quality("metadata_only_dora_genai_vs_peft", max_abs_diff=diff)
    # float32; measured 1.7e-6 (TorchScript and dynamo exporters alike)
    assert diff < 1e-4, diff
