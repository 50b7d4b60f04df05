"""Measurements shared by the LoRA tests (import as ``lora.helpers``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


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
