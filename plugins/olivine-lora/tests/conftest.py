"""Fixtures of the LoRA plugin's tests.

The base model is the tiny Qwen2 that the model-builder tests train on the Sonnets
(about 5 s on one core, cached under the system's temp folder or
``$OLIVINE_TEST_CACHE``). The data is the shipped ``examples/lora/sonnet_qa.jsonl``.
One session-wide LoRA run (40 steps) feeds most tests; each test that needs another
training says why. Torch and ONNX Runtime use one thread each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")
tinymodel = pytest.importorskip("olivine_modelbuilder.tinymodel")

from lora_helpers import BASE_SPEC, DATA, LORA_STEP, TEMPLATE, workflow  # noqa: E402


@pytest.fixture(scope="session")
def base_model(cache_root: Path) -> Path:
    """The tiny Qwen2 chat model (folder with weights and tokenizer)."""
    return tinymodel.cached_model(BASE_SPEC, cache_root / "trained")


@pytest.fixture(scope="session")
def trained(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of the shared LoRA run (``adapter/``, ``olivine_training.json``)."""
    import olivine

    tmp = tmp_path_factory.mktemp("trained")
    result = olivine.run(workflow(tmp, base_model, {"lora": dict(LORA_STEP)}))
    assert result.ok
    return Path(result.output_dir)


@pytest.fixture(scope="session")
def record(trained: Path) -> dict[str, Any]:
    """The shared run's olivine_training.json."""
    return json.loads((trained / "olivine_training.json").read_text())


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """Every row of the shipped set through the template."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return [TEMPLATE.format(**row) for row in rows]


@pytest.fixture(scope="session")
def torch_models(base_model: Path, trained: Path) -> tuple[Any, Any, Any]:
    """``(tokenizer, base model, peft model)`` in eval mode (the peft model wraps a copy)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    base = AutoModelForCausalLM.from_pretrained(base_model).eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model),
                                     str(trained / "adapter")).eval()
    return tokenizer, base, peft


@pytest.fixture(scope="session")
def exported(base_model: Path, trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``olivine generate-adapter`` on the shared adapter (fp32): model folder with LoRA inputs."""
    pytest.importorskip("onnxruntime_genai")
    from olivine.testing import cli_main as main

    tmp = tmp_path_factory.mktemp("exported")
    code = main(["generate-adapter", "-m", str(base_model), "-a", str(trained), "-o",
                 str(tmp / "out"), "--cache_dir", str(tmp / "cache"), "--log_level", "3"])
    assert code == 0
    return tmp / "out"


@pytest.fixture(scope="session")
def other_base(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different base model: the same tokenizer, hidden size 32 instead of 64 (random weights)."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("other-base")
    config = AutoConfig.from_pretrained(base_model)
    config.hidden_size, config.intermediate_size, config.head_dim = 32, 64, 8
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (base_model / name).is_file():
            shutil.copy2(base_model / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def other_adapter(other_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter (random, untrained) for :func:`other_base`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("other-adapter")
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(other_base), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                           "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def write_json() -> Callable[[dict[str, Any], Path], Path]:
    """Write a dict as JSON to a path and return the path."""

    def write(data: dict[str, Any], path: Path) -> Path:
        path.write_text(json.dumps(data, indent=2))
        return path

    return write
