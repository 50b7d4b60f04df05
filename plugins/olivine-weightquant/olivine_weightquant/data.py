"""Calibration text: local files (txt, jsonl, json, csv, parquet) or a hub dataset, as token windows.

The text of every record is joined into one stream, tokenized, and cut into windows
of ``max_seq_len`` tokens; ``max_samples`` windows spread evenly over the stream are
kept. Files are read by olivine's shared readers (:mod:`olivine.data.readers`). A
workflow's ``data_configs`` entry resolves to the same readers:

``load_dataset_config``
    ``data_files`` (a path or a list), ``data_name`` (a hub dataset id, or one of the
    local loader names ``text``, ``json``, ``csv``, ``parquet``), ``subset``, ``split``.
``pre_process_data_config``
    ``text_field`` (also ``text_cols``/``input_cols``: the first one), ``max_samples``,
    ``max_seq_len`` (also ``seq_length``, ``max_length``), ``seed``.

Local files need nothing beyond this plugin (parquet needs ``pyarrow``); a hub dataset
needs ``datasets`` and network access.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from olivine import UsageError
from olivine.data import LOADERS, columns_of, file_format, parquet_schema, read_rows, read_text

log = logging.getLogger("olivine.pass.weightquant")

LOCAL_LOADERS = tuple(LOADERS)


@attrs.frozen
class TextSource:
    """Where calibration text comes from and how much of it to use."""

    data_files: tuple[str, ...] = ()
    data_name: str | None = None
    subset: str | None = None
    split: str = "train"
    text_field: str = "text"
    max_samples: int = 128
    max_seq_len: int = 512
    seed: int = 0

    def describe(self) -> str:
        """The files or dataset, for messages."""
        return ", ".join(self.data_files) if self.data_files else f"dataset {self.data_name!r}"


def _first(cfg: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if cfg.get(name) is not None:
            return cfg[name]
    return None


def source_from_data_config(name: str, data_config: Any, defaults: TextSource) -> TextSource:
    """A :class:`TextSource` from a workflow ``data_configs`` entry (attrs object or dict)."""
    get = (lambda k: data_config.get(k)) if isinstance(data_config, Mapping) \
        else (lambda k: getattr(data_config, k, None))
    if get("user_script"):
        raise UsageError(f"data_configs.{name}: user_script data configs cannot feed weight "
                         "quantization; give load_dataset_config.data_files (local text) instead")
    load = dict(get("load_dataset_config") or {})
    pre = dict(get("pre_process_data_config") or {})
    files = load.get("data_files")
    if isinstance(files, str):
        files = [files]
    data_name = load.get("data_name") or load.get("path")
    if not files and (not data_name or data_name in LOCAL_LOADERS):
        raise UsageError(f"data_configs.{name}: load_dataset_config needs data_files (local "
                         "text files) or data_name (a dataset id)")
    field = _first(pre, "text_field", "dataset_text_field")
    cols = _first(pre, "text_cols", "input_cols")
    if field is None and cols:
        field = cols[0] if isinstance(cols, list | tuple) else cols
    return attrs.evolve(
        defaults,
        data_files=tuple(str(f) for f in files or ()),
        data_name=None if files else data_name,
        subset=load.get("subset") or load.get("name"),
        split=str(load.get("split") or "train"),
        text_field=str(field or defaults.text_field),
        max_samples=int(_first(pre, "max_samples") or defaults.max_samples),
        max_seq_len=int(_first(pre, "max_seq_len", "seq_length", "max_length") or defaults.max_seq_len),
        seed=int(_first(pre, "seed") or defaults.seed))


# -- readers -------------------------------------------------------------------------------------


def _field_values(path: Path, records: Sequence[Mapping[str, Any]], field: str) -> list[str]:
    if not records:
        return []
    keys = columns_of(records)
    if field not in keys:
        raise UsageError(f"calibration file {str(path)!r} has no field {field!r}; its records have "
                         f"{', '.join(map(repr, keys)) or 'no fields'} (choose one with --text_field, "
                         "or text_field in the pass config)")
    out = []
    for i, r in enumerate(records):
        value = r.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise UsageError(f"calibration file {str(path)!r}: field {field!r} of record {i + 1} "
                             f"holds {type(value).__name__} {json.dumps(value)[:40]}, not text")
        out.append(value)
    return out


def read_file(path: Path, field: str) -> list[str]:
    """The texts in one local file (a ``.txt`` file is one text), read by olivine's shared readers."""
    if not path.exists():
        raise UsageError(f"calibration file {str(path)!r} does not exist")
    if not path.is_file():
        raise UsageError(f"calibration file {str(path)!r} is a folder; give the files in it")
    fmt = file_format(path)
    if fmt == "text":
        text = read_text(path)
        texts = [text] if text.strip() else []
    elif fmt == "parquet":
        schema = parquet_schema(path)
        if field not in schema:
            raise UsageError(f"calibration file {str(path)!r} has no column {field!r}; its columns "
                             f"are {', '.join(map(repr, schema))} (choose one with --text_field)")
        if schema[field] not in ("string", "large_string"):
            raise UsageError(f"calibration file {str(path)!r}: column {field!r} holds "
                             f"{schema[field]}, not text")
        texts = [r[field] for r in read_rows(path, fmt, [field]) if r.get(field) is not None]
    else:
        texts = _field_values(path, read_rows(path, fmt), field)
    if not any(t.strip() for t in texts):
        raise UsageError(f"calibration file {str(path)!r} holds no text"
                         + ("" if fmt == "text" else f" in field {field!r}"))
    return texts


