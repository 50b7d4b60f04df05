"""A workflow written for Olive (its LoRA example's shape) runs unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lora_helpers import DATA

from olivine.testing import record_quality


@pytest.mark.quality
def test_olive_lora_workflow(base_model: Path, tmp_path: Path) -> None:
    import olivine

    config = {
        "input_model": {"type": "PyTorchModel", "config": {"hf_config": {
            "model_name": str(base_model), "task": "text-generation"}}},
        "data_configs": [{
            "name": "qa_train", "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": str(DATA),
                                    "split": "train"},
            "pre_process_data_config": {"strategy": "line-by-line", "max_seq_len": 64,
                                        "text_template": "### Question: {instruction} \n"
                                                         "### Answer: {response}"}}],
        "passes": {
            "lora": {"type": "LoRA", "config": {
                "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "torch_dtype": "float32",
                "target_modules": ["q_proj", "v_proj"], "train_data_config": "qa_train",
                "eval_dataset_size": 0.1,
                "training_args": {"seed": 0, "data_seed": 0, "per_device_train_batch_size": 4,
                                  "per_device_eval_batch_size": 4, "gradient_accumulation_steps": 1,
                                  "gradient_checkpointing": False, "learning_rate": 3e-3,
                                  "max_steps": 12, "logging_steps": 4, "max_grad_norm": 0.3,
                                  "lr_scheduler_type": "constant", "warmup_ratio": 0.03,
                                  "evaluation_strategy": "steps", "eval_steps": 6,
                                  "group_by_length": True, "weight_decay": 0.0}}},
            "merge": {"type": "MergeAdapterWeights"}},
        "engine": {"output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
                   "log_severity_level": 3},
        "systems": {"local_system": {"type": "LocalSystem", "config": {"isolation": "never"}}},
    }
    result = olivine.run(config)
    lora_out = Path(result.report["steps"][0]["output_model"]["path"])
    record = json.loads((lora_out / "olivine_training.json").read_text())
    assert (record["steps"], record["train_rows"], record["eval_rows"]) == (12, 36, 4)
    assert [step for step, _ in record["losses"]] == [4, 8, 12]
    record_quality("lora_olive_eval_ppl_vs_base",
                   ratio=record["eval_perplexity"] / record["eval_perplexity_base"])
    assert record["eval_perplexity"] < record["eval_perplexity_base"]  # ratio measured 0.46 .. 0.49
    assert (Path(result.output_dir) / "model.safetensors").is_file()  # the merged model


def test_olive_training_args_conflict(base_model: Path, tmp_path: Path) -> None:
    import olivine
    from olivine import ConfigError

    step = {"type": "LoRA", "train_data_config": "d", "max_steps": 5,
            "training_args": {"max_steps": 7}}
    config = {"input_model": {"type": "HfModel", "model_path": str(base_model)},
              "data_configs": [{"name": "d", "load_dataset_config": {"data_files": str(DATA)}}],
              "passes": {"lora": step}, "output_dir": str(tmp_path / "o")}
    with pytest.raises(ConfigError, match=r"training_args\.max_steps: 7 conflicts with max_steps: 5"):
        olivine.validate(config)
