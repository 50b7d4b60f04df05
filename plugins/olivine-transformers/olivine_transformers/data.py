"""Text data for transformer models, from a workflow's ``data_configs`` entry or a text file.

Evaluators and calibration use :func:`load_text_data`. Supported data config types:

``HuggingfaceContainer`` (Olive's name; also ``TextDataContainer``)
    ``load_dataset_config``: ``data_name`` (``text``, ``json``, ``csv`` or a hub dataset
    id), ``data_files`` (local file or list; relative paths are taken from the working
    directory, then from ``script_dir``), ``split``, ``subset``.
    ``pre_process_data_config``: ``input_cols`` (default ``["text"]``; two columns make
    sentence pairs), ``label_col``, ``max_samples``, ``max_length`` (also
    ``seq_length``/``max_seq_len``; default 128), ``padding`` (``max_length`` or
    ``longest``), ``truncation``, ``model_name`` (where the tokenizer is; default: the
    model's folder). ``dataloader_config``: ``batch_size`` (default 1).
``DummyDataContainer`` / ``TransformersDummyDataContainer``
    random token ids: ``load_dataset_config`` ``max_samples``, ``seq_len``,
    ``batch_size``, ``input_names``.

Local files need no extra package; hub datasets need ``datasets``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from olivine.errors import UsageError
from olivine.models import ModelHandle
from olivine.userscript import resolve_data_file

HF_TYPES = ("huggingfacecontainer", "textdatacontainer")
DUMMY_TYPES = ("dummydatacontainer", "transformersdummydatacontainer")
TEXT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@attrs.define
class TextData:
    """Tokenized batches (numpy int64 arrays by input name), their texts and labels."""

    batches: list[dict[str, Any]]
    texts: list[str | tuple[str, str]] = attrs.field(factory=list)
    labels: list[Any] | None = None
    source: str = ""

    def __len__(self) -> int:
        return sum(len(next(iter(b.values()))) for b in self.batches) if self.batches else 0

    def feeds(self, input_names: list[str] | set[str]) -> Iterator[dict[str, Any]]:
        """Each batch restricted to ``input_names`` (models without token_type_ids, ...)."""
        for batch in self.batches:
            yield {k: v for k, v in batch.items() if k in input_names}


def _get(cfg: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in cfg and cfg[name] is not None:
            return cfg[name]
    return default


def read_records(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of a local ``.txt`` (one ``text`` per line), ``.jsonl``/``.json`` or ``.csv`` file."""
    kind = (kind or path.suffix.lstrip(".")).lower()
    if kind in ("txt", "text"):
        return [{"text": line.strip()} for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    if kind in ("jsonl", "json"):
        text = path.read_text(encoding="utf-8").strip()
        if text.startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [r if isinstance(r, dict) else {"text": r} for r in rows]
    if kind in ("csv", "tsv"):
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if kind == "tsv" else ","))
    raise UsageError(f"data file {str(path)!r}: unknown format {kind!r}; use .txt, .jsonl, "
                     ".json or .csv (or set load_dataset_config.data_name)")


def _hub_records(load: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise UsageError(f"data config names the dataset {load.get('data_name')!r}, which needs "
                         "the datasets package (pip install datasets); for local files give "
                         "data_files") from None
    kwargs = {k: load[k] for k in ("split", "revision", "trust_remote_code") if k in load}
    kwargs.setdefault("split", "train")
    ds = datasets.load_dataset(load["data_name"], load.get("subset"), **kwargs)
    return [dict(r) for r in ds]


def load_tokenizer(model: ModelHandle | None, name: str | None) -> Any:
    """A tokenizer from ``name``, the model's folder, or the HF model it was exported from."""
    from transformers import AutoTokenizer

    candidates: list[str] = []
    if name:
        candidates.append(name)
    if model is not None:
        folder = Path(model.path)
        if folder.is_file():
            folder = folder.parent
        candidates.append(str(folder))
        recorded = model.attrs_dict().get("hf_model_path")
        if recorded:
            candidates.append(str(recorded))
    errors = []
    for candidate in candidates:
        local = Path(candidate)
        if local.exists() and not any((local / n).exists() for n in (
                "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")):
            errors.append(f"{candidate}: no tokenizer files")
            continue
        try:
            return AutoTokenizer.from_pretrained(candidate)
        except (OSError, ValueError) as exc:
            errors.append(f"{candidate}: {exc}")
    raise UsageError("no tokenizer found for the data: set pre_process_data_config.model_name to "
                     "a folder or hub id with a tokenizer (" + "; ".join(errors or ["none tried"])
                     + ")")


def tokenize(texts: list[Any], tokenizer: Any, max_length: int, batch_size: int,
             padding: str | bool = "max_length", truncation: bool = True) -> list[dict[str, Any]]:
    """Tokenize ``texts`` (strings or sentence pairs) into numpy batches of ``batch_size``."""
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None):
        tokenizer.pad_token = tokenizer.eos_token  # causal LM tokenizers have no pad token
    batches = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        if chunk and isinstance(chunk[0], tuple | list):
            firsts, seconds = [c[0] for c in chunk], [c[1] for c in chunk]
            enc = tokenizer(firsts, seconds, padding=padding, truncation=truncation,
                            max_length=max_length, return_tensors="np")
        else:
            enc = tokenizer(list(chunk), padding=padding, truncation=truncation,
                            max_length=max_length, return_tensors="np")
        batches.append({k: v.astype("int64") for k, v in enc.items() if k in TEXT_INPUT_NAMES})
    return batches


