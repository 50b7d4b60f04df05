"""What needs olivine-modelbuilder's side of the integration (skipped until it is there):
ModelBuilder taking LoRA's adapter output, ``auto-opt --adapter_path`` taking the output
folder of ``olivine finetune``, and ``olivine generate --adapter FILE``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lora_helpers import LORA_STEP, genai_logits, torch_logits, workflow

pytest.importorskip("onnxruntime_genai")
Cli = Callable[..., tuple[int, str, str]]
PROMPT = "### Question: Give a word that rhymes with night.\n### Answer:"


def test_lora_modelbuilder_extract_chain(base_model: Path, tmp_path: Path,
                                         torch_models: tuple[Any, Any, Any]) -> None:
    """Olive's chain in one workflow: LoRA -> ModelBuilder -> ExtractAdapters."""
    import olivine

    result = olivine.run(workflow(tmp_path, base_model, {
        "lora": dict(LORA_STEP), "builder": {"type": "ModelBuilder", "precision": "fp32"},
        "extract": {"type": "ExtractAdapters"}}))
    tokenizer, base, peft = torch_models  # the same LoRA step and seed: the same adapter
    ids = tokenizer(PROMPT)["input_ids"]
    out = Path(result.output_dir)
    delta = torch_logits(peft, ids) - torch_logits(base, ids)
    got = genai_logits(out, ids, out / "adapter.onnx_adapter") - genai_logits(out, ids)
    assert np.abs(got - delta).max() < 1e-3 * np.abs(delta).max()


def test_generate_with_adapter(exported: Path, other_adapter: Path, tmp_path: Path,
                               cli: Cli, torch_models: tuple[Any, Any, Any]) -> None:
    import torch

    tokenizer, base, peft = torch_models
    ids = tokenizer(PROMPT)["input_ids"]
    args = ["generate", "-m", str(exported), "-p", PROMPT, "--max_length", str(len(ids) + 6),
            "--threads", "1"]
    code, plain, _ = cli(*args)
    assert code == 0
    code, tuned, _ = cli(*args, "--adapter", str(exported / "adapter.onnx_adapter"))
    assert code == 0 and tuned != plain
    for model, text in ((base, plain), (peft, tuned)):  # greedy, as peft and torch say
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)
        expected = tokenizer.decode(out[0][len(ids):], skip_special_tokens=True)
        assert text.strip() == expected.strip()
    loose = tmp_path / "other.onnx_adapter"
    assert cli("convert-adapters", "-a", str(other_adapter), "-o", str(loose))[0] == 0
    code, _, err = cli(*args, "--adapter", str(loose))
    assert code == 2 and "made for a different base model" in err


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_auto_opt_takes_the_finetune_folder(base_model: Path, trained: Path, tmp_path: Path,
                                            cli: Cli, torch_models: tuple[Any, Any, Any]) -> None:
    code, _, err = cli("auto-opt", "-m", str(base_model), "--adapter_path", str(trained),
                       "--precision", "fp32", "-o", str(tmp_path / "onnx"), "--cache_dir",
                       str(tmp_path / "cache"), "--log_level", "3")
    assert code == 0, err
    tokenizer, _, peft = torch_models
    ids = tokenizer(PROMPT)["input_ids"]
    assert np.abs(genai_logits(tmp_path / "onnx", ids) - torch_logits(peft, ids)).max() < 1e-3
