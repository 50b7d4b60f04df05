"""Model inputs from a workflow's ``data_configs`` entry (or a text file), as numpy batches.

Evaluators and calibration use :func:`load_text_data`, which runs the data config
through olivine's data layer (:mod:`olivine.data`): any container and components,
Olive's built-in names or a user script's. Rows that are still text after
pre-processing (``DataContainer`` with ``data_files``, or a skipped pre-process) are
tokenized here with ``pre_process_data_config``'s ``input_cols`` (default ``["text"]``;
two columns make sentence pairs), ``label_col``, ``max_samples``, ``max_length`` (also
``seq_length``/``max_seq_len``; default 128), ``padding`` (``max_length`` or
``longest``), ``truncation`` and ``model_name`` (where the tokenizer is; default: the
model's folder). ``dataloader_config.batch_size`` batches (default 1).

Local files need no extra package; hub datasets need ``datasets``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from olivine import ModelHandle, UsageError, resolve_data_file

TEXT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: key prefix of inputs a dataset gives by position (an array or a tuple of arrays)
POSITIONAL = "#"


@attrs.define
class TextData:
    """Tokenized batches (numpy int64 arrays by input name), their texts and labels."""

    batches: list[dict[str, Any]]
    texts: list[str | tuple[str, str]] = attrs.field(factory=list)
    labels: list[Any] | None = None
    source: str = ""
    #: the data config's post_process_data component (``None``: Olive's pass-through default)
    post_process: Any = None

    def __len__(self) -> int:
        return sum(len(next(iter(b.values()))) for b in self.batches) if self.batches else 0

    def feeds(self, input_names: list[str] | set[str]) -> Iterator[dict[str, Any]]:
        """Each batch restricted to ``input_names`` (models without token_type_ids, ...).

        Batches of positional inputs (a dataset that yields arrays, not dicts) are named
        by position after ``input_names`` (a list, in the model's order).
        """
        for batch in self.batches:
            if batch and all(k.startswith(POSITIONAL) for k in batch):
                names = list(input_names)
                if len(batch) != len(names) or (len(names) > 1 and isinstance(input_names, set)):
                    raise UsageError(f"{self.source}: the data gives {len(batch)} unnamed "
                                     f"input(s) but the model takes {', '.join(sorted(names))}; "
                                     "give the inputs as a dict of input name -> array")
                yield {n: batch[f"{POSITIONAL}{i}"] for i, n in enumerate(names)}
                continue
            yield {k: v for k, v in batch.items() if k in input_names}


def _get(cfg: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in cfg and cfg[name] is not None:
            return cfg[name]
    return default


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


def read_records(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of a local file through olivine's shared readers (:func:`olivine.data.read_rows`)."""
    from olivine.data import file_format, read_rows

    return read_rows(path, file_format(path, kind))


def load_text_data(data_config: Any, model: ModelHandle | None = None,
                   max_samples: int | None = None) -> TextData:
    """Run ``data_config`` (a DataConfig) through the data layer; numpy batches for ``model``.

    ``max_samples`` caps the number of samples (it lowers the config's, never raises it).
    Raises UsageError naming the config when it yields no samples.
    """
    from olivine.data import Rows, resolve

    name = getattr(data_config, "name", "?")
    what = f"data config {name!r}"
    resolved = resolve(data_config, model)
    pre = dict(resolved.components["pre_process_data"].params)
    loader = dict(resolved.components["dataloader"].params)
    dataset = resolved.load_dataset()
    if isinstance(dataset, Rows) and resolved.is_default("pre_process_data"):
        if _is_text(dataset):
            return records_to_data(list(dataset), pre, loader, model, what, dataset.source,
                                   max_samples)
        dataset = _array_rows(dataset, what)
    if isinstance(dataset, Rows) and max_samples is not None:
        dataset = Rows(dataset[:max_samples], dataset.source)
    processed = resolved.pre_process(dataset)
    batches: list[dict[str, Any]] = []
    labels: list[Any] = []
    has_labels = getattr(processed, "labels", "unknown") is not None
    count = 0
    for batch in resolved.dataloader(processed):
        inputs, label = _split_batch(batch, what)
        size = len(next(iter(inputs.values()))) if inputs else 0
        if max_samples is not None and count + size > max_samples:
            keep = max_samples - count
            inputs = {k: v[:keep] for k, v in inputs.items()}
            label = label[:keep] if label is not None and hasattr(label, "__len__") else label
            size = keep
        if size <= 0:
            break
        batches.append(inputs)
        if label is not None and hasattr(label, "__len__"):
            labels.extend(_plain(label))
        count += size
    if not batches:
        raise UsageError(f"{what} yields no samples")
    texts = list(getattr(processed, "texts", []) or [])[:count]
    source = str(getattr(processed, "source", getattr(dataset, "source", name)))
    post = None if resolved.is_default("post_process_data") else resolved.post_process
    return TextData(batches, texts, labels if has_labels and labels else None, source, post)


def _is_text(rows: list[dict[str, Any]]) -> bool:
    """True when the rows hold text to tokenize (not arrays of model inputs)."""
    first = rows[0] if rows else {}
    return not first or any(isinstance(v, str) for v in first.values())


def _array_rows(rows: Any, what: str) -> list[tuple[dict[str, Any], Any]]:
    """Rows of numbers (``{"x": [[...]]}``) as ``(inputs, label)`` samples of numpy arrays;
    a ``label`` column becomes the label."""
    import numpy as np

    out = []
    for i, row in enumerate(rows):
        try:
            inputs = {k: np.asarray(v) for k, v in row.items() if k != "label"}
        except ValueError as exc:
            raise UsageError(f"{what}: row {i + 1} of {rows.source} is not arrays of numbers: "
                             f"{exc}") from None
        out.append((inputs, row.get("label", 0)))
    return out


def _numpy(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    return arr.astype(np.int64) if arr.dtype.kind in "iub" else arr


def _plain(label: Any) -> list[Any]:
    if hasattr(label, "detach"):
        label = label.detach().cpu().numpy()
    # per-token labels (text generation, ner) are arrays: kept as lists
    return [(x.item() if getattr(x, "ndim", 0) == 0 else x.tolist()) if hasattr(x, "item") else x
            for x in label]


def _split_batch(batch: Any, what: str) -> tuple[dict[str, Any], Any]:
    """``(inputs, label)`` of one batch; inputs as a dict of numpy arrays."""
    label = None
    if isinstance(batch, tuple | list) and len(batch) == 2 and not isinstance(batch[0], str):
        batch, label = batch
    if isinstance(batch, tuple | list):
        return {f"{POSITIONAL}{i}": _numpy(v) for i, v in enumerate(batch)}, label
    if not isinstance(batch, Mapping):
        if hasattr(batch, "shape"):
            return {f"{POSITIONAL}0": _numpy(batch)}, label
        raise UsageError(f"{what}: its dataloader yields {type(batch).__name__} inputs; olivine "
                         "feeds models from dicts of input name -> array (or arrays by position)")
    return {str(k): _numpy(v) for k, v in batch.items()}, label


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
