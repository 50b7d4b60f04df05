"""olivine's one data layer: Olive's data containers and components, and the local readers.

* :mod:`olivine.data.readers`: json/jsonl, csv/tsv, text, parquet files, one wording
  for every bad file (naming the file and line);
* :mod:`olivine.data.registry`: components and containers by name (Olive's
  ``Registry``), from olivine, plugins (``register_data_components``) and user scripts;
* :mod:`olivine.data.builtin`: olivine's own components under Olive's names;
* :mod:`olivine.data.pipeline`: a data config resolved and run
  (:func:`resolve` -> :meth:`ResolvedData.create_dataloader`);
* :mod:`olivine.data.olive_compat`: ``from olive.data.registry import Registry`` in user
  scripts without Olive installed.

Importing this package is cheap: numpy, torch and pyarrow are imported when data is read.
"""

from __future__ import annotations

from olivine.data.builtin import Batches, Rows, hub_dataset
from olivine.data.pipeline import ResolvedData, model_info, resolve, section_options, validate
from olivine.data.readers import (
    LOADERS,
    columns_of,
    expand_files,
    file_format,
    parquet_schema,
    read_rows,
    read_text,
    split_files,
)
from olivine.data.registry import DataContainerSpec, Registry

__all__ = ["LOADERS", "Batches", "DataContainerSpec", "Registry", "ResolvedData", "Rows",
           "columns_of", "expand_files", "file_format", "hub_dataset", "model_info",
           "parquet_schema", "read_rows", "read_text", "resolve", "section_options", "split_files",
           "validate"]
