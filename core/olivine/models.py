"""Immutable model handles: what a pass takes and returns.

A handle names an artifact on disk (or on a model hub) and carries what is known
about it. Handles are small frozen attrs objects; the files they name live in
the cache or in the user's folders. ``kind`` is what passes declare in
``accepts`` and ``produces``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs


class FrozenDict(dict[str, Any]):
    """A read-only, hashable dict: nested mappings inside handle attributes."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("model handle attributes are read-only")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _read_only  # type: ignore


def _freeze_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict({str(k): _freeze_value(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze_value(v) for v in value)
    return value


def _freeze(value: Any) -> Any:
    """Top-level mapping -> sorted (key, value) pairs; nested mappings -> FrozenDict."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze_value(v)) for k, v in value.items()))
    return tuple(tuple(p) if isinstance(p, list) else p for p in value)


def freeze_mapping(value: Any) -> tuple[tuple[str, Any], ...]:
    """The converter of a handle's mapping fields: sorted ``(key, value)`` pairs, nested read-only.

    A plugin's model kind uses it for fields that hold options
    (``attrs.field(default=(), converter=olivine.freeze_mapping)``), so handles stay hashable.
    """
    return _freeze(value)


@attrs.frozen
class ModelHandle:
    """Base of every model handle."""

    kind: ClassVar[str] = "model"
    path: str
    attributes: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_freeze)

    def local_path(self) -> Path | None:
        """The handle's folder or file if it is on this machine, else ``None``."""
        p = Path(self.path)
        return p if p.exists() else None

    def files(self) -> list[Path]:
        """Every file whose content makes up the model (for identity and copying)."""
        p = self.local_path()
        if p is None:
            return []
        if p.is_file():
            return [p]
        return sorted(f for f in p.rglob("*") if f.is_file())

    def attrs_dict(self) -> dict[str, Any]:
        """``attributes`` as a plain dict."""
        return {k: v for k, v in self.attributes}

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """A JSON-ready description; paths under ``relative_to`` become relative."""
        data: dict[str, Any] = {"kind": self.kind}
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if field.name == "attributes":
                value = {k: v for k, v in value}
            elif isinstance(value, ModelHandle):
                value = value.to_dict(relative_to)
            elif field.name in _PATH_FIELDS and isinstance(value, str):
                value = _relative(value, relative_to)
            elif field.name == "components":
                value = [[n, h.to_dict(relative_to)] for n, h in value]
            data[field.name] = value
        return data

    def rebased(self, old: Path, new: Path) -> ModelHandle:
        """A copy whose paths under ``old`` point under ``new`` instead."""
        changes: dict[str, Any] = {}
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if isinstance(value, ModelHandle):
                changes[field.name] = value.rebased(old, new)
            elif field.name in _PATH_FIELDS and isinstance(value, str):
                changes[field.name] = _rebase(value, old, new)
            elif field.name == "components":
                changes[field.name] = tuple((n, h.rebased(old, new)) for n, h in value)
        return attrs.evolve(self, **changes)


_PATH_FIELDS = {"path", "adapter_path", "model_script", "script_dir"}


def _relative(value: str, base: Path | None) -> str:
    if base is None:
        return value
    try:
        return Path(value).relative_to(base).as_posix() or "."
    except ValueError:
        return value


def _rebase(value: str, old: Path, new: Path) -> str:
    try:
        rel = Path(value).relative_to(old)
    except ValueError:
        return value
    return str(new / rel)


@attrs.frozen
class HfModel(ModelHandle):
    """A Hugging Face model: a local folder or a hub id, with its task and load options."""

    kind: ClassVar[str] = "hf"
    task: str = "text-generation"
    load_kwargs: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_freeze)
    adapter_path: str | None = None
    #: Olive's IoConfig of the model (names, shapes, types, dynamic axes, kv_cache), or ()
    io_config: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_freeze)

    def io_config_dict(self) -> dict[str, Any]:
        """``io_config`` as a plain dict (nested values stay read-only)."""
        return {k: v for k, v in self.io_config}

    def is_local(self) -> bool:
        """True when ``path`` is a folder on this machine (not a hub id)."""
        return Path(self.path).is_dir()

    def load_options(self) -> dict[str, Any]:
        """``load_kwargs`` as a plain dict (``trust_remote_code``, ``torch_dtype``, ...)."""
        return {k: v for k, v in self.load_kwargs}


