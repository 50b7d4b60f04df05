"""Fixtures of the olivine-onnx tests: a tiny onnxruntime-genai model built by ModelBuilder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def genai_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer random Qwen2 built by ModelBuilder (fp32, CPU), with a small BPE tokenizer:
    the folder's model.onnx (beside genai_config.json)."""
    pytest.importorskip("olivine_modelbuilder")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from olivine import Accelerator, HfModel, PassContext
    from olivine_modelbuilder.config import ModelBuilderConfig
    from olivine_modelbuilder.passes import ModelBuilder

    root = tmp_path_factory.mktemp("static")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(["a tiny corpus for a tiny tokenizer"], trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         eos_token_id=0, bos_token_id=0, tie_word_embeddings=False)
    hf = root / "hf"
    Qwen2ForCausalLM(config).eval().save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    work = root / "built"
    work.mkdir()
    ModelBuilder().run(HfModel(path=str(hf)), ModelBuilderConfig(precision="fp32"),
                       PassContext(work_dir=work, step_name="mb", accelerator=Accelerator()))
    return work / "model.onnx"