def dummy_data(load: Mapping[str, Any], vocab_size: int = 1000) -> TextData:
    """Random token batches (for latency and shape checks)."""
    import numpy as np

    n = int(_get(load, "max_samples", "num_samples", default=8))
    seq = int(_get(load, "seq_len", "sequence_length", "max_length", default=128))
    batch = int(_get(load, "batch_size", default=1))
    names = list(_get(load, "input_names", default=TEXT_INPUT_NAMES))
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(max(n // batch, 1) if n else 0):
        feeds = {}
        for name in names:
            if name == "input_ids":
                feeds[name] = rng.integers(min(1000, vocab_size // 2), vocab_size, (batch, seq))
            elif name == "attention_mask":
                feeds[name] = np.ones((batch, seq), np.int64)
            else:
                feeds[name] = np.zeros((batch, seq), np.int64)
        batches.append({k: v.astype(np.int64) for k, v in feeds.items()})
    return TextData(batches, source="dummy data")


def load_text_data(data_config: Any, model: ModelHandle | None = None,
                   max_samples: int | None = None) -> TextData:
    """Load and tokenize the data ``data_config`` (a DataConfig) describes, for ``model``.

    Raises UsageError naming the config when it yields no samples.
    """
    name = getattr(data_config, "name", "?")
    dtype = str(getattr(data_config, "type", "HuggingfaceContainer")).lower()
    load = dict(getattr(data_config, "load_dataset_config", {}) or {})
    pre = dict(getattr(data_config, "pre_process_data_config", {}) or {})
    loader = dict(getattr(data_config, "dataloader_config", {}) or {})
    if dtype in DUMMY_TYPES:
        data = dummy_data({**load, **pre, **loader}, int(_get(pre, "vocab_size", default=1000)))
        if not data.batches:
            raise UsageError(f"data config {name!r} yields no samples (max_samples is 0)")
        return data
    if dtype not in HF_TYPES:
        raise UsageError(f"data config {name!r}: type {getattr(data_config, 'type', '')!r} is not "
                         "supported for text models; use HuggingfaceContainer (local files or a "
                         "hub dataset) or DummyDataContainer")
    files = _get(load, "data_files", "data_file")
    if files:
        paths = [resolve_data_file(str(f), getattr(data_config, "script_dir", None))
                 for f in (files if isinstance(files, list) else [files])]
        kind = _get(load, "data_name", "type")
        kind = kind if kind in ("text", "txt", "json", "jsonl", "csv", "tsv") else None
        records = [r for p in paths for r in read_records(p, kind)]
        source = ", ".join(str(p) for p in paths)
    elif load.get("data_name"):
        records = _hub_records(load)
        source = str(load["data_name"])
    else:
        raise UsageError(f"data config {name!r}: load_dataset_config needs data_files (a local "
                         "file) or data_name (a hub dataset)")
    return records_to_data(records, pre, loader, model, f"data config {name!r}", source,
                           max_samples)


def records_to_data(records: list[dict[str, Any]], pre: Mapping[str, Any],
                    loader: Mapping[str, Any], model: ModelHandle | None, what: str,
                    source: str, max_samples: int | None = None) -> TextData:
    """Select columns, cap the count, tokenize; raise UsageError when nothing is left.

    ``what`` names the data in messages (``data config 'calib'``).
    """
    cols = list(_get(pre, "input_cols", default=["text"]))
    label_col = _get(pre, "label_col", "label_cols")
    limit = _get(pre, "max_samples")
    if max_samples is not None:  # a caller's cap lowers the config's, never raises it
        limit = max_samples if limit is None else min(int(limit), max_samples)
    if records and any(c not in records[0] for c in cols):
        missing = [c for c in cols if c not in records[0]]
        raise UsageError(f"{what}: {source} has no column {missing[0]!r} "
                         f"(columns: {', '.join(records[0])}); set pre_process_data_config."
                         "input_cols")
    texts: list[Any] = []
    labels: list[Any] = []
    for row in records:
        values = [row.get(c) for c in cols]
        if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            continue
        texts.append(str(values[0]) if len(values) == 1 else (str(values[0]), str(values[1])))
        if label_col:
            labels.append(row.get(label_col))
        if limit is not None and len(texts) >= int(limit):
            break
    if not texts:
        raise UsageError(f"{what} yields no samples: {source} has no non-empty "
                         f"{'/'.join(cols)} values" + (" (max_samples is 0)" if limit == 0 else ""))
    tokenizer = load_tokenizer(model, _get(pre, "model_name", "tokenizer"))
    max_length = int(_get(pre, "max_length", "seq_length", "max_seq_len", default=128))
    padding = _get(pre, "padding", default="max_length")
    batch_size = int(_get(loader, "batch_size", default=1))
    batches = tokenize(texts, tokenizer, max_length, batch_size, padding,
                       bool(_get(pre, "truncation", default=True)))
    return TextData(batches, texts, labels if label_col else None, source)


def text_file_data(path: str, model: ModelHandle | None, max_samples: int | None,
                   max_length: int = 128, batch_size: int = 1, tokenizer: str | None = None,
                   text_col: str = "text") -> TextData:
    """Tokenized data from a local ``.txt``/``.jsonl``/``.csv`` file (one sample per row)."""
    p = resolve_data_file(path)
    records = read_records(p)
    pre = {"input_cols": [text_col], "max_samples": max_samples, "max_length": max_length,
           "model_name": tokenizer}
    return records_to_data(records, pre, {"batch_size": batch_size}, model,
                           f"text file {p.name!r}", str(p))
