"""int4 base weights with float LoRA inputs: the builder quantizes the LoRA MatMuls too, and
ExtractAdapters turns them back into float inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lora_helpers import genai_logits, torch_logits, workflow

from olivine.testing import record_quality

pytest.importorskip("onnxruntime_genai")


@pytest.mark.quality
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
    errors = {name: float(np.linalg.norm(found[name] - value) / np.linalg.norm(value))
              for name, value in exact.items()}
    record_quality("lora_int4_adapter_rel_error", worst=max(errors.values()))
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] < 0.12, (worst, errors[worst])  # int4, blocks of 32: 0.072 .. 0.073
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
    record_quality("lora_int4_delta_cosine", cosine=cosine)
    assert cosine > 0.99, cosine  # measured 0.9970 .. 0.9976