def _freeze_io(value: Any) -> Any:
    """An io_config mapping frozen; a function name or ``None`` as it is."""
    return value if value is None or isinstance(value, str) else _freeze(value)


@attrs.frozen
class PyTorchModel(ModelHandle):
    """A torch model that a user function loads (Olive's ``PyTorchModel``).

    ``path`` is Olive's ``model_path`` as given to ``model_loader`` (a local file or folder,
    made absolute, or a hub id; empty when none is given). ``model_script`` and the
    ``.py`` files of ``script_dir`` are part of the model's content (its cache identity).
    ``io_config`` is a mapping, or the name of a function in ``model_script``.
    """

    kind: ClassVar[str] = "pytorch"
    model_loader: str | None = None
    model_script: str | None = None
    script_dir: str | None = None
    model_file_format: str = "PyTorch.StateDict"
    io_config: Any = attrs.field(default=None, converter=_freeze_io)
    dummy_inputs_func: str | None = None

    @property
    def model_path(self) -> str | None:
        """Olive's name for ``path`` (``None`` when no model_path was given)."""
        return self.path or None

    def io_config_dict(self) -> dict[str, Any] | str | None:
        """``io_config`` as a plain dict (or the function name, or ``None``)."""
        if self.io_config is None or isinstance(self.io_config, str):
            return self.io_config
        return {k: v for k, v in self.io_config}

    def files(self) -> list[Path]:
        """The local model files, ``model_script`` and the ``.py`` files of ``script_dir``."""
        out = super().files() if self.path else []
        if self.model_script and Path(self.model_script).is_file():
            out.append(Path(self.model_script))
        if self.script_dir and Path(self.script_dir).is_dir():
            out.extend(sorted(f for f in Path(self.script_dir).glob("*.py") if f.is_file()))
        return sorted(set(out))


@attrs.frozen
class OnnxModel(ModelHandle):
    """An ONNX model: a folder holding ``onnx_file_name`` and its external data, or one file.

    Folders may also hold onnxruntime-genai files (``genai_config.json``, tokenizer).
    """

    kind: ClassVar[str] = "onnx"
    onnx_file_name: str | None = None

    def model_file(self) -> Path:
        """The ``.onnx`` file itself."""
        p = Path(self.path)
        if p.is_file() or p.suffix == ".onnx":
            return p
        if self.onnx_file_name:
            return p / self.onnx_file_name
        candidates = sorted(p.glob("*.onnx"))
        if len(candidates) == 1:
            return candidates[0]
        if (p / "model.onnx").exists():
            return p / "model.onnx"
        raise FileNotFoundError(
            f"{p} holds {len(candidates)} .onnx files; set onnx_file_name to pick one"
        )

    def files(self) -> list[Path]:
        """The model file plus its external data (the whole folder when one is given)."""
        p = Path(self.path)
        if p.is_file():
            return [p, *_external_data_files(p)]
        return super().files()


def outside_external_data(model_file: Path) -> list[str]:
    """External-data locations of ``model_file`` that resolve outside its folder (refused).

    Raises ValueError when the file is not a well-formed ONNX model.
    """
    from olivine.onnxfile import external_data_locations

    return _outside(model_file.parent, external_data_locations(model_file))


def _outside(folder: Path, names: list[str]) -> list[str]:
    from olivine.safepath import is_inside

    return [n for n in names if os.path.isabs(n) or "\x00" in n or not is_inside(folder / n, folder)]


