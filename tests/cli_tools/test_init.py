"""``olivine init``: Olive's wizard. Answers files drive it without prompts; one test types the
answers on stdin (plain prompts, as through a pipe), Back included; one lets it write a
workflow config through the command it generated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CASES = [
    ({"model_type": "pytorch", "source_type": "hf", "model_path": "org/model", "operation": "optimize",
      "mode": "auto", "provider": "CUDAExecutionProvider", "precision": "int4"},
     "olivine optimize -m org/model --provider CUDAExecutionProvider --precision int4 "
     "-o ./olive-output"),
    ({"model_type": "onnx", "model_path": "m.onnx", "operation": "quantize", "quant_type": "static",
      "calibration_source": "local", "data_files": "calib.txt", "output_dir": "q"},
     "olivine quantize -m m.onnx --precision int8 --implementation ort --data_files calib.txt -o q"),
    ({"model_type": "pytorch", "source_type": "local", "model_path": "./llm", "operation": "quantize",
      "algorithm": "awq", "quant_precision": "uint4", "calibration_source": "hf"},
     "olivine quantize -m ./llm --algorithm awq --precision uint4 --implementation awq "
     "-d Salesforce/wikitext --subset wikitext-2-raw-v1 --split train --max_samples 128 "
     "-o ./olive-output"),
    ({"model_type": "pytorch", "source_type": "hf", "model_path": "org/llm", "operation": "finetune",
      "method": "qlora", "lora_r": "16", "data_source": "local", "data_files": "train.jsonl",
      "text_mode": "template", "text_template": "Q: {q} A: {a}", "torch_dtype": "float32"},
     "olivine finetune -m org/llm --method qlora --lora_r 16 --lora_alpha 16 -d nouse --data_files "
     "train.jsonl --text_template 'Q: {q} A: {a}' --max_seq_len 1024 --max_samples 256 "
     "--torch_dtype float32 -o ./olive-output"),
    ({"model_type": "pytorch", "source_type": "hf", "model_path": "org/m", "operation": "optimize",
      "mode": "custom", "operations": ["export", "quantize"], "exporter": "dynamo",
      "torch_dtype": "float16", "algorithm": "rtn", "quant_precision": "int8",
      "provider": "QNNExecutionProvider"},
     "olivine optimize -m org/m --provider QNNExecutionProvider --precision int8 --exporter "
     "dynamo_exporter -o ./olive-output"),
    ({"model_type": "onnx", "model_path": "m.onnx", "operation": "tune_session", "device": "gpu",
      "io_bind": "yes"},
     "olivine tune-session-params -m m.onnx --device gpu --providers_list CUDAExecutionProvider "
     "--io_bind -o ./olive-output"),
    ({"model_type": "diffusers", "variant": "flux", "model_path": "org/flux", "operation": "lora",
      "lora_r": "16", "data_source": "local", "data_dir": "imgs", "max_train_steps": "500",
      "merge_lora": True},
     "olivine diffusion-lora -m org/flux --model_variant flux -r 16 --alpha 16 --lora_dropout 0.0 "
     "-d imgs --max_train_steps 500 --learning_rate 1e-4 --merge_lora -o ./olive-output"),
]


@pytest.mark.parametrize(("answers", "command"), CASES)
def test_answers_file_gives_olives_command(answers: dict[str, Any], command: str, tmp_path: Path,
                                           cli: Any) -> None:
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({**answers, "action": "command"}))
    code, out, err = cli("init", "--answers", str(path))
    assert code == 0, err
    assert f"\n  {command}\n" in out


def test_answers_for_olive_and_flags(tmp_path: Path, cli: Any) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text("model_type: onnx\nmodel_path: m.onnx\noperation: convert_precision\n"
                    "action: command\n")
    code, out, err = cli("init", "--answers", str(path), "--prog", "olive", "-o", "out",
                         "--answer", "output_dir=elsewhere")
    assert code == 0, err
    assert "\n  olive run-pass --pass-name OnnxFloatToFloat16 -m m.onnx -o elsewhere\n" in out


def test_bad_answers(tmp_path: Path, cli: Any) -> None:
    code, _, err = cli("init", "--answer", "model_type=tensorflow")
    assert code == 2 and "model_type" in err and "pytorch, onnx, diffusers" in err
    code, _, err = cli("init", "--answer", "model_type=onnx")
    assert code == 2 and "no answer for 'model_path'" in err
    code, _, err = cli("init", "--answer", "model_type=onnx", "--answer", "model_path=m.onnx",
                       "--answer", "operation=graph_opt", "--answer", "action=command",
                       "--answer", "precison=int4")
    assert code == 2 and "precison" in err and "not asked" in err
    code, _, err = cli("init", "--answers", str(tmp_path / "missing.json"))
    assert code == 2 and "--answers" in err


def test_interactive_through_stdin(tmp_path: Path) -> None:
    """Typed answers: ONNX, a path, then Back from the operation to the path, another path,
    Optimize, CPU, FP32, the default output folder, Generate command, do not run."""
    typed = "2\nfirst.onnx\nb\nsecond.onnx\n1\n1\n4\n\n1\nn\n"
    done = subprocess.run([sys.executable, "-m", "olivine", "init", "--plain"], input=typed,
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "What type of model do you want to optimize?" in done.stdout
    assert "\n  olivine optimize -m second.onnx --provider CPUExecutionProvider --precision fp32 " \
           "-o ./olive-output\n" in done.stdout
    done = subprocess.run([sys.executable, "-m", "olivine", "init", "--plain"], input="2\n",
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "input ended" in done.stderr


def test_config_action_writes_the_workflow(tmp_path: Path) -> None:
    """The config action runs the generated command with --save_config and --dry_run."""
    pytest.importorskip("olivine_modelbuilder")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model = tmp_path / "tiny"
    model.mkdir()
    config = json.loads((Path(__file__).parent / "data" / "tiny-qwen2-config.json").read_text())
    config.update(hidden_size=64, intermediate_size=128)  # head size 16, as ORT's CPU GQA needs
    (model / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).save_pretrained(model)
    from olivine_modelbuilder.tinymodel import train_tokenizer

    train_tokenizer(96).save_pretrained(model)  # the config's vocabulary size
    answers = {"model_type": "pytorch", "source_type": "local", "model_path": str(model),
               "operation": "export", "exporter": "model_builder", "export_precision": "fp32",
               "output_dir": str(tmp_path / "out"), "action": "config"}
    (tmp_path / "a.json").write_text(json.dumps(answers))
    done = subprocess.run([sys.executable, "-m", "olivine", "init", "--answers", "a.json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert f"run --config {tmp_path / 'out' / 'config.json'}" in done.stdout
    steps = list(config["passes"].values())
    assert steps[0]["type"] == "ModelBuilder" and steps[0]["precision"] == "fp32"
    assert config["input_model"]["model_path"] == str(model)
