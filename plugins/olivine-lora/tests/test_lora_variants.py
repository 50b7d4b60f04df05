"""DoRA, LoHa and LoKr: each trains the tiny model, changes its outputs, and merged then built
by ModelBuilder, onnxruntime-genai computes what peft computes in torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lora_helpers import genai_logits, torch_logits, variant_step, workflow

from olivine.testing import record_quality

PROMPT = "### Question: What is the opposite of day?\n### Answer: The opposite of day is"

#: Per variant: the pass type as the recipes write it, its options, and what peft saves.
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "dora": ({"lora_r": 8, "lora_alpha": 16}, "LORA"),
    "loha": ({"r": 4, "alpha": 8, "rank_dropout": 0.0, "learning_rate": 2e-2}, "LOHA"),
    "lokr": ({"r": 4, "alpha": 8, "decompose_factor": -1, "learning_rate": 2e-2}, "LOKR"),
}


def _step(kind: str) -> dict[str, Any]:
    options, _ = VARIANTS[kind]
    step = {k: v for k, v in variant_step(kind).items() if k not in ("lora_r", "lora_alpha")}
    step.update(max_steps=20, **options)
    return step


@pytest.mark.quality
@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_variant_trains_merges_and_runs_in_ort(kind: str, base_model: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import olivine

    pytest.importorskip("onnxruntime_genai")
    result = olivine.run(workflow(tmp_path, base_model, {
        "train": _step(kind), "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "fp32"}}))
    assert result.ok
    steps = result.report["steps"]
    assert [s["pass"] for s in steps] == [{"dora": "DoRA", "loha": "LoHa", "lokr": "LoKr"}[kind],
                                          "MergeAdapterWeights", "ModelBuilder"]
    trained = Path(steps[0]["output_model"]["path"])
    record = json.loads((trained / "olivine_training.json").read_text())
    assert record["method"] == kind and record["steps"] == 20
    projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert record["target_modules"] == (projections if kind == "dora" else "all-linear")  # Olive's
    losses = [loss for _, loss in record["losses"]]
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    record_quality(f"{kind}_loss_last_vs_first", ratio=last / first)
    # measured (seeds 0-2): dora 0.66 .. 0.68, loha 0.50 .. 0.53, lokr 0.58 .. 0.61
    assert last < 0.85 * first, (first, last)
    adapter = json.loads((trained / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == VARIANTS[kind][1]
    assert adapter.get("use_dora", False) == (kind == "dora")
    assert steps[0]["output_model"]["attributes"]["peft_type"] == VARIANTS[kind][1]

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    base = AutoModelForCausalLM.from_pretrained(base_model).eval()
    ids = list(tokenizer(PROMPT)["input_ids"])
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model),
                                      str(trained / "adapter")).eval()
    torch_base, torch_tuned = torch_logits(base, ids), torch_logits(tuned, ids)
    effect = float(np.abs(torch_tuned - torch_base).max())
    assert effect > 0.5, effect  # the adapter changes the outputs; measured 7.0 .. 11.4
    ort = genai_logits(result.output_dir, ids)  # merged, built, run by onnxruntime-genai
    diff = float(np.abs(ort - torch_tuned).max())
    record_quality(f"{kind}_merged_ort_vs_peft", max_abs=diff, effect=effect)
    assert diff < 1e-3, (diff, effect)  # fp32 all the way; measured 3.3e-6 .. 6.2e-6
