"""OnnxConversion of a LoRA-family step's output (the adapter model kind): the adapter is applied
with peft to its base and exported merged or not, and ONNX Runtime computes what the adapted
torch model computes (meta-llama-Llama-3.2-1B-Instruct/olive/{dora,loha,lokr,qlora}.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("peft")
pytest.importorskip("olivine_lora")

from lora_helpers import LORA_STEP, workflow

from olivine.testing import record_quality

#: Adapter steps trained briefly (10 steps): LoRA as the recipes write it, LoHa with Olive's names.
STEPS: dict[str, dict[str, Any]] = {
    "lora": {**LORA_STEP, "max_steps": 10, "learning_rate": 3e-3},
    "loha": {**{k: v for k, v in LORA_STEP.items() if k not in ("lora_r", "lora_alpha")},
             "type": "LoHa", "r": 4, "alpha": 8, "rank_dropout": 0.0, "max_steps": 10,
             "learning_rate": 2e-2},
    "dora": {**LORA_STEP, "type": "DoRA", "max_steps": 10},
    "lokr": {**{k: v for k, v in LORA_STEP.items() if k not in ("lora_r", "lora_alpha")},
             "type": "LoKr", "r": 4, "alpha": 8, "decompose_factor": -1, "max_steps": 10,
             "learning_rate": 2e-2},
}
#: MatMuls of the tiny Qwen2 exported without adapter ops: (7 linears + 2 attention) x 2 + head.
BASE_MATMULS = 19
IDS = np.array([[5, 90, 120, 7, 33, 41, 250, 9], [8, 8, 11, 200, 4, 17, 3, 60]], dtype=np.int64)


def _torch_logits(base: Path, adapter: Path | None) -> np.ndarray:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager")
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        ids = torch.from_numpy(IDS)
        return model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.numpy()


def _ort_logits(folder: Path) -> tuple[np.ndarray, Any]:
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {"input_ids": IDS, "attention_mask": np.ones_like(IDS)}
    names = {i.name for i in session.get_inputs()}
    if "position_ids" in names:
        feeds["position_ids"] = np.broadcast_to(np.arange(IDS.shape[1]), IDS.shape).copy()
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return session.run(["logits"], feeds)[0], graph


@pytest.mark.parametrize(("kind", "merge"), [
    ("lora", False), ("lora", True), ("loha", False),
    pytest.param("dora", False, marks=pytest.mark.slow),
    pytest.param("lokr", False, marks=pytest.mark.slow),
    pytest.param("lokr", True, marks=pytest.mark.slow),
])
def test_adapter_step_converts_and_matches_peft(kind: str, merge: bool, base_model: Path,
                                                tmp_path: Path) -> None:
    import olivine

    result = olivine.run(workflow(tmp_path, base_model, {
        "train": dict(STEPS[kind]),
        "convert": {"type": "OnnxConversion", "merge_adapter_weights": merge,
                    "save_metadata_for_token_generation": True}}))
    assert result.ok
    steps = result.report["steps"]
    assert steps[0]["output_model"]["kind"] == "adapter"
    adapter = Path(steps[0]["output_model"]["path"]) / "adapter"
    peft_type = json.loads((adapter / "adapter_config.json").read_text())["peft_type"]
    assert peft_type == ("LORA" if kind == "dora" else kind.upper())
    out = Path(result.output_dir)
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    got, graph = _ort_logits(out)
    want = _torch_logits(base_model, adapter)
    base = _torch_logits(base_model, None)
    effect = float(np.abs(want - base).max())
    diff = float(np.abs(got - want).max())
    record_quality(f"conversion_{kind}_{'merged' if merge else 'unmerged'}", max_abs_diff=diff,
                   adapter_effect=effect)
    # the adapter changes the logits (measured max abs change 6.5 .. 6.8 after 10 steps, every
    # kind) and the export keeps it: ORT vs peft in float32, measured max abs diff 2.4e-6 ..
    # 4.3e-6 (all six cases); tolerance 1e-4
    assert effect > 0.05, effect
    assert diff < 1e-4, diff
    matmuls = sum(n.op_type == "MatMul" for n in graph.node)
    if merge:  # the base graph: 7 linears and 2 attention MatMuls per layer, then the LM head
        assert matmuls == BASE_MATMULS, matmuls
    elif kind == "lora":  # Olive's default: lora_A and lora_B MatMuls beside each adapted linear
        assert matmuls == BASE_MATMULS + 2 * _adapted_layers(adapter), matmuls
    elif kind == "dora":  # those, plus B @ A for the weight norm of each adapted linear
        assert matmuls > BASE_MATMULS + 2 * _adapted_layers(adapter), matmuls
    else:  # LoHa, LoKr: the update is built from its factors in the graph, applied as a MatMul
        assert matmuls >= BASE_MATMULS + _adapted_layers(adapter), matmuls


def _adapted_layers(adapter: Path) -> int:
    """How many linears of the tiny model (2 layers, 7 linears each) the adapter changes."""
    targets = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    linears = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    if isinstance(targets, str):  # "all-linear" (Olive's LoHa default) or a regex
        return 2 * len(linears) if targets == "all-linear" else 0
    return 2 * len([t for t in linears if t in targets])
