"""QLoRA where bitsandbytes has a 4-bit backend (0.46+ has one for CPU): it trains, and merges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lora_helpers import PROJECTIONS, perplexity, variant_step, workflow

pytest.importorskip("bitsandbytes")


def test_qlora_trains_and_merges(base_model: Path, tmp_path: Path, texts: list[str],
                                 torch_models: tuple[Any, Any, Any]) -> None:
    from transformers import AutoModelForCausalLM

    import olivine

    step = variant_step("QLoRA", max_steps=30)
    result = olivine.run(workflow(tmp_path, base_model, {"qlora": step,
                                                         "merge": {"type": "MergeAdapterWeights"}}))
    steps = result.report["steps"]
    trained = Path(steps[0]["output_model"]["path"])
    record = json.loads((trained / "olivine_training.json").read_text())
    assert record["method"] == "qlora" and record["steps"] == 30
    losses = [loss for _, loss in record["losses"]]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    merged = AutoModelForCausalLM.from_pretrained(result.output_dir).eval()
    tokenizer, base, _ = torch_models
    assert perplexity(merged, tokenizer, texts) < 0.5 * perplexity(base, tokenizer, texts)


def test_qlora_quantization_options_reach_bitsandbytes(base_model: Path, tmp_path: Path) -> None:
    import olivine

    step = variant_step("qlora", max_steps=2, quant_type="fp4", double_quant=True,
                        compute_dtype="bfloat16", device_map="auto", save_quant_config=False)
    result = olivine.run(workflow(tmp_path, base_model, {"q": step}))
    record = json.loads((Path(result.output_dir) / "olivine_training.json").read_text())
    assert (record["quant_type"], record["double_quant"], record["compute_dtype"]) == \
        ("fp4", True, "bfloat16")
    # Olive's QLoRA: every 4-bit layer is a target, and the paged optimizer (runs on the CPU)
    assert record["target_modules"] == sorted(PROJECTIONS)
    assert record["training_args"]["optim"] == "paged_adamw_32bit"
    step = {**step, "compute_dtype": None}  # Olive's default: torch_dtype's
    result = olivine.run(workflow(tmp_path / "default", base_model, {"q": step}))
    record = json.loads((Path(result.output_dir) / "olivine_training.json").read_text())
    assert record["compute_dtype"] == "float32"  # the step's torch_dtype
