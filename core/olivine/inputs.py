"""The files a step reads besides its input model, described for its cache key.

A step's key must change whenever something it reads changes, and must stay the same
when the whole project folder moves (a shared cache). So every local file a step
reads is described by its content hash and by a *portable name*: its path relative to
the folder it was found from (the data config's ``script_dir``, the config's folder,
the working directory), or just its file name when it lies outside all of them.
Absolute paths never enter a key.

What counts as read:

- pass options whose attrs field metadata has ``"input_path": True``
  (:data:`INPUT_PATH`): a file or folder path, or a list or mapping of them; for a
  mapping-valued option (a pass-through ``extra_options``), ``"input_path"`` may instead
  be a tuple of the keys whose values are paths;
- the ``data_configs`` entries named by options with ``"data_config": True``, whole,
  with their ``user_script`` and the data files their ``load_dataset_config`` and
  ``pre_process_data_config`` name (``data_files``, ``data_dir``, ``path``, ..., flat or
  under ``params``), and the
  ``.py`` files of ``script_dir`` when a ``user_script`` is given;
- the files a pass entry lists in ``input_files`` (what a user script opens on its own,
  which olivine cannot see).

A value that names no local file (a hub id, a missing path) stays as written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from olivine.config.typed import unstructure

#: Field metadata key marking a pass option that names a local file or folder the pass reads.
INPUT_PATH = "input_path"
#: Field metadata key marking a pass option that names a ``data_configs`` entry.
DATA_CONFIG = "data_config"
#: Keys of a data config's sections whose values may name local files or folders.
DATA_FILE_KEYS = ("data_files", "data_file", "data_dir", "path", "data_name", "model_name",
                  "tokenizer", "user_script")
_DATA_SECTIONS = ("load_dataset_config", "pre_process_data_config", "post_process_data_config",
                  "dataloader_config")


class InputDescriber:
    """Turns path-valued options and data configs into portable, content-hashed descriptions.

    ``file_hash`` is the cache's memoized hasher (by path, size and mtime); relative
    values are looked up from the working directory, then from ``base_dir`` (the
    config's folder), as the passes and data readers do.
    """

    def __init__(self, file_hash: Callable[[Path], str], base_dir: str | Path) -> None:
        self.file_hash = file_hash
        self.base_dir = Path(base_dir).expanduser().resolve()

    # -- single paths -----------------------------------------------------------------
    def find(self, value: str, script_dir: str | None = None) -> Path | None:
        """The local file or folder ``value`` names, or ``None`` (a hub id, a missing path)."""
        p = Path(value).expanduser()
        if p.is_absolute():
            return p.resolve() if p.exists() else None
        for root in (Path.cwd(), *([Path(script_dir)] if script_dir else []), self.base_dir):
            if (root / p).exists():
                return (root / p).resolve()
        return None

    def portable_name(self, path: Path, script_dir: str | None = None) -> str:
        """``path`` relative to the script folder, the config's folder or the working directory."""
        roots = [Path(script_dir).resolve()] if script_dir else []
        for root in (*roots, self.base_dir, Path.cwd().resolve()):
            if path == root or path.is_relative_to(root):
                return path.relative_to(root).as_posix() or "."
        return path.name

    def path(self, value: Any, script_dir: str | None = None) -> Any:
        """A path value as ``{"path": portable name, "sha256" | "files": ...}``; others unchanged."""
        if not isinstance(value, str) or not value:
            return value
        found = self.find(value, script_dir)
        if found is None:
            return value
        name = self.portable_name(found, script_dir)
        if found.is_file():
            return {"path": name, "sha256": self.file_hash(found)}
        files = sorted(f for f in found.rglob("*") if f.is_file())
        return {"path": name, "files": {f.relative_to(found).as_posix(): self.file_hash(f)
                                        for f in files}}

    def paths(self, value: Any, script_dir: str | None = None) -> Any:
        """:meth:`path` over a string, a list of them or a mapping of them."""
        if isinstance(value, Mapping):
            return {str(k): self.paths(v, script_dir) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.paths(v, script_dir) for v in value]
        return self.path(value, script_dir)

    # -- configs ----------------------------------------------------------------------
    def config(self, config: Any, data_configs: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """A pass config for the key, and the data configs it names (described).

        Path-valued options (:data:`INPUT_PATH`) become content descriptions; options
        marked :data:`DATA_CONFIG` bring in their data config.
        """
        used: dict[str, Any] = {}
        return self._walk(config, data_configs, used), used

    def _walk(self, obj: Any, data_configs: Mapping[str, Any], used: dict[str, Any]) -> Any:
        if not attrs.has(type(obj)):
            return unstructure(obj)
        out: dict[str, Any] = {}
        for field in attrs.fields(type(obj)):
            if field.name.startswith("_"):
                continue
            value = getattr(obj, field.name)
            marked = field.metadata.get(INPUT_PATH)
            if isinstance(marked, tuple | list) and isinstance(value, Mapping):
                out[field.name] = {str(k): self.paths(unstructure(v)) if k in marked
                                   else unstructure(v) for k, v in value.items()}
            elif marked:
                out[field.name] = self.paths(unstructure(value))
            elif field.metadata.get(DATA_CONFIG) and isinstance(value, str):
                out[field.name] = value
                if value in data_configs and value not in used:
                    used[value] = self.data_config(data_configs[value])
            else:
                out[field.name] = self._walk(value, data_configs, used)
        return out

    def data_config(self, dc: Any) -> dict[str, Any]:
        """A ``data_configs`` entry with its files described and ``script_dir`` made portable."""
        data = unstructure(dc)
        data = dict(data) if isinstance(data, Mapping) else {}
        script_dir = data.get("script_dir")
        script_dir = str(script_dir) if script_dir else None
        if script_dir:
            found = self.find(script_dir)
            data["script_dir"] = self.portable_name(found) if found else script_dir
        if data.get("user_script"):
            data["user_script"] = self.path(str(data["user_script"]), script_dir)
            folder = self.find(script_dir) if script_dir else None
            if folder is not None and folder.is_dir():
                data["script_dir_modules"] = {f.name: self.file_hash(f)
                                              for f in sorted(folder.glob("*.py")) if f.is_file()}
        for section in _DATA_SECTIONS:
            block = data.get(section)
            if not isinstance(block, Mapping):
                continue
            block = self._data_block(block, script_dir)
            if isinstance(block.get("params"), Mapping):  # Olive's nested form
                block["params"] = self._data_block(block["params"], script_dir)
            data[section] = block
        return data

    def _data_block(self, block: Mapping[str, Any], script_dir: str | None) -> dict[str, Any]:
        out = dict(block)
        for key in DATA_FILE_KEYS:
            if key in out:
                out[key] = self.paths(out[key], script_dir)
        return out

    def files(self, values: Sequence[str]) -> list[Any]:
        """Files a pass entry declares in ``input_files``, described."""
        return [self.path(v) for v in values]

