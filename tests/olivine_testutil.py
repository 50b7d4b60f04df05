"""What olivine's own tests share that is private to this repository (import as
``olivine_testutil``; conftest modules clash): paths into the checkout and ../shared, the
test-kit plugin's run log, the recipes' tiny stand-in models, fixtures loaded across plugin
test folders. What a plugin author can use too (``seed``, ``threads``, ``pin_threads``,
``record_quality``, ``make_workflow``, tiny models) is in ``olivine.testing``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from olivine.testing import seed

REPO = Path(__file__).resolve().parents[1]
HELLO_MODEL = REPO / "examples" / "hello" / "model"
SHARED = REPO.parent / "shared"


def executions(runs_file: Path) -> list[str]:
    """``["Scale s1", ...]``: one entry per real pass execution so far."""
    if not runs_file.exists():
        return []
    return [" ".join(line.split()[:2]) for line in runs_file.read_text().splitlines()]


def olivine_subprocess(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m olivine ARGS`` in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "olivine", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


# -- tiny local stand-ins for the recipes' hub models (tests/recipes) -----------------------------
#
# The recipes' LLM passes take 128-wide blocks (gptq/rtn group_size 128), so the tiny decoders
# are 128 wide with a 256-wide MLP; trained briefly on the Sonnets (as olivine's demo model)
# so that their logits are peaked enough for quantized outputs to be compared.

#: The shape and budget of the recipes' tiny decoders (about 10 s to train on one core; cached).
RECIPE_LLM: dict[str, Any] = {
    "vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
    "tie_word_embeddings": True, "steps": 300, "seconds": None, "batch_size": 16, "seq_len": 48,
    "learning_rate": 4e-3}
SENTENCES = REPO / "examples" / "minilm" / "sentences.jsonl"


def trained_llm(cache_root: Path, model_type: str = "qwen3", **changes: Any) -> Path:
    """A tiny ``model_type`` decoder with the Sonnets tokenizer, trained once and cached."""
    from olivine_modelbuilder.tinymodel import TinySpec, cached_model

    spec = TinySpec(model_type=model_type, seed=seed(), **{**RECIPE_LLM, **changes})
    return cached_model(spec, cache_root / "recipes")


def sonnet_prompt_ids(model_dir: Path, line: int = 0) -> list[int]:
    """The chat-template token ids of a user turn holding one Sonnets line (the assistant's open)."""
    from transformers import AutoTokenizer

    from olivine_modelbuilder.tinymodel import chat_turn, sonnets

    text = chat_turn(sonnets()[line % 150][1])
    return list(AutoTokenizer.from_pretrained(model_dir)(text)["input_ids"])


def write_calibration_text(path: Path, count: int = 64) -> Path:
    """JSON lines ``{"text": ...}`` of Sonnets chat turns (a local calibration set)."""
    import json

    from olivine_modelbuilder.tinymodel import training_documents

    path.write_text("".join(json.dumps({"text": t}) + "\n"
                            for t in training_documents(seed())[:count]), encoding="utf-8")
    return path


def sentence_words() -> list[str]:
    """The example sentences of ``examples/minilm`` (a small local English corpus)."""
    import json

    return [json.loads(line)["text"] for line in SENTENCES.read_text().splitlines()]


def tiny_bert_classifier(folder: Path, num_labels: int = 2, max_positions: int = 128) -> Path:
    """A 2-layer BERT sequence classifier (hidden 32) with a word-level uncased tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = sorted({w.strip(".,?!'\"").lower() for s in sentence_words() for w in s.split()} - {""})
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words,
                                ".", ",", "?", "!", "'"]) + "\n")
    # transformers 5 reads the words from ``vocab`` and ignores ``vocab_file`` (every word was
    # [UNK]: sentences of one length tokenized alike); 4.x reads ``vocab_file``
    tokenizer = BertTokenizerFast(vocab=str(vocab), vocab_file=str(vocab), do_lower_case=True)
    assert len(tokenizer) == len(words) + 10, f"the tiny BERT tokenizer has {len(tokenizer)} tokens"
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(3 + 10 * seed())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=max_positions, num_labels=num_labels,
                        initializer_range=0.2)  # wide weights: logits that differ per input
    BertForSequenceClassification(config).eval().save_pretrained(str(folder))
    return folder


def write_sentence_pairs(path: Path, count: int = 32) -> Path:
    """JSON lines ``{"sentence1", "sentence2", "label", "idx"}`` (MRPC's columns) from local text."""
    import json

    texts = sentence_words()
    rows = [{"sentence1": texts[2 * i], "sentence2": texts[2 * i + 1], "label": i % 2, "idx": i}
            for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_random_llm(folder: Path, model_type: str, **overrides: Any) -> Path:
    """An untrained tiny ``model_type`` decoder (the recipes' shape) with the Sonnets tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from olivine_modelbuilder.tinymodel import TinySpec, model_config, train_tokenizer

    shape = {k: v for k, v in RECIPE_LLM.items() if k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings")}
    tokenizer = train_tokenizer(RECIPE_LLM["vocab_size"])
    torch.manual_seed(seed())
    model = AutoModelForCausalLM.from_config(
        model_config(TinySpec(model_type=model_type, **shape), tokenizer, **overrides)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_random_vl(folder: Path, model_type: str = "qwen3_vl") -> Path:
    """An untrained tiny vision-language model (``qwen3_vl``, ``qwen2_5_vl``, or ``qwen3_5``
    with three linear-attention layers and one full one): the recipes' 128-wide text part, a one-block
    vision tower, the Sonnets tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from olivine_modelbuilder.tinymodel import train_tokenizer

    tokenizer = train_tokenizer(RECIPE_LLM["vocab_size"])
    text: dict[str, Any] = {
        "vocab_size": len(tokenizer), "hidden_size": 128, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 32, "max_position_embeddings": 256, "tie_word_embeddings": True,
        "bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "rope_scaling": {"rope_type": "default", "mrope_section": [4, 6, 6],
                         "mrope_interleaved": True}}
    vision: dict[str, Any] = {"depth": 1, "hidden_size": 32, "out_hidden_size": 128,
                              "num_heads": 2, "intermediate_size": 64}
    if model_type == "qwen3_vl":
        vision["deepstack_visual_indexes"] = [0]
    elif model_type == "qwen2_5_vl":  # untied, mrope without interleaving, windowed vision
        text.update(tie_word_embeddings=False, rope_scaling={
            "type": "mrope", "rope_type": "default", "mrope_section": [4, 6, 6]})
        vision["fullatt_block_indexes"] = [0]
    elif model_type == "qwen3_5":
        del text["rope_scaling"]
        text.update(num_hidden_layers=4, head_dim=64, linear_key_head_dim=32,
                    linear_value_head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4,
                    layer_types=["linear_attention"] * 3 + ["full_attention"],
                    rope_parameters={"rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                     "rope_type": "default", "mrope_section": [2, 3, 3],
                                     "mrope_interleaved": True})
    config = AutoConfig.for_model(model_type, text_config=text, vision_config=vision,
                                  tie_word_embeddings=text["tie_word_embeddings"])
    torch.manual_seed(seed())
    AutoModelForImageTextToText.from_config(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def plugin_tests_module(plugin: str, module: str) -> Any:
    """``plugins/PLUGIN/tests/MODULE.py`` imported by name (its folder put on ``sys.path``), for
    a test that chains with another plugin and reuses what that plugin's tests define."""
    import importlib

    folder = str(REPO / "plugins" / plugin / "tests")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(module)


def encoder_fixtures(module_name: str) -> Any:
    """``plugins/olivine-transformers/tests/conftest.py`` loaded as a module (its tiny-BERT
    fixtures), for the folders that reuse them: conftest modules cannot be imported by name
    (each folder has one)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        module_name, REPO / "plugins" / "olivine-transformers" / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
