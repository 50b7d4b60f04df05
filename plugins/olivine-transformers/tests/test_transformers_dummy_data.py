"""The transformers dummy-data containers (registered by olivine-transformers): inputs sized
from the model's config, ``model_name`` filled from the input model as Olive does."""

from __future__ import annotations

from pathlib import Path

from olivine import HfModel
from olivine.config import DataConfig
from olivine.data import resolve


def _first_batch(container: str, model: Path, **load: int) -> dict:
    dc = DataConfig(name="d", type=container, load_dataset_config=dict(load))
    resolved = resolve(dc, HfModel(path=str(model), task="text-generation"))
    assert resolved.components["load_dataset"].params["model_name"] == str(model)
    inputs, _label = next(iter(resolved.create_dataloader()))
    return {k: tuple(v.shape) for k, v in inputs.items()}


def test_decoder_dummy_inputs_carry_a_past_cache(tiny_gpt2: Path) -> None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(tiny_gpt2))
    heads, head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
    shapes = _first_batch("TransformersDummyDataContainer", tiny_gpt2, seq_len=4, past_seq_len=3,
                          max_samples=2)
    assert shapes["input_ids"] == (1, 4) and shapes["attention_mask"] == (1, 7)
    assert shapes["position_ids"] == (1, 4)
    assert shapes["past_key_values.0.key"] == (1, heads, 3, head_dim)
    assert len([k for k in shapes if k.startswith("past_key_values.")]) == 2 * cfg.n_layer
    token = _first_batch("TransformersTokenDummyDataContainer", tiny_gpt2, max_samples=1)
    assert token["input_ids"] == (1, 1) and token["past_key_values.0.value"][2] == 8


def test_encoder_dummy_inputs(tiny_bert: Path) -> None:
    shapes = _first_batch("TransformersPromptDummyDataContainer", tiny_bert, max_samples=1)
    assert shapes == {"input_ids": (1, 8), "attention_mask": (1, 8), "token_type_ids": (1, 8)}