def _read_hub(source: TextSource) -> list[str]:
    from olivine.data import hub_dataset

    assert source.data_name is not None
    rows = hub_dataset(source.data_name, source.subset, None, source.split)
    columns = rows.column_names
    if rows and source.text_field not in columns:
        raise UsageError(f"dataset {source.data_name!r} has no column {source.text_field!r}; its "
                         f"columns are {', '.join(map(repr, columns))}")
    return [r[source.text_field] for r in rows if isinstance(r.get(source.text_field), str)]


def read_texts(source: TextSource) -> list[str]:
    """Every text of the source, files in the order given."""
    if source.data_files:
        texts: list[str] = []
        for name in source.data_files:
            texts += read_file(Path(name).expanduser(), source.text_field)
        return texts
    if source.data_name:
        return _read_hub(source)
    raise UsageError("no calibration data: give data_files (local text files), data_name (a "
                     "dataset id) or data_config (a workflow data_configs entry)")


# -- tokens --------------------------------------------------------------------------------------


def token_windows(source: TextSource, tokenizer: Any) -> Any:
    """``max_samples`` windows of ``max_seq_len`` token ids (a LongTensor ``[S, L]``).

    Windows are cut from the joined text and spread evenly over it. When the text is
    shorter than one window, the whole text is one (shorter) window.
    """
    import torch

    texts = read_texts(source)
    random.Random(source.seed).shuffle(texts)
    budget = source.max_samples * source.max_seq_len * 12  # characters: a generous bound
    picked, size = [], 0
    for t in texts:
        if size >= budget:
            break
        picked.append(t)
        size += len(t)
    joined = "\n\n".join(picked)[: budget]
    ids = tokenizer(joined, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise UsageError(f"calibration data ({source.describe()}) is too short: {len(ids)} token(s)")
    length = min(source.max_seq_len, len(ids))
    available = len(ids) // length
    count = min(source.max_samples, available)
    if count < source.max_samples:
        log.warning("calibration data (%s) gives %d window(s) of %d tokens, fewer than max_samples=%d",
                    source.describe(), count, length, source.max_samples)
    step = available / count
    starts = [int(i * step) * length for i in range(count)]
    return torch.tensor([ids[s:s + length] for s in starts], dtype=torch.long)
