"""Training text from a workflow's data config: local files or a hub dataset, then templates.

``load_dataset_config`` takes Olive's keys: ``data_files`` (a file, a folder or a list;
``.jsonl``/``.json``, ``.csv``/``.tsv``, ``.parquet``, ``.txt`` one row per line),
``data_name`` (``json``, ``csv``, ``parquet``, ``text``, a local path, or a hub dataset id,
which needs the ``datasets`` package), ``split`` and ``subset`` (hub only).
``pre_process_data_config`` may carry ``text_template``, ``text_field`` (``text_cols``),
``use_chat_template``, ``max_seq_len``, ``max_samples`` and ``strategy`` (``line-by-line``
or ``join``). Nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from olivine import UsageError, resolve_data_file
from olivine_lora.config import template_fields

USER_COLUMNS = ("instruction", "prompt", "question", "input", "query")
ASSISTANT_COLUMNS = ("response", "answer", "output", "completion", "target")
DEFAULT_MAX_SEQ_LEN = 1024


@attrs.frozen
class Rows:
    """The rows of a data source and where they came from (for messages)."""

    rows: list[dict[str, Any]]
    source: str


@attrs.frozen
class TextOptions:
    """How rows become training text, after merging the pass and data config options."""

    text_field: str | None = None
    text_template: str | None = None
    use_chat_template: bool = False
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    max_samples: int | None = None
    #: line-by-line: one sequence per row (cut at max_seq_len); join: all rows in one token
    #: stream cut into max_seq_len blocks (Olive's strategies)
    strategy: str = "line-by-line"


def _first(mapping: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if mapping.get(name) is not None:
            return mapping[name]
    return None


def text_options(config: Any, data_config: Any | None) -> TextOptions:
    """Merge the pass's text options with the data config's ``pre_process_data_config``.

    A value given in both places must agree (else :class:`UsageError`).
    """
    pre = dict(getattr(data_config, "pre_process_data_config", None) or {})
    from_data = {
        "text_field": _first(pre, "text_field", "text_cols", "text_col"),
        "text_template": _first(pre, "text_template"),
        "use_chat_template": _first(pre, "use_chat_template"),
        "max_seq_len": _first(pre, "max_seq_len", "max_length", "seq_length"),
    }
    if isinstance(from_data["text_field"], list):
        if len(from_data["text_field"]) != 1:
            raise UsageError(f"data config {getattr(data_config, 'name', '?')!r}: text_cols names "
                             f"{len(from_data['text_field'])} columns; name one, or join several "
                             "with text_template")
        from_data["text_field"] = from_data["text_field"][0]
    merged: dict[str, Any] = {}
    for key, data_value in from_data.items():
        own = getattr(config, key)
        own = None if own is False else own
        if own is not None and data_value is not None and own != data_value:
            raise UsageError(f"{key} is {own!r} in the pass but {data_value!r} in data config "
                             f"{getattr(data_config, 'name', '?')!r} (pre_process_data_config); "
                             "give it in one place")
        merged[key] = own if own is not None else data_value
    chosen = [k for k in ("text_field", "text_template", "use_chat_template") if merged[k]]
    if len(chosen) > 1:
        raise UsageError(f"give one of text_field, text_template and use_chat_template; the pass "
                         f"and data config {getattr(data_config, 'name', '?')!r} give "
                         f"{' and '.join(chosen)}")
    if merged["text_template"]:
        try:
            template_fields(merged["text_template"])
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    max_samples = pre.get("max_samples")
    strategy = str(_first(pre, "strategy", "corpus_strategy") or "line-by-line")
    if strategy not in ("line-by-line", "join"):
        raise UsageError(f"data config {getattr(data_config, 'name', '?')!r}: strategy {strategy!r} "
                         "is not supported; use line-by-line (a sequence per row) or join (rows "
                         "joined and cut into max_seq_len blocks)")
    return TextOptions(strategy=strategy, text_field=merged["text_field"],
                       text_template=merged["text_template"],
                       use_chat_template=bool(merged["use_chat_template"]),
                       max_seq_len=int(merged["max_seq_len"] or DEFAULT_MAX_SEQ_LEN),
                       max_samples=int(max_samples) if max_samples else None)


# -- reading: olivine's shared data layer ---------------------------------------------------
def load_rows(data_config: Any) -> Rows:
    """Every row the data config names, with their source; :class:`UsageError` if there are none.

    Local files and hub datasets are read by olivine's data layer (:mod:`olivine.data`);
    a ``load_dataset_config.type`` other than Olive's defaults (a user script's dataset,
    for example) is run as Olive would and must give rows (dicts of columns).
    """
    from olivine.data import LOADERS, expand_files, file_format, hub_dataset, read_rows, split_files

    name = getattr(data_config, "name", "?")
    load = dict(getattr(data_config, "load_dataset_config", None) or {})
    if getattr(data_config, "user_script", None) or load.get("type") not in (
            None, "huggingface_dataset", "local_dataset", "default_load_dataset"):
        return _component_rows(data_config)
    if isinstance(load.get("params"), Mapping):
        load = {**dict(load["params"]), **{k: v for k, v in load.items() if k != "params"}}
    script_dir = getattr(data_config, "script_dir", None)
    data_name = load.get("data_name")
    local_loader = bool(data_name) and str(data_name).lower() in LOADERS
    files = split_files(load.get("data_files"), load.get("split") or "train")
    if not files and data_name and not local_loader and Path(data_name).expanduser().exists():
        files, data_name = [data_name], None
    if not files:
        if data_name and not local_loader:
            hub = hub_dataset(data_name, load.get("subset"), load.get("data_dir"),
                              load.get("split") or "train",
                              **{k: load[k] for k in ("revision", "trust_remote_code") if k in load})
            if not hub:
                raise UsageError(f"data config {name!r}: dataset {hub.source} has no rows")
            return Rows(list(hub), hub.source)
        raise UsageError(f"data config {name!r}: no data; set load_dataset_config.data_files to "
                         "local files (jsonl, json, csv, parquet, txt) or data_name to a hub "
                         "dataset")
    rows: list[dict[str, Any]] = []
    paths = expand_files([resolve_data_file(f, script_dir) for f in files])
    for path in paths:
        found = read_rows(path, file_format(path, data_name if local_loader else None))
        if not found:
            raise UsageError(f"data file {str(path)!r} is empty: it has no rows")
        rows.extend(found)
    source = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files ({paths[0].name}, ...)"
    return Rows(rows, source)


def _component_rows(data_config: Any) -> Rows:
    """Rows from the data config's ``load_dataset`` component (a user script's, say)."""
    from olivine.data import resolve

    resolved = resolve(data_config, kinds=("load_dataset",))
    dataset = resolved.load_dataset()
    name = getattr(data_config, "name", "?")
    try:
        rows = [dict(r) for r in dataset]
    except (TypeError, ValueError):
        raise UsageError(f"data config {name!r}: its load_dataset component "
                         f"{resolved.components['load_dataset'].name!r} gives "
                         f"{type(dataset).__name__}, not rows of columns (dicts)") from None
    if not rows:
        raise UsageError(f"data config {name!r}: its dataset has no rows")
    return Rows(rows, f"data config {name!r}")


# -- text ------------------------------------------------------------------------------------
def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Column names in first-seen order over all rows."""
    from olivine.data import columns_of as columns

    return columns(rows)


