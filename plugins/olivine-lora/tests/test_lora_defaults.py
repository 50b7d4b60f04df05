"""A LoRA step that sets nothing trains with Olive 0.13's defaults, and ``olivine finetune``
sets what Olive's ``finetune`` command sets.

Olive's values, read from olive/passes/pytorch/lora.py (pass options, ``HFTrainingArguments``,
``QLoRATrainingArguments``), train_utils.py (``gradient_checkpointing``, ``report_to``) and
olive/cli/finetune.py; the rest are transformers' ``TrainingArguments`` defaults, which Olive
leaves alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lora_helpers import DATA, TEMPLATE, data_config, workflow

Cli = Callable[..., tuple[int, str, str]]

#: The training arguments Olive's LoRA pass gives the Trainer when the workflow sets none.
OLIVE_TRAINING = {
    "learning_rate": 2e-4, "lr_scheduler_type": "constant", "num_train_epochs": 3.0,
    "max_steps": -1, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
    "seed": 42, "logging_steps": 500, "save_strategy": "steps", "save_steps": 500,
    "save_total_limit": 1, "eval_strategy": "no",
}


def _checkpointing(args: dict[str, Any]) -> Any:  # transformers 5 calls it activation_...
    return args.get("activation_checkpointing") or args.get("gradient_checkpointing")


def _warmup(args: dict[str, Any]) -> Any:  # transformers 5: a warmup_steps below 1 is a ratio
    return args.get("warmup_ratio") or args.get("warmup_steps")


def _grouped(args: dict[str, Any]) -> bool:  # transformers 5: train_sampling_strategy
    return bool(args.get("group_by_length")) or args.get("train_sampling_strategy") == \
        "group_by_length"


def test_lora_step_without_options_takes_olives_defaults(base_model: Path, tmp_path: Path) -> None:
    from transformers import TrainingArguments

    import olivine

    data = [data_config(text_template=TEMPLATE)]  # the text lives in the data config
    result = olivine.run(workflow(tmp_path, base_model, {"lora": {
        "type": "LoRA", "train_data_config": "qa"}}, data=data))
    step = result.report["steps"][0]
    config = step["config"]  # run.json's effective config of the step
    assert (config["lora_r"], config["lora_alpha"], config["lora_dropout"]) == (64, 16, 0.05)
    assert (config["torch_dtype"], config["target_modules"]) == ("bfloat16", None)
    assert (config["device_map"], config["allow_tf32"]) == ("auto", True)
    out = Path(step["output_model"]["path"])
    record = json.loads((out / "olivine_training.json").read_text())
    assert record["dtype"] == "bfloat16"  # bfloat16 trains on the CPU too
    assert record["target_modules"] == ["q_proj", "v_proj"]  # peft's default for qwen2
    assert record["steps"] == 15  # 40 rows, batch 8, 3 epochs
    args = record["training_args"]
    assert {k: args.get(k) for k in OLIVE_TRAINING} == OLIVE_TRAINING
    assert _warmup(args) == 0.03 and _checkpointing(args) is True and not _grouped(args)
    assert args["optim"] == str(TrainingArguments(output_dir=str(tmp_path)).optim.value)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (64, 16, 0.05)
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]


def test_training_arguments_of_olives_variants(tmp_path: Path) -> None:
    import torch

    from olivine_lora.config import LoRAConfig, QLoRAConfig
    from olivine_lora.train import effective_args, training_arguments

    lora = LoRAConfig(train_data_config="d")
    with_eval = effective_args(training_arguments(lora, tmp_path, "cpu", torch.bfloat16, 10, True))
    # Olive's: "steps" with evaluation data; transformers then evaluates every logging_steps
    assert (with_eval["eval_strategy"], with_eval["eval_steps"]) == ("steps", 500)
    qlora = QLoRAConfig(train_data_config="d")
    args = effective_args(training_arguments(qlora, tmp_path, "cpu", torch.bfloat16, 10, False))
    assert args["optim"] == "paged_adamw_32bit"  # Olive's QLoRATrainingArguments
    mine = QLoRAConfig(train_data_config="d", training_args={"optim": "adamw_torch"})
    args = effective_args(training_arguments(mine, tmp_path, "cpu", torch.float32, 10, False))
    assert args["optim"] == "adamw_torch"
    with pytest.raises(ValueError, match="target_modules: QLoRA adapts every linear layer"):
        QLoRAConfig(train_data_config="d", target_modules=["q_proj"])


def _finetune(base_model: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["finetune", "-m", str(base_model), "--data_files", str(DATA), "--text_template",
            TEMPLATE, "-o", str(tmp_path / "ft"), "--dry_run", *extra]


def test_finetune_dry_run_shows_olives_command_values(cli: Cli, base_model: Path,
                                                      tmp_path: Path) -> None:
    code, out, err = cli(*_finetune(base_model, tmp_path))
    assert code == 0, err
    step = json.loads(out)["passes"]["finetune"]
    # olive finetune: --lora_r 64, --lora_alpha 16, --torch_dtype bfloat16, nothing else
    assert step == {"type": "LoRA", "train_data_config": "train_data", "lora_r": 64,
                    "lora_alpha": 16.0, "torch_dtype": "bfloat16", "text_template": TEMPLATE}
    code, out, err = cli(*_finetune(base_model, tmp_path, "--gradient_checkpointing", "false"))
    assert code == 0 and json.loads(out)["passes"]["finetune"]["gradient_checkpointing"] is False


def test_finetune_qlora_values(cli: Cli, base_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    code, out, err = cli(*_finetune(base_model, tmp_path, "--method", "qlora"))
    assert code == 0, err
    step = json.loads(out)["passes"]["finetune"]
    assert (step["type"], step["save_quant_config"], step["lora_r"], step["torch_dtype"]) == \
        ("QLoRA", False, 64, "bfloat16")  # Olive's command sets save_quant_config false too
    code, _, err = cli(*_finetune(base_model, tmp_path, "--method", "qlora", "--target_modules",
                                  "q_proj"))
    assert code == 2 and "--target_modules: QLoRA adapts every linear layer" in err
