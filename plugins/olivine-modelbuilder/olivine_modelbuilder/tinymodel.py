"""A tiny chat model made here: a BPE tokenizer and a small Qwen2 trained on the Sonnets.

Used by ``olivine demo`` and by the tests, so that neither needs the network.
The corpus is Shakespeare's Sonnets (public domain), shipped in ``data/``. The
model is trained on chat turns: the user says one line of a sonnet, the
assistant answers with the next.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: A ChatML template (as Qwen2 uses), written beside the tokenizer.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def corpus_text() -> str:
    """The Sonnets, as shipped with this plugin."""
    return resources.files("olivine_modelbuilder").joinpath("data/sonnets.txt").read_text("utf-8")


def sonnets() -> list[list[str]]:
    """Each sonnet as its list of lines (the roman-numeral headings dropped)."""
    poems: list[list[str]] = []
    current: list[str] = []
    for raw in corpus_text().splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.strip("IVXLC") == "" or line in ("THE SONNETS", "by William Shakespeare"):
            if current:
                poems.append(current)
            current = []
            continue
        current.append(line)
    if current:
        poems.append(current)
    return poems


def chat_turn(user: str, assistant: str | None = None) -> str:
    """One exchange in the chat template (the assistant's part open when ``assistant`` is None)."""
    text = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    return text if assistant is None else f"{text}{assistant}<|im_end|>\n"


def training_documents(seed: int = 0) -> list[str]:
    """Chat turns pairing each sonnet line with the next, shuffled."""
    docs = [chat_turn(a, b) for poem in sonnets() for a, b in itertools.pairwise(poem)]
    random.Random(seed).shuffle(docs)
    return docs


def train_tokenizer(vocab_size: int = 1024) -> Any:
    """A byte-level BPE trained on the Sonnets, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([corpus_text()], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@attrs.frozen
class TinySpec:
    """The shape and training budget of a tiny model (its hash names its cache folder)."""

    model_type: str = "qwen2"
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    steps: int = 100_000
    seconds: float | None = 45.0
    batch_size: int = 16
    seq_len: int = 64
    learning_rate: float = 3e-3
    seed: int = 0

    def key(self) -> str:
        """A short hash of the spec and the library versions that shape the result."""
        from importlib.metadata import version

        parts = {**attrs.asdict(self), "torch": version("torch"),
                 "transformers": version("transformers"), "format": 1}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def model_config(spec: TinySpec, tokenizer: Any, **overrides: Any) -> Any:
    """A transformers config of ``spec.model_type`` shaped by ``spec`` (``overrides`` win)."""
    from transformers import AutoConfig

    heads = spec.num_attention_heads
    kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer), "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size, "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": heads, "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.hidden_size // heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    kwargs.update(overrides)
    return AutoConfig.for_model(spec.model_type, **kwargs)


@attrs.frozen
class TrainReport:
    """How a training went."""

    steps: int
    seconds: float
    first_loss: float
    last_loss: float


def train(spec: TinySpec, folder: Path, log: Callable[[str], None] | None = None) -> TrainReport:
    """Train a tiny model per ``spec`` and save it with its tokenizer into ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(spec.seed)
    tokenizer = train_tokenizer(spec.vocab_size)
    ids: list[int] = []
    for doc in training_documents(spec.seed):
        ids.extend(tokenizer.encode(doc))
    data = torch.tensor(ids, dtype=torch.long)
    model = AutoModelForCausalLM.from_config(model_config(spec, tokenizer))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    generator = torch.Generator().manual_seed(spec.seed)
    start = time.perf_counter()
    first = last = float("nan")
    step = 0
    while step < spec.steps and (spec.seconds is None or time.perf_counter() - start < spec.seconds):
        warm = min(1.0, (step + 1) / 20)
        for group in optimizer.param_groups:
            group["lr"] = spec.learning_rate * warm
        offsets = torch.randint(0, len(data) - spec.seq_len - 1, (spec.batch_size,),
                                generator=generator)
        batch = torch.stack([data[o:o + spec.seq_len] for o in offsets.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        last = float(loss.detach())
        first = last if step == 0 else first
        step += 1
        if log is not None and (step % 50 == 0 or step == 1):
            log(f"step {step}: loss {last:.3f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    report = TrainReport(step, round(time.perf_counter() - start, 2), first, last)
    (folder / "olivine_training.json").write_text(json.dumps(
        {"spec": attrs.asdict(spec), "report": attrs.asdict(report)}, indent=2))
    return report


def cached_model(spec: TinySpec, cache_root: Path, log: Callable[[str], None] | None = None,
                 retrain: bool = False) -> Path:
    """The folder of a model trained per ``spec``, trained now unless already cached."""
    final = cache_root / f"{spec.model_type}-{spec.key()}"
    if (final / "olivine_training.json").is_file() and not retrain:
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = cache_root / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    train(spec, staging, log)
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.rename(staging, final)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    return final