def _missing_column(what: str, column: str, data: Rows) -> UsageError:
    cols = columns_of(data.rows)
    from olivine import did_you_mean

    return UsageError(f"{what} names column {column!r}, which {data.source} does not have"
                      f"{did_you_mean(column, cols)}; its columns: {', '.join(cols) or '(none)'}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def chat_messages(row: Mapping[str, Any], data: Rows, index: int) -> list[dict[str, str]]:
    """The chat turns of a row: its ``messages`` column, or a user/assistant column pair."""
    messages = row.get("messages", row.get("conversations"))
    if messages is not None:
        if isinstance(messages, str):
            messages = json.loads(messages)
        if not isinstance(messages, list) or not all(
                isinstance(m, Mapping) and "role" in m and "content" in m for m in messages):
            raise UsageError(f"{data.source} row {index + 1}: messages must be a list of "
                             "{\"role\": ..., \"content\": ...} objects")
        return [{"role": str(m["role"]), "content": _cell(m["content"])} for m in messages]
    user = next((c for c in USER_COLUMNS if c in row), None)
    assistant = next((c for c in ASSISTANT_COLUMNS if c in row), None)
    if user is None or assistant is None:
        cols = ", ".join(columns_of(data.rows)) or "(none)"
        raise UsageError(f"use_chat_template: {data.source} row {index + 1} has neither a messages "
                         f"column nor a user column ({'/'.join(USER_COLUMNS)}) with an assistant "
                         f"column ({'/'.join(ASSISTANT_COLUMNS)}); its columns: {cols}")
    return [{"role": "user", "content": _cell(row[user])},
            {"role": "assistant", "content": _cell(row[assistant])}]


def render_texts(data: Rows, options: TextOptions,
                 chat: Callable[[list[dict[str, str]]], str] | None = None) -> list[str]:
    """One training text per row (empty ones dropped); :class:`UsageError` for bad columns."""
    rows = data.rows[:options.max_samples] if options.max_samples else data.rows
    texts: list[str] = []
    if options.text_template:
        fields = template_fields(options.text_template)
        for column in fields:
            if not any(column in row for row in rows):
                raise _missing_column("text_template", column, data)
        for i, row in enumerate(rows):
            missing = [c for c in fields if c not in row]
            if missing:
                raise UsageError(f"text_template names column {missing[0]!r}, which row {i + 1} of "
                                 f"{data.source} lacks; that row's columns: {', '.join(row)}")
            texts.append(options.text_template.format(**{c: _cell(row[c]) for c in fields}))
    elif options.use_chat_template:
        if chat is None:
            raise UsageError("use_chat_template: the tokenizer has no chat template")
        texts = [chat(chat_messages(row, data, i)) for i, row in enumerate(rows)]
    else:
        field = options.text_field or "text"
        if not any(field in row for row in rows):
            if options.text_field is None:
                cols = ", ".join(columns_of(rows)) or "(none)"
                raise UsageError(f"{data.source} has no text column; name the column to train on "
                                 f"with text_field, or build the text from columns with "
                                 f"text_template (like \"### Question: {{instruction}}\\n### Answer: "
                                 f"{{response}}\"); its columns: {cols}")
            raise _missing_column("text_field", field, data)
        texts = [_cell(row.get(field)) for row in rows]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UsageError(f"{data.source}: every row's text is empty")
    return texts


def split_eval(texts: list[str], size: float | None, seed: int) -> tuple[list[str], list[str]]:
    """Hold out ``size`` (a fraction or a count) of ``texts`` for evaluation, shuffled by ``seed``."""
    if not size:
        return texts, []
    import random

    count = round(len(texts) * size) if size < 1 else int(size)
    if count < 1 or count >= len(texts):
        raise UsageError(f"eval_dataset_size {size} holds out {count} of {len(texts)} rows; "
                         "leave at least one row for each of training and evaluation")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return ([t for i, t in enumerate(texts) if i not in held],
            [t for i, t in enumerate(texts) if i in held])
