"""Helpers shared by the model-builder tests (conftest modules cannot be imported by name)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any


def graph(handle: Any) -> Any:
    """The ONNX graph of a built model (weights not loaded)."""
    import onnx

    return onnx.load(str(Path(handle.path) / handle.onnx_file_name), load_external_data=False).graph


def op_counts(handle: Any) -> collections.Counter[str]:
    """How many nodes of each op type a built model has."""
    return collections.Counter(node.op_type for node in graph(handle).node)


def node_attrs(handle: Any, op_type: str) -> list[dict[str, Any]]:
    """The attributes of every ``op_type`` node, as dicts."""
    import onnx

    return [{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for node in graph(handle).node if node.op_type == op_type]


def genai_greedy(folder: str | Path, ids: list[int], new_tokens: int,
                 suppress_eos: bool = False) -> list[int]:
    """Greedy tokens from onnxruntime-genai (one thread), at most ``new_tokens``.

    ``suppress_eos`` sets min_length so that exactly ``new_tokens`` come out (EOS is
    masked until then, as transformers' ``min_new_tokens`` does).
    """
    import onnxruntime_genai as og

    from olivine_modelbuilder.generate import load_model

    model, _, _ = load_model(folder, threads=1)
    params = og.GeneratorParams(model)
    options: dict[str, Any] = {"max_length": len(ids) + new_tokens, "do_sample": False}
    if suppress_eos:
        options["min_length"] = len(ids) + new_tokens
    params.set_search_options(**options)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    tokens: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def make_family(model_type: str, overrides: dict[str, Any], tokenizer: Any, folder: Path) -> Any:
    """Save a tiny random ``model_type`` model and the tokenizer into ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    from olivine_modelbuilder.tinymodel import TinySpec, model_config

    spec = TinySpec(model_type=model_type, hidden_size=overrides.get("hidden_size", 64),
                    intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
    config = model_config(spec, tokenizer, **overrides)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model
