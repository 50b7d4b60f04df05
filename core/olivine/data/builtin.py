"""olivine's own data components and containers, under Olive's names. No heavy imports.

Datasets are sequences; an item is ``(inputs, label)`` (Olive's convention) or, for
rows read from files, a dict of columns. Dataloaders are iterables of batches; without
torch they batch numpy arrays themselves, with torch installed ``default_dataloader``
is ``torch.utils.data.DataLoader`` as in Olive.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from olivine.data.readers import (
    LOADERS,
    columns_of,
    expand_files,
    file_format,
    read_rows,
    split_files,
)
from olivine.data.registry import (
    DATA_CONTAINER,
    DATALOADER,
    KINDS,
    LOAD_DATASET,
    POST_PROCESS_DATA,
    PRE_PROCESS_DATA,
    DataContainerSpec,
)
from olivine.errors import UsageError
from olivine.userscript import resolve_data_file


class Rows(list[dict[str, Any]]):
    """Rows (dicts of columns) read from local files or a hub dataset, with their source."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], source: str,
                 class_names: Mapping[str, list[str]] | None = None) -> None:
        super().__init__(dict(r) for r in rows)
        self.source = source
        #: a hub dataset's class-label columns: column -> the names of ids 0, 1, ...
        self.class_names: dict[str, list[str]] = dict(class_names or {})

    @property
    def column_names(self) -> list[str]:
        """Column names in first-seen order (``datasets.Dataset.column_names``)."""
        return columns_of(self)


# -- load_dataset ------------------------------------------------------------------------------
def _local_rows(files: Sequence[str], data_name: str | None, script_dir: str | None,
                col_filters: Mapping[str, Any] | None) -> Rows:
    paths = expand_files([resolve_data_file(str(f), script_dir) for f in files])
    rows: list[dict[str, Any]] = []
    for path in paths:
        rows.extend(read_rows(path, file_format(path, data_name)))
    source = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files ({paths[0].name}, ...)"
    return Rows(_filtered(rows, col_filters), source)