def _external_data_files(model_file: Path) -> list[Path]:
    """External-data files that a single ``.onnx`` file refers to (only those in its folder)."""
    from olivine.onnxfile import external_data_locations

    try:
        names = external_data_locations(model_file)
    except ValueError:  # not a readable model: the passes reading it report that
        guess = model_file.with_name(model_file.name + ".data")
        return [guess] if guess.exists() else []
    bad = set(_outside(model_file.parent, names))
    return sorted(model_file.parent / n for n in names if n not in bad)


@attrs.frozen
class AdapterModel(ModelHandle):
    """A LoRA adapter (``path``) for a base model (``base``)."""

    kind: ClassVar[str] = "adapter"
    base: ModelHandle | None = None


@attrs.frozen
class CompositeModel(ModelHandle):
    """Several named models that work together (for example encoder and decoder)."""

    kind: ClassVar[str] = "composite"
    components: tuple[tuple[str, ModelHandle], ...] = ()

    def files(self) -> list[Path]:
        """The files of every component (once each), and those of the composite's own folder
        when every component lies in it (the tokenizer and configs they share)."""
        out = {f for _, handle in self.components for f in handle.files()}
        if self.holds_components():
            out.update(super().files())
        return sorted(out)

    def holds_components(self) -> bool:
        """True when ``path`` is a local folder with every component inside it."""
        folder = self.local_path()
        if folder is None or not folder.is_dir() or not self.components:
            return False
        from olivine.safepath import is_inside

        return all(is_inside(handle.path, folder) for _, handle in self.components)


#: kind -> handle class: the host's kinds, then those plugins register (register_model_kinds)
HANDLE_TYPES: dict[str, type[ModelHandle]] = {
    cls.kind: cls for cls in (HfModel, OnnxModel, AdapterModel, CompositeModel, PyTorchModel)
}

BUILTIN_KINDS: tuple[type[ModelHandle], ...] = tuple(HANDLE_TYPES.values())


def register_kind(cls: Any) -> None:
    """Add a handle class to :data:`HANDLE_TYPES`; ValueError when it is not a valid kind."""
    if not (isinstance(cls, type) and issubclass(cls, ModelHandle) and attrs.has(cls)):
        raise ValueError(f"{cls!r} is not an attrs subclass of olivine.ModelHandle")
    kind = cls.__dict__.get("kind")
    if not isinstance(kind, str) or not kind or kind == ModelHandle.kind:
        raise ValueError(f"{cls.__qualname__} sets no kind of its own (a class variable 'kind')")
    other = HANDLE_TYPES.get(kind)
    if other is not None and other is not cls:
        raise ValueError(f"model kind {kind!r} is registered twice: {other.__module__}."
                         f"{other.__qualname__} and {cls.__module__}.{cls.__qualname__}")
    HANDLE_TYPES[kind] = cls  # type: ignore[assignment]  # checked above


def handle_type(kind: str) -> type[ModelHandle]:
    """The handle class of ``kind``, loading the plugins when a plugin's kind is asked for."""
    cls = HANDLE_TYPES.get(kind)
    if cls is None:
        from olivine.plugins import get_plugin_host

        get_plugin_host()
        cls = HANDLE_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown model kind {kind!r}: no installed plugin registers it "
                         f"(known: {', '.join(sorted(HANDLE_TYPES))})")
    return cls


def handle_from_dict(data: Mapping[str, Any], base: Path | None = None) -> ModelHandle:
    """Rebuild a handle written by :meth:`ModelHandle.to_dict`; relative paths join ``base``."""
    data = dict(data)
    cls = handle_type(str(data.pop("kind")))
    kwargs: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.name not in data:
            continue
        value = data[field.name]
        if field.name in _PATH_FIELDS and isinstance(value, str) and base is not None:
            value = str(base / value) if not os.path.isabs(value) else value
        elif field.name == "base" and isinstance(value, Mapping):
            value = handle_from_dict(value, base)
        elif field.name == "components":
            value = tuple((n, handle_from_dict(h, base)) for n, h in value)
        kwargs[field.name] = value
    return cls(**kwargs)


def iter_kinds() -> Iterator[str]:
    """The model kinds the host knows."""
    return iter(HANDLE_TYPES)
