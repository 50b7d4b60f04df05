"""What the LoRA tests share: the base model's spec, the shared LoRA step, workflow and data
config builders, and measurements (conftest modules cannot be imported by name)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from olivine.testing import seed
from olivine_modelbuilder.tinymodel import TinySpec

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "examples" / "lora" / "sonnet_qa.jsonl"
TEMPLATE = "### Question: {instruction}\n### Answer: {response}"

#: Same spec as the model-builder tests: both suites share the cached model.
BASE_SPEC = TinySpec(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     tie_word_embeddings=False, steps=300, seconds=None, batch_size=16, seq_len=48,
                     learning_rate=4e-3, seed=seed())

#: Every attention and MLP projection of the tiny Qwen2.
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: The LoRA step most tests share: 40 steps, rank 8, a learning rate that shows in 40 steps.
#: It sets what differs from Olive's defaults (test_lora_defaults.py checks those): fp32 weights
#: (the export tests compare with fp32 peft), no dropout, no checkpointing, a linear schedule
#: without warmup, every projection, a loss logged each step.
LORA_STEP: dict[str, Any] = {
    "type": "LoRA", "train_data_config": "qa", "lora_r": 8, "lora_alpha": 16,
    "text_template": TEMPLATE, "max_steps": 40, "learning_rate": 3e-3, "logging_steps": 1,
    "per_device_train_batch_size": 4, "seed": seed(), "torch_dtype": "float32",
    "lora_dropout": 0.0, "gradient_checkpointing": False, "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0, "target_modules": PROJECTIONS,
}


def variant_step(kind: str, **options: Any) -> dict[str, Any]:
    """:data:`LORA_STEP` as a ``kind`` step: LoHa, LoKr and QLoRA keep Olive's targets."""
    step = {k: v for k, v in LORA_STEP.items()
            if kind.lower() == "dora" or k != "target_modules"}
    step.update(type=kind, **options)
    return step


def data_config(name: str = "qa", files: list[str] | None = None, **pre: Any) -> dict[str, Any]:
    """A data config over local files (the shipped QA set by default)."""
    return {"name": name, "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_files": files or [str(DATA)]},
            "pre_process_data_config": pre}


def workflow(tmp: Path, model: Path, passes: dict[str, Any], *, isolation: str = "never",
             adapter_path: str | None = None, data: list[dict[str, Any]] | None = None
             ) -> dict[str, Any]:
    """A workflow on ``model`` writing under ``tmp`` (steps in this process unless told)."""
    input_model: dict[str, Any] = {"type": "HfModel", "model_path": str(model)}
    if adapter_path:
        input_model["adapter_path"] = adapter_path
    return {
        "input_model": input_model,
        "systems": {"local": {"type": "LocalSystem", "isolation": isolation, "accelerators": [
            {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "data_configs": data if data is not None else [data_config()],
        "passes": passes,
        "output_dir": str(tmp / "out"),
        "cache_dir": str(tmp / "cache"),
        "log_severity_level": 3,
    }


def perplexity(model: Any, tokenizer: Any, texts: list[str]) -> float:
    """Token-weighted perplexity of ``model`` on ``texts`` (each text + EOS, as trained)."""
    import torch

    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
            batch = torch.tensor([ids])
            loss = model(input_ids=batch, labels=batch).loss
            nll += float(loss) * (len(ids) - 1)
            count += len(ids) - 1
    return math.exp(nll / count)


def torch_logits(model: Any, ids: list[int]) -> Any:
    """Logits of every position for one sequence (numpy ``[len, vocab]``)."""
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def genai_logits(folder: str | Path, ids: list[int], adapter: str | Path | None = None) -> Any:
    """onnxruntime-genai's logits for the prompt ``ids`` (one thread), with an adapter or none."""
    import json

    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": 1, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 8)
    generator = og.Generator(model, params)
    if adapter is not None:
        adapters = og.Adapters(model)
        adapters.load(str(adapter), "adapter")
        generator.set_active_adapter(adapters, "adapter")
    generator.append_tokens(ids)
    return np.array(generator.get_output("logits"))[0]