def _filtered(rows: list[dict[str, Any]], col_filters: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not col_filters:
        return rows
    return [r for r in rows if all(r.get(c) == v for c, v in col_filters.items())]


def _split_slice(split: str | None) -> tuple[str, slice]:
    """``train[:100]`` -> (``train``, slice(None, 100)); percentages are not supported."""
    if not split or "[" not in split:
        return split or "train", slice(None)
    name, _, spec = split.partition("[")
    spec = spec.rstrip("]")
    lo, _, hi = spec.partition(":")
    if "%" in spec or not all(p.strip().lstrip("-").isdigit() or not p.strip() for p in (lo, hi)):
        raise UsageError(f"split {split!r}: olivine reads local files with slices of row counts "
                         "(train[:100], train[10:20])")
    return name, slice(int(lo) if lo.strip() else None, int(hi) if hi.strip() else None)


def huggingface_dataset(data_name: str | None = None, subset: str | None = None,
                        data_dir: str | None = None, split: str | None = None,
                        data_files: Any = None, col_filters: Mapping[str, Any] | None = None,
                        script_dir: str | None = None, **kwargs: Any) -> Any:
    """Rows of local files (``data_files``, or ``data_name`` json/csv/text/parquet), else a hub dataset.

    ``split`` left out means ``train`` for local files (their only split) and
    ``validation`` for a hub dataset (Olive's default).
    """
    local_kind = str(data_name).lower() in LOADERS if data_name else False
    if data_files is None and data_name and not local_kind and Path(str(data_name)).expanduser().exists():
        data_files, data_name = str(data_name), None
    if data_files is None and data_dir and (local_kind or not data_name):
        data_files = data_dir
    if data_files is not None:
        if kwargs:
            raise UsageError(f"load_dataset_config: {', '.join(sorted(kwargs))} "
                             f"{'is' if len(kwargs) == 1 else 'are'} options of the datasets "
                             "library, which olivine does not use for local files")
        name, part = _split_slice(split)
        files = split_files(data_files, name if isinstance(data_files, Mapping) else split)
        if not isinstance(data_files, Mapping) and name != "train":
            raise UsageError(f"split {split!r}: local data_files form one split, 'train'; give "
                             "data_files as {\"" + str(name) + "\": [...]} to name splits")
        rows = _local_rows(files, data_name if local_kind else None, script_dir, col_filters)
        return Rows(rows[part], rows.source, rows.class_names)
    if not data_name:
        raise UsageError("load_dataset_config needs data_files (local files) or data_name (a hub "
                         "dataset, or json/csv/text/parquet with data_files)")
    if local_kind:
        raise UsageError(f"load_dataset_config: data_name {data_name!r} reads local files; give "
                         "data_files")
    return hub_dataset(str(data_name), subset, data_dir, split or "validation", col_filters, **kwargs)


def hub_dataset(data_name: str, subset: str | None, data_dir: str | None, split: str,
                col_filters: Mapping[str, Any] | None = None, **kwargs: Any) -> Rows:
    """Rows of a Hugging Face hub dataset (needs the ``datasets`` package)."""
    try:
        import datasets
    except ImportError:
        raise UsageError(f"data_name {data_name!r} is not a local file, so it names a Hugging Face "
                         "hub dataset, which needs the datasets package (pip install datasets); "
                         "for local files give data_files") from None
    try:
        ds = datasets.load_dataset(data_name, subset, data_dir=data_dir, split=split, **kwargs)
    except Exception as exc:  # datasets raises many types for bad names, splits and network
        raise UsageError(f"cannot load hub dataset {data_name!r} (subset {subset!r}, split "
                         f"{split!r}): {exc}") from None
    rows = Rows(_filtered([dict(r) for r in ds], col_filters), f"{data_name} [{split}]")
    # class-label columns keep their names (Olive's align_labels/labels_to_filter use them)
    rows.class_names = {col: list(feature.names) for col, feature in (ds.features or {}).items()
                        if hasattr(feature, "names") and hasattr(feature, "str2int")}
    return rows


def local_dataset(data_files: Any = None, data_dir: str | None = None, data_name: str | None = None,
                  split: str | None = None, script_dir: str | None = None) -> Any:
    """Olive's default dataset: nothing (``None``); olivine reads ``data_files`` when given."""
    if data_files is None and data_dir is None:
        return None
    return huggingface_dataset(data_name=data_name, data_dir=data_dir, split=split,
                               data_files=data_files, script_dir=script_dir)


def _np_dtype(name: str | None) -> Any:
    import numpy as np

    try:
        return np.dtype(str(name or "float32").replace("torch.", ""))
    except TypeError:
        raise UsageError(f"input_types: {name!r} is not a numpy/torch dtype name") from None


def dummy_dataset(input_shapes: list[list[int]], input_names: list[str] | None = None,
                  input_types: list[str] | None = None, max_samples: int = 32) -> list[Any]:
    """``max_samples`` copies of all-ones inputs of the given shapes, each with label 0."""
    import numpy as np

    types = list(input_types or ["float32"] * len(input_shapes))
    if len(types) != len(input_shapes) or (input_names and len(input_names) != len(input_shapes)):
        raise UsageError("dummy_dataset: input_shapes, input_names and input_types need one entry "
                         "per input")
    arrays = [np.ones(tuple(s), dtype=_np_dtype(t)) for s, t in zip(input_shapes, types, strict=True)]
    data: Any
    if input_names:
        data = dict(zip(input_names, arrays, strict=True))
        data = data if len(data) > 1 else arrays[0]
    else:
        data = tuple(arrays) if len(arrays) > 1 else arrays[0]
    return [(data, 0)] * int(max_samples)


def raw_dataset(data_dir: str, input_names: list[str], input_shapes: list[list[int]],
                input_types: list[str] | None = None, input_dirs: list[str] | None = None,
                input_suffix: str | None = None, input_order_file: str | None = None,
                annotations_file: str | None = None, script_dir: str | None = None) -> list[Any]:
    """Binary numpy files: ``data_dir/<input dir>/<file>`` per input, one item per file name."""
    import numpy as np

    root = resolve_data_file(data_dir, script_dir)
    types = list(input_types or ["float32"] * len(input_names))
    dirs = list(input_dirs or input_names)
    if not len(input_names) == len(input_shapes) == len(types) == len(dirs):
        raise UsageError("raw_dataset: input_names, input_shapes, input_types and input_dirs need "
                         "one entry per input")
    if input_order_file:
        order = [ln.strip() for ln in (root / input_order_file).read_text().splitlines() if ln.strip()]
    else:
        first = root / dirs[0]
        if not first.is_dir():
            raise UsageError(f"raw_dataset: {str(first)!r} is not a folder (data_dir/input_dirs)")
        order = sorted(f.name for f in first.glob(f"*{input_suffix or ''}")
                       if f.name not in (input_order_file, annotations_file))
    labels = np.load(root / annotations_file) if annotations_file else None
    items = []
    for i, name in enumerate(order):
        data = {}
        for inp, shape, dtype, folder in zip(input_names, input_shapes, types, dirs, strict=True):
            path = root / folder / name
            try:
                data[inp] = np.fromfile(path, dtype=_np_dtype(dtype)).reshape(shape)
            except (OSError, ValueError) as exc:
                raise UsageError(f"raw_dataset: {str(path)!r}: {exc}") from None
        items.append((data, 0 if labels is None else labels[i]))
    return items


# -- pre/post process ---------------------------------------------------------------------------
def pre_process(dataset: Any, **kwargs: Any) -> Any:
    """Olive's default (and ``skip_pre_process``): the dataset unchanged."""
    return dataset


def post_process(output_data: Any, **kwargs: Any) -> Any:
    """Olive's default (and ``skip_post_process``): the output unchanged."""
    return output_data


# -- dataloaders --------------------------------------------------------------------------------
def collate(items: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch: dicts by key, tuples by position, arrays stacked."""
    import numpy as np

    first = items[0]
    if isinstance(first, Mapping):
        return {k: collate([it[k] for it in items]) for k in first}
    if isinstance(first, tuple | list) and not isinstance(first, str):
        return type(first)(collate(list(group)) for group in zip(*items, strict=True)) \
            if isinstance(first, tuple) else [collate(list(g)) for g in zip(*items, strict=True)]
    if isinstance(first, str):
        return list(items)
    if hasattr(first, "numpy") and hasattr(first, "detach"):  # a torch tensor
        items = [it.detach().cpu().numpy() for it in items]
    return np.stack([np.asarray(it) for it in items])


class Batches:
    """A simple dataloader: ``batch_size`` items at a time, collated (``None``: no batching)."""

    def __init__(self, dataset: Any, batch_size: int | None = 1, drop_last: bool = False,
                 collate_fn: Any = None) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.collate_fn = collate_fn or collate

    def __iter__(self) -> Iterator[Any]:
        if self.batch_size is None:
            yield from _items(self.dataset)
            return
        chunk: list[Any] = []
        for item in _items(self.dataset):
            chunk.append(item)
            if len(chunk) == self.batch_size:
                yield self.collate_fn(chunk)
                chunk = []
        if chunk and not self.drop_last:
            yield self.collate_fn(chunk)

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def _items(dataset: Any) -> Iterator[Any]:
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        for i in range(len(dataset)):
            yield dataset[i]
    else:
        yield from dataset


def _torch_dataloader(dataset: Any, **kwargs: Any) -> Any | None:
    try:
        from torch.utils.data import DataLoader
    except ImportError:
        return None
    return DataLoader(dataset, **kwargs)


def default_dataloader(dataset: Any, batch_size: int = 1, **kwargs: Any) -> Any:
    """Batches of ``batch_size`` (``torch.utils.data.DataLoader`` when torch is installed)."""
    if dataset is None:
        raise UsageError("the data config's dataset is empty: its load_dataset component gave "
                         "nothing (DataContainer's default local_dataset needs data_files, or "
                         "name a load_dataset_config.type)")
    loader = _torch_dataloader(dataset, batch_size=batch_size, **kwargs)
    if loader is not None:
        return loader
    extra = set(kwargs) - {"drop_last", "collate_fn"}
    if extra:
        raise UsageError(f"dataloader_config: {', '.join(sorted(extra))} need torch's DataLoader "
                         "(pip install torch)")
    return Batches(dataset, batch_size, **kwargs)


def no_auto_batch_dataloader(dataset: Any, **kwargs: Any) -> Any:
    """Items as they are: the dataset already yields batches."""
    kwargs.pop("batch_size", None)
    loader = _torch_dataloader(dataset, batch_size=None, **kwargs)
    return loader if loader is not None else Batches(dataset, None)


def dataloader_with_ignored_batch_fields(dataset: Any, batch_size: int = 1,
                                         fields_no_batch: str | list[str] = "step",
                                         **kwargs: Any) -> Any:
    """Batches whose ``fields_no_batch`` inputs keep the first item's value (not stacked)."""
    ignore = [fields_no_batch] if isinstance(fields_no_batch, str) else list(fields_no_batch)

    def collate_ignoring(items: Sequence[Any]) -> Any:
        inputs, label = collate(items)
        if isinstance(inputs, dict):
            for k in ignore:
                if k in inputs:
                    inputs[k] = inputs[k][0].item()
        return [inputs, label]

    return Batches(dataset, batch_size, collate_fn=collate_ignoring, **kwargs)


# -- the table ----------------------------------------------------------------------------------
CONTAINERS = (
    DataContainerSpec("DataContainer"),
    DataContainerSpec(
        "HuggingfaceContainer",
        {LOAD_DATASET: "huggingface_dataset", PRE_PROCESS_DATA: "huggingface_pre_process"},
        {"feature-extraction": {PRE_PROCESS_DATA: "tokenizer_pre_process"},
         "text-classification": {POST_PROCESS_DATA: "text_classification_post_process"},
         "ner": {PRE_PROCESS_DATA: "ner_huggingface_preprocess",
                 POST_PROCESS_DATA: "ner_post_process"},
         "text-generation": {PRE_PROCESS_DATA: "text_generation_huggingface_pre_process",
                             POST_PROCESS_DATA: "text_generation_post_process"},
         "audio-classification": {PRE_PROCESS_DATA: "audio_classification_pre_process",
                                  POST_PROCESS_DATA: "text_classification_post_process"},
         "speech-transcription": {PRE_PROCESS_DATA: "speech_transcription_pre_process"},
         **{task: {PRE_PROCESS_DATA: "vision_vqa_pre_process", DATALOADER: "vision_vqa_dataloader"}
            for task in ("vision-vqa", "vision-chart-qa", "vision-ocr")}},
        {"pre_process_data_config": ("model_name", "task", "trust_remote_code"),
         "post_process_data_config": ("model_name", "task", "trust_remote_code")}),
    DataContainerSpec("DummyDataContainer", {LOAD_DATASET: "dummy_dataset",
                                             DATALOADER: "no_auto_batch_dataloader"}),
    DataContainerSpec("RawDataContainer", {LOAD_DATASET: "raw_dataset",
                                           DATALOADER: "no_auto_batch_dataloader"}),
)


def table() -> dict[str, dict[str, Any]]:
    """kind -> lower-case name -> component (containers: :class:`DataContainerSpec`)."""
    out: dict[str, dict[str, Any]] = {k: {} for k in (*KINDS, DATA_CONTAINER)}
    for name in ("local_dataset", "default_load_dataset", "simple_dataset"):
        out[LOAD_DATASET][name] = local_dataset
    out[LOAD_DATASET].update(huggingface_dataset=huggingface_dataset, dummy_dataset=dummy_dataset,
                             raw_dataset=raw_dataset)
    for name in ("pre_process", "default_pre_process_data", "skip_pre_process"):
        out[PRE_PROCESS_DATA][name] = pre_process
    for name in ("post_process", "default_post_process_data", "skip_post_process"):
        out[POST_PROCESS_DATA][name] = post_process
    out[DATALOADER].update(default_dataloader=default_dataloader,
                           no_auto_batch_dataloader=no_auto_batch_dataloader,
                           dataloader_with_ignored_batch_fields=dataloader_with_ignored_batch_fields)
    for spec in CONTAINERS:
        out[DATA_CONTAINER][spec.name.lower()] = spec
    return out
