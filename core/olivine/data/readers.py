"""The local data readers every plugin shares: json/jsonl, csv/tsv, text, parquet.

One reader per format, one wording for every bad file: the error names the file and,
where there is one, the line. ``datasets``' loader names (``json``, ``csv``, ``text``,
``parquet``) select a reader as ``load_dataset_config.data_name`` does in Olive, so
local files need no hub and no ``datasets`` package; parquet needs ``pyarrow``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from olivine.errors import UsageError

#: file suffix -> reader
SUFFIXES = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "json", ".json": "json",
            ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
#: ``data_name`` values (``datasets``' packaged loaders and their spellings) -> reader
LOADERS = {"text": "text", "txt": "text", "json": "json", "jsonl": "json", "csv": "csv",
           "tsv": "tsv", "parquet": "parquet"}


def file_format(path: Path, data_name: str | None = None) -> str:
    """The reader for ``path``: ``data_name`` when it names a loader, else the file's suffix."""
    if data_name and str(data_name).lower() in LOADERS:
        kind = LOADERS[str(data_name).lower()]
        if kind == "csv" and path.suffix.lower() == ".tsv":
            return "tsv"
        return kind
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise UsageError(f"data file {str(path)!r}: unknown format {path.suffix or '(no suffix)'!r};"
                         f" use one of {', '.join(sorted(SUFFIXES))}, or set "
                         "load_dataset_config.data_name to json, csv, parquet or text")
    return found


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; :class:`UsageError` for binary or non-UTF-8 content."""
    if not path.exists():
        raise UsageError(f"data file {str(path)!r} does not exist")
    if not path.is_file():
        raise UsageError(f"data file {str(path)!r} is a folder; give the files in it")
    data = path.read_bytes()
    if b"\0" in data[:65536]:
        raise UsageError(f"data file {str(path)!r} is not text (it holds binary data)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"data file {str(path)!r} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start}); save it as UTF-8") from None


def _json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise UsageError(f"data file {str(path)!r}, line {exc.lineno}: not valid JSON "
                             f"({exc.msg})") from None
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise UsageError(f"data file {str(path)!r}: item {i + 1} of the array is "
                                 f"{type(row).__name__}, not an object ({{\"column\": value}})")
        return [dict(r) for r in rows]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"data file {str(path)!r}, line {n}: not a JSON record (not JSON "
                             f"lines: {exc.msg})") from None
        if not isinstance(row, Mapping):
            raise UsageError(f"data file {str(path)!r}, line {n}: a JSON {type(row).__name__}, "
                             "not an object ({\"column\": value, ...})")
        out.append(dict(row))
    return out


def _csv_rows(path: Path, text: str, delimiter: str) -> tuple[list[dict[str, Any]], list[str]]:
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    rows: list[dict[str, Any]] = []
    try:
        for row in reader:
            if None in row:
                raise UsageError(f"data file {str(path)!r}, line {reader.line_num}: more fields "
                                 f"than the header's {len(reader.fieldnames or [])}")
            rows.append(dict(row))
    except csv.Error as exc:
        raise UsageError(f"data file {str(path)!r}, line {reader.line_num}: {exc}") from None
    return rows, list(reader.fieldnames or [])


def parquet_schema(path: Path) -> dict[str, str]:
    """Column name -> arrow type name of a parquet file (needs pyarrow)."""
    pq = _pyarrow_parquet(path)
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends
        raise UsageError(f"data file {str(path)!r} is not a parquet file: {exc}") from None
    return {name: str(schema.field(name).type) for name in schema.names}


def _pyarrow_parquet(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"data file {str(path)!r}: reading parquet needs pyarrow "
                         "(pip install pyarrow)") from None
    return pq


def read_rows(path: Path, kind: str | None = None,
              columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of one local file as dicts (``kind`` as :func:`file_format` gives it).

    A text file gives one ``{"text": line}`` per non-empty line (``datasets``' text
    loader). ``columns``, when given, must all exist (else :class:`UsageError` listing
    the file's columns).
    """
    kind = kind or file_format(path)
    header: list[str] | None = None
    if kind == "parquet":
        schema = parquet_schema(path)
        header = list(schema)
        _check_columns(path, columns, header)
        pq = _pyarrow_parquet(path)
        rows = [dict(r) for r in pq.read_table(path).to_pylist()]
        return rows
    text = read_text(path)
    if kind == "text":
        rows = [{"text": line.rstrip("\r")} for line in text.split("\n") if line.strip()]
    elif kind == "json":
        rows = _json_rows(path, text)
    elif kind in ("csv", "tsv"):
        rows, header = _csv_rows(path, text, "\t" if kind == "tsv" else ",")
    else:
        raise UsageError(f"data file {str(path)!r}: unknown format {kind!r}")
    _check_columns(path, columns, header if header is not None else columns_of(rows))
    return rows


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Column names in first-seen order over all rows."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _check_columns(path: Path, wanted: Sequence[str] | None, have: list[str]) -> None:
    if not wanted or not have:
        return
    from olivine.errors import did_you_mean

    for col in wanted:
        if col not in have:
            raise UsageError(f"data file {str(path)!r} has no column {col!r}"
                             f"{did_you_mean(col, have)}; its columns are "
                             f"{', '.join(map(repr, have))}")


def expand_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a folder becomes the data files directly in it (sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise UsageError(f"data folder {str(p)!r} holds no {', '.join(sorted(SUFFIXES))} "
                                 "file")
            out.extend(found)
        else:
            out.append(p)
    return out


def split_files(data_files: Any, split: str | None) -> list[str]:
    """``data_files`` as a list of names: a string, a list, or ``datasets``' ``{split: files}``."""
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [data_files]
    if isinstance(data_files, Mapping):
        chosen = data_files.get(split or "train")
        if chosen is None:
            if len(data_files) != 1:
                raise UsageError(f"data_files has splits {', '.join(map(str, data_files))} but "
                                 f"not {split!r}; set load_dataset_config.split")
            chosen = next(iter(data_files.values()))
        return split_files(chosen, split)
    return [str(f) for f in data_files]
