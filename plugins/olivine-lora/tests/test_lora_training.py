"""LoRA training: the loss falls, perplexity improves, progress is reported, options are honoured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lora_helpers import LORA_STEP, TEMPLATE, data_config, perplexity, workflow

from olivine.testing import record_quality


@pytest.mark.quality
def test_training_loss_falls(record: dict[str, Any]) -> None:
    losses = [loss for _, loss in record["losses"]]
    assert record["steps"] == 40 and len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    record_quality("lora_loss_last_vs_first", ratio=last / first)
    assert last < 0.6 * first, (first, last)  # measured 0.47 .. 0.48
    assert record["trainable_parameters"] == 16384  # r=8 on 7 projections x 2 layers
    assert record["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                        "up_proj", "down_proj"]
    assert record["tokens_per_second"] > 0 and record["tokens_this_run"] > 40 * 4 * 10


@pytest.mark.quality
def test_adapted_perplexity_beats_base(torch_models: tuple[Any, Any, Any], texts: list[str]) -> None:
    tokenizer, base, peft = torch_models
    base_ppl = perplexity(base, tokenizer, texts)
    tuned_ppl = perplexity(peft, tokenizer, texts)
    record_quality("lora_ppl_tuned_vs_base", ratio=tuned_ppl / base_ppl, tuned=tuned_ppl)
    assert tuned_ppl < 0.25 * base_ppl, (base_ppl, tuned_ppl)  # measured 0.046 .. 0.053
    assert tuned_ppl < 20  # measured 9.3 .. 10.8


def test_output_folder_and_handle(trained: Path, base_model: Path) -> None:
    import json

    report = json.loads((trained / "run.json").read_text())
    handle = report["output_model"]
    assert handle["kind"] == "adapter"
    assert handle["base"]["path"] == str(base_model)
    assert handle["attributes"]["lora_r"] == 8
    config = json.loads((trained / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert config["base_model_name_or_path"] == str(base_model)
    assert (trained / "adapter" / "adapter_model.safetensors").stat().st_size > 16384 * 4


def test_progress_is_reported_per_step(base_model: Path, tmp_path: Path) -> None:
    from olivine import Accelerator, HfModel, PassContext
    from olivine.config import DataConfig
    from olivine_lora.config import LoRAConfig
    from olivine_lora.passes import LoRA

    events: list[tuple[float, float | None, str]] = []
    work = tmp_path / "output"
    work.mkdir()
    context = PassContext(work_dir=work, step_name="lora", accelerator=Accelerator(),
                          data_configs={"qa": DataConfig(**data_config())},
                          progress_fn=lambda d, t, m: events.append((d, t, m)))
    step = {k: v for k, v in LORA_STEP.items() if k != "type"}
    step.update(max_steps=6, logging_steps=2)
    handle = LoRA().run(HfModel(path=str(base_model)), LoRAConfig(**step), context)
    steps = [(d, t) for d, t, m in events if m.startswith("step ")]
    assert steps[-1] == (6, 6)
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)
    assert handle.kind == "adapter" and Path(handle.path) == work
    assert sorted(p.name for p in work.iterdir()) == ["adapter", "olivine_training.json"]


@pytest.mark.quality
def test_eval_split_reports_perplexities(base_model: Path, tmp_path: Path) -> None:
    import json

    import olivine

    step = {**LORA_STEP, "max_steps": 20, "eval_dataset_size": 0.2, "logging_steps": 5}
    result = olivine.run(workflow(tmp_path, base_model, {"lora": step}))
    record = json.loads((Path(result.output_dir) / "olivine_training.json").read_text())
    assert (record["train_rows"], record["eval_rows"]) == (32, 8)
    record_quality("lora_eval_ppl_vs_base", ratio=record["eval_perplexity"] / record["eval_perplexity_base"])
    assert record["eval_perplexity"] < 0.5 * record["eval_perplexity_base"]  # measured 0.13 .. 0.15
    assert len(record["losses"]) == 4


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear"])
def test_target_modules(base_model: Path, tmp_path: Path, targets: Any) -> None:
    import json

    import olivine

    step = {**LORA_STEP, "max_steps": 2, "target_modules": targets}
    result = olivine.run(workflow(tmp_path, base_model, {"lora": step}))
    adapter = json.loads((Path(result.output_dir) / "adapter" / "adapter_config.json").read_text())
    expected = {"q_proj", "v_proj"} if isinstance(targets, list) else \
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]} == expected


def test_chat_template_and_join_strategy(base_model: Path, tmp_path: Path) -> None:
    import json

    import olivine

    step = {k: v for k, v in LORA_STEP.items() if k != "text_template"}
    step.update(max_steps=3, use_chat_template=True)
    result = olivine.run(workflow(tmp_path / "chat", base_model, {"lora": step}))
    record = json.loads((Path(result.output_dir) / "olivine_training.json").read_text())
    assert record["train_rows"] == 40 and record["steps"] == 3
    joined = [data_config(strategy="join", max_seq_len=64, text_template=TEMPLATE)]
    step = {**LORA_STEP, "max_steps": 2}
    del step["text_template"]
    result = olivine.run(workflow(tmp_path / "join", base_model, {"lora": step}, data=joined))
    record = json.loads((Path(result.output_dir) / "olivine_training.json").read_text())
    assert record["strategy"] == "join" and record["max_seq_len"] == 64
    assert record["train_rows"] < 40  # rows of 20 tokens joined into blocks of 64
    assert record["tokens_this_run"] >= 2 * 4 * 64


def test_chat_template_renders_turns(base_model: Path) -> None:
    from transformers import AutoTokenizer

    from olivine_lora.data import Rows, TextOptions, render_texts

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    rows = Rows([{"instruction": "Hi?", "response": "Hello."},
                 {"messages": [{"role": "user", "content": "A?"},
                               {"role": "assistant", "content": "B."}]}], "rows")
    texts = render_texts(rows, TextOptions(use_chat_template=True),
                         lambda m: tokenizer.apply_chat_template(m, tokenize=False))
    assert texts == ["<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n",
                     "<|im_start|>user\nA?<|im_end|>\n<|im_start|>assistant\nB.<|im_end|>\n"]
