"""Calibration text from local files and workflow data configs, and the messages for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olivine import UsageError
from olivine_weightquant.data import TextSource, read_file, read_texts, source_from_data_config, token_windows


class CharTokenizer:
    """One token per character: enough to check windowing without a trained tokenizer."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) % 1000 for c in text]}


def test_local_formats_give_the_same_texts(tmp_path: Path) -> None:
    rows = [{"text": "To be, or not to be", "n": 1}, {"text": "that is the question", "n": 2}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.csv").write_text("n,text\n1,\"To be, or not to be\"\n2,that is the question\n")
    (tmp_path / "a.tsv").write_text("n\ttext\n1\tTo be, or not to be\n2\tthat is the question\n")
    want = [r["text"] for r in rows]
    for name in ("a.jsonl", "a.json", "a.csv", "a.tsv"):
        assert read_file(tmp_path / name, "text") == want, name
    (tmp_path / "a.txt").write_text("To be, or not to be\nthat is the question\n")
    assert read_file(tmp_path / "a.txt", "ignored") == ["To be, or not to be\nthat is the question\n"]


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["Friends, Romans", "countrymen"], "n": [1, 2]}),
                   tmp_path / "a.parquet")
    assert read_file(tmp_path / "a.parquet", "body") == ["Friends, Romans", "countrymen"]
    with pytest.raises(UsageError, match="has no column 'text'; its columns are 'body', 'n'"):
        read_file(tmp_path / "a.parquet", "text")
    with pytest.raises(UsageError, match="column 'n' holds int64, not text"):
        read_file(tmp_path / "a.parquet", "n")


BAD = [
    ("empty.txt", b"  \n\n", "holds no text"),
    ("empty.jsonl", b"", "holds no text in field 'text'"),
    ("nofield.jsonl", b'{"content": "x"}\n', "has no field 'text'; its records have 'content'"),
    ("nofield.csv", b"a,b\n1,2\n", "has no field 'text'; its records have 'a', 'b'"),
    ("header-only.csv", b"text\n", "holds no text in field 'text'"),
    ("numbers.jsonl", b'{"text": 12}\n', "field 'text' of record 1 holds int 12, not text"),
    ("binary.txt", b"\x00\x01\x02ELF", "is not text (it holds binary data)"),
    ("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "is not UTF-8 text"),
    ("broken.jsonl", b'{"text": "a"}\n{"text": \n', "line 2: not a JSON record"),
    ("weird.docx", b"hello", "unknown format '.docx'"),
    ("fake.parquet", b"not parquet at all", "is not a parquet file"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, name: str, content: bytes,
                                               message: str) -> None:
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UsageError) as err:
        read_file(path, "text")
    assert message in str(err.value) and name in str(err.value)


def test_missing_file_and_no_source(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_texts(TextSource(data_files=(str(tmp_path / "nope.txt"),)))
    with pytest.raises(UsageError, match="no calibration data"):
        read_texts(TextSource())


def test_windows_are_spread_over_the_text(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("".join(chr(97 + i % 26) for i in range(1000)))
    w = token_windows(TextSource(data_files=(str(tmp_path / "t.txt"),), max_samples=4, max_seq_len=100),
                      CharTokenizer())
    assert tuple(w.shape) == (4, 100)
    starts = [int(r[0]) for r in w]
    assert len(set(starts)) > 1  # not four copies of the first window
    short = token_windows(TextSource(data_files=(str(tmp_path / "t.txt"),), max_samples=50,
                                     max_seq_len=400), CharTokenizer())
    assert tuple(short.shape) == (2, 400)  # as many as the text holds


def test_a_workflow_data_config_resolves_to_the_same_reader(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"body": "Once more unto the breach"}\n')
    entry = {"name": "calib", "type": "HuggingfaceContainer",
             "load_dataset_config": {"data_name": "json", "data_files": str(tmp_path / "c.jsonl"),
                                     "split": "train"},
             "pre_process_data_config": {"text_cols": ["body"], "max_samples": 7, "max_seq_len": 64}}
    source = source_from_data_config("calib", entry, TextSource())
    assert source.data_files == (str(tmp_path / "c.jsonl"),) and source.text_field == "body"
    assert (source.max_samples, source.max_seq_len) == (7, 64)
    assert read_texts(source) == ["Once more unto the breach"]
    with pytest.raises(UsageError, match="user_script"):
        source_from_data_config("x", {"user_script": "a.py"}, TextSource())
    with pytest.raises(UsageError, match="needs data_files"):
        source_from_data_config("x", {"load_dataset_config": {"data_name": "text"}}, TextSource())
