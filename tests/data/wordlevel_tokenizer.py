"""A deterministic word-level tokenizer (no training) for the data-component tests.

Words are split on single spaces, so ``"\\n\\n"`` (Olive's default joiner) is one token;
``<s>``/``</s>`` are bos/eos and ``<pad>`` pads. The same builder runs in Olive's venv to
record the expected outputs (tests/data/record_textgen_expected.py).
"""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = Path(__file__).resolve().parents[2] / "examples" / "minilm" / "sentences.jsonl"
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def texts(count: int = 40) -> list[str]:
    """The first ``count`` sentences of examples/minilm/sentences.jsonl."""
    return [json.loads(line)["text"] for line in SENTENCES.read_text().splitlines()[:count]]


def save_tokenizer(folder: Path, count: int = 40) -> Path:
    """A word-level fast tokenizer over ``texts(count)``, saved in ``folder``."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts(count) for w in t.split(" ")})
    vocab = {w: i for i, w in enumerate([*SPECIALS, "\n\n", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(" "), behavior="removed")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s>"
                         "{% endfor %}")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    return folder
