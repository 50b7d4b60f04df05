"""``olivine finetune`` end to end (a child process trains), and its output in ``auto-opt``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from lora_helpers import DATA, TEMPLATE

from olivine.testing import record_quality

Cli = Callable[..., tuple[int, str, str]]


def _flags(base_model: Path, tmp_path: Path) -> list[str]:
    return ["finetune", "-m", str(base_model), "--data_files", str(DATA), "--text_template",
            TEMPLATE, "--max_steps", "20", "--lora_r", "8", "--lora_alpha", "16",
            "--learning_rate", "3e-3", "--logging_steps", "1", "--eval_split", "8",
            "-o", str(tmp_path / "ft"), "--cache_dir", str(tmp_path / "cache")]


def test_dry_run_prints_the_workflow(cli: Cli, base_model: Path, tmp_path: Path) -> None:
    code, out, _ = cli(*_flags(base_model, tmp_path), "--dry_run", "--target_modules",
                       "q_proj,v_proj", "--method", "lora")
    assert code == 0
    wf = json.loads(out)
    step = wf["passes"]["finetune"]
    assert step["type"] == "LoRA" and step["max_steps"] == 20 and step["lora_r"] == 8
    assert step["target_modules"] == ["q_proj", "v_proj"]
    assert step["eval_dataset_size"] == 8 and step["text_template"] == TEMPLATE
    assert wf["data_configs"][0]["load_dataset_config"]["data_files"] == [str(DATA)]
    assert not (tmp_path / "ft").exists()


@pytest.mark.quality
@pytest.mark.slow  # about 20 s: two child processes (training, then the model builder)
def test_finetune_then_auto_opt(cli: Cli, base_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime_genai")
    from lora_helpers import genai_logits, torch_logits
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, out, err = cli(*_flags(base_model, tmp_path), "--save_config")
    assert code == 0, err
    m = re.search(r"trained 20 steps, loss ([\d.]+) -> ([\d.]+), eval perplexity ([\d.]+) -> "
                  r"([\d.]+)", out)
    assert m, out
    record_quality("lora_cli_loss_last_vs_first", ratio=float(m[2]) / float(m[1]))
    record_quality("lora_cli_eval_ppl_vs_base", ratio=float(m[4]) / float(m[3]))
    # measured: loss ratio 0.598 .. 0.605, perplexity ratio 0.117 .. 0.143
    assert float(m[2]) < 0.7 * float(m[1]) and float(m[4]) < 0.5 * float(m[3])
    ft = tmp_path / "ft"
    assert (ft / "adapter" / "adapter_config.json").is_file()
    assert json.loads((ft / "run.json").read_text())["status"] == "succeeded"
    assert json.loads((ft / "config.json").read_text())["passes"]["finetune"]["type"] == "LoRA"
    # the same command again comes from the cache
    code, out, _ = cli(*_flags(base_model, tmp_path)[:-4], "-o", str(tmp_path / "ft2"),
                       "--cache_dir", str(tmp_path / "cache"))
    assert code == 0 and re.search(r"finetune\s+LoRA\s+cached", out), out
    # auto-opt bakes the adapter into an onnxruntime-genai model
    code, _, err = cli("auto-opt", "-m", str(base_model), "--adapter_path", str(ft / "adapter"),
                       "--precision", "fp32", "-o", str(tmp_path / "onnx"), "--cache_dir",
                       str(tmp_path / "cache"), "--log_level", "3")
    assert code == 0, err
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    ids = tokenizer("### Question: What is the opposite of summer?\n### Answer:")["input_ids"]
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model),
                                     str(ft / "adapter")).eval()
    expected = torch_logits(peft, ids)
    assert np.abs(genai_logits(tmp_path / "onnx", ids) - expected).max() < 1e-3
