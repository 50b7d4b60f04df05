"""text_generation_huggingface_pre_process: Olive's corpus strategies on a local JSONL file.

The expected samples were produced by Olive 0.13's own ``text_gen_pre_process`` on the same
rows and the same (deterministic, word-level) tokenizer, with the cases in
textgen_cases.json (tests/data/record_textgen_expected.py records them again).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from olivine.config.sections import DataConfig
from olivine.data import resolve
from olivine.errors import UsageError

pytest.importorskip("transformers")

HERE = Path(__file__).resolve().parent
CASES = json.loads((HERE / "textgen_cases.json").read_text())
EXPECTED = json.loads((HERE / "textgen_olive_expected.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the tokenizer folder, a JSONL file with text, q, a and messages columns)."""
    from wordlevel_tokenizer import save_tokenizer, texts

    root = tmp_path_factory.mktemp("textgen")
    rows = [{"text": t, "q": t.split(" ")[0], "a": t.split(" ")[-1],
             "messages": [{"role": "user", "content": t}]} for t in texts()]
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return save_tokenizer(root / "tok"), data


def samples(corpus: tuple[Path, Path], **options: Any) -> list[tuple[dict[str, Any], Any]]:
    tok, data = corpus
    dc = DataConfig(name="tg", type="HuggingfaceContainer",
                    load_dataset_config={"data_name": "json", "data_files": str(data)},
                    pre_process_data_config={"type": "text_generation_huggingface_pre_process",
                                             "model_name": str(tok), **options})
    resolved = resolve(dc)
    dataset = resolved.pre_process(resolved.load_dataset())
    return [dataset[i] for i in range(len(dataset))]


@pytest.mark.parametrize("case", sorted(CASES))
def test_samples_equal_olives(corpus: tuple[Path, Path], case: str) -> None:
    got = samples(corpus, **CASES[case])
    want = EXPECTED[case]
    assert len(got) == len(want)
    for (inputs, labels), expected in zip(got, want, strict=True):
        assert inputs["input_ids"].tolist() == expected["input_ids"]
        assert labels.tolist() == expected["labels"]
        if expected["attention_mask"] is None:
            assert "attention_mask" not in inputs
        else:
            assert inputs["attention_mask"].tolist() == expected["attention_mask"]
        assert inputs["input_ids"].dtype.name == "int64"


def test_join_windows_are_the_joined_stream(corpus: tuple[Path, Path]) -> None:
    """join: consecutive max_seq_len windows of every row's tokens followed by the joiner's."""
    from transformers import AutoTokenizer
    from wordlevel_tokenizer import texts

    tok = AutoTokenizer.from_pretrained(str(corpus[0]))
    joiner = tok.encode("\n\n", add_special_tokens=False)
    stream = [i for t in texts() for i in tok.encode(t, add_special_tokens=False) + joiner]
    got = samples(corpus, strategy="join", max_seq_len=16, add_special_tokens=False)
    assert len(got) == -(-(len(stream) - 16) // 16)  # windows start only where 17 tokens remain
    for k, (inputs, labels) in enumerate(got):
        assert inputs["input_ids"].tolist() == stream[16 * k:16 * (k + 1)]
        assert labels.tolist() == stream[16 * k:16 * (k + 1)]
    assert joiner and joiner[0] in got[0][0]["input_ids"].tolist()


def test_sliding_window_steps_by_stride(corpus: tuple[Path, Path]) -> None:
    got = samples(corpus, strategy="join-sliding-window", max_seq_len=10, stride=3,
                  max_samples=5)
    ids = [s[0]["input_ids"].tolist() for s in got]
    for a, b in itertools.pairwise(ids):
        assert a[3:] == b[:7]  # the next window starts stride tokens later
    for inputs, labels in got:
        assert (labels[:7] == -100).all() and labels[7:].tolist() == inputs["input_ids"][7:].tolist()


def test_random_strategies_are_deterministic_per_seed(corpus: tuple[Path, Path]) -> None:
    for strategy in ("join-random", "line-by-line-random"):
        first = samples(corpus, strategy=strategy, max_seq_len=9, max_samples=6, random_seed=1)
        again = samples(corpus, strategy=strategy, max_seq_len=9, max_samples=6, random_seed=1)
        other = samples(corpus, strategy=strategy, max_seq_len=9, max_samples=6, random_seed=2)
        ids = [[s[0]["input_ids"].tolist() for s in run] for run in (first, again, other)]
        assert len(ids[0]) == 6 and ids[0] == ids[1] and ids[0] != ids[2]


def test_olivine_aliases_read_as_olives_options(corpus: tuple[Path, Path]) -> None:
    """input_cols, max_length and padding (olivine's earlier options) map to Olive's."""
    olive = dict(CASES["line_by_line_unpadded"])
    aliased = {**olive, "input_cols": ["text"], "max_length": olive.pop("max_seq_len"),
               "padding": "longest"}
    del aliased["max_seq_len"], aliased["pad_to_max_len"]
    got = samples(corpus, **aliased)
    assert [s[0]["input_ids"].tolist() for s in got] == [
        e["input_ids"] for e in EXPECTED["line_by_line_unpadded"]]


@pytest.mark.parametrize(("options", "message"), [
    ({"padding": "sideways"}, "padding 'sideways' is not one of"),
    ({"padding": "longest", "pad_to_max_len": False}, "not both"),
    ({"strategy": "joined"}, "strategy 'joined' is not one of"),
    ({"strategy": "join-sliding-window"}, "needs stride"),
    ({"strategy": "join-random", "max_samples": 2}, "needs random_seed"),
    ({"strategy": "line-by-line-random", "random_seed": 1}, "needs max_samples"),
    ({"strategy": "line-by-line", "use_attention_mask": False}, "needs the attention mask"),
    ({"pad_to_max_len": True, "drop_short_sequences": True}, "cannot both be true"),
    ({"joinr": " "}, "joinr"),
    ({"text_formatting_func": "fmt"}, "user_script"),
    ({"strategy": "line-by-line", "text_cols": ["body"]}, "no column 'body'"),
    ({"max_seq_len": 4096}, "too few tokens for max_seq_len 4096"),
])
def test_bad_options_are_config_errors(corpus: tuple[Path, Path], options: dict[str, Any],
                                       message: str) -> None:
    with pytest.raises(UsageError, match=message):
        samples(corpus, **options)
