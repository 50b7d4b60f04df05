"""int4 base weights with float LoRA inputs: the builder quantizes the LoRA MatMuls too, and
ExtractAdapters turns them back into float inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lora.conftest import workflow
from lora.helpers import genai_logits, torch_logits

pytest.importorskip("onnxruntime_genai")


def test_int4_export_with_adapter_inputs(base_model: Path, trained: Path, tmp_path: Path,
                                         torch_models: tuple[Any, Any, Any]) -> None:
    import olivine
    from olivine_lora.adapters import read_adapter
    from olivine_lora.onnx_adapter import (
        convert_peft_adapter,
        lora_inputs,
        read_adapter_file,
    )

    wf = workflow(tmp_path, base_model, {
        "builder": {"type": "ModelBuilder", "precision": "int4"},
        "extract": {"type": "ExtractAdapters"}}, adapter_path=str(trained / "adapter"), data=[])
    result = olivine.run(wf)
    folder = Path(result.output_dir)
    inputs = lora_inputs(folder / "model.onnx")
    assert len(inputs) == 28
    # the builder had quantized the LoRA weights; the file holds them dequantized
    exact = convert_peft_adapter(read_adapter(trained / "adapter"), inputs)
    found = read_adapter_file(folder / "adapter.onnx_adapter")
    for name, value in exact.items():
        error = np.linalg.norm(found[name] - value) / np.linalg.norm(value)
        assert error < 0.12, (name, error)  # int4 with blocks of 32: about 7% measured
    # with the exact file, the int4 model moves its logits the way peft moves the fp32 model's
    tokenizer, base, peft = torch_models
    ids = tokenizer("### Question: Give a word that rhymes with day.\n### Answer:")["input_ids"]
    torch_delta = torch_logits(peft, ids) - torch_logits(base, ids)
    exact_file = tmp_path / "exact.onnx_adapter"
    from olivine_lora.onnx_adapter import write_adapter_file

    write_adapter_file(exact, exact_file)
    genai_delta = genai_logits(folder, ids, exact_file) - genai_logits(folder, ids)
    cosine = float((genai_delta * torch_delta).sum() /
                   (np.linalg.norm(genai_delta) * np.linalg.norm(torch_delta)))
    assert cosine > 0.99, cosine  # 0.997 measured
