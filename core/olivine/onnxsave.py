"""Saving ONNX models the way Olive's passes do: the external-data options, once for every plugin.

A pass whose output is an ONNX file mixes :class:`ExternalDataOptions` into its ``Config``
(Olive's five option names and defaults) and writes its ``onnx.ModelProto`` with
:func:`save_onnx`, which returns the handle of the saved model::

    @attrs.frozen
    class MyConfig(ExternalDataOptions):
        alpha: float = 1.0

    def run(self, model, config, context):
        proto = ...
        return save_onnx(proto, context.work_dir, config, source=model)

The options are keyword-only attrs fields, so a subclass may still declare required
fields. ``onnx`` is imported inside :func:`save_onnx` only: importing this module is cheap.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import attrs

from olivine.models import ModelHandle, OnnxModel
from olivine.options import option
from olivine.safepath import component_problem

__all__ = ["PROTOBUF_LIMIT", "ExternalDataOptions", "copy_sidecar_files", "plain_data", "save_onnx"]

#: Above this serialized size a model cannot be one protobuf file: its tensors go to
#: external data whatever ``save_as_external_data`` says (as in Olive).
PROTOBUF_LIMIT = 2_147_483_648 - 64 * 1024 * 1024


def _file_name(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is None:
        return
    problem = component_problem(value)
    if problem:
        raise ValueError(f"{attribute.name}: {problem}")


def _not_negative(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name}: expected a number >= 0, got {value}")


@attrs.frozen
class ExternalDataOptions:
    """Olive's external-data options of every pass that writes an ONNX file."""

    save_as_external_data: bool = attrs.field(
        default=False, kw_only=True,
        metadata=option(help="write tensor data to separate files instead of into the .onnx file "
                             "(models over 2 GB are written so regardless)"))
    all_tensors_to_one_file: bool = attrs.field(
        default=True, kw_only=True,
        metadata=option(help="with save_as_external_data: all tensors in one file "
                             "(external_data_name); false: one file per tensor"))
    external_data_name: str | None = attrs.field(
        default=None, kw_only=True, validator=_file_name,
        metadata=option(help="with save_as_external_data and all_tensors_to_one_file: the data "
                             "file's name (default: <model file name>.data)"))
    size_threshold: int = attrs.field(
        default=1024, kw_only=True, validator=_not_negative,
        metadata=option(help="with save_as_external_data: only tensors of at least this many "
                             "bytes go to external data (0: every tensor)"))
    convert_attribute: bool = attrs.field(
        default=False, kw_only=True,
        metadata=option(help="with save_as_external_data: also move tensors held in node "
                             "attributes (Constant values) to external data"))


def save_onnx(proto: Any, folder: Path, options: Any = None, *, file_name: str = "model.onnx",
              source: ModelHandle | None = None, sidecars: bool = True,
              **attributes: Any) -> OnnxModel:
    """Save ``proto`` as ``folder/file_name`` as ``options`` (an :class:`ExternalDataOptions`) say.

    Without ``options`` the defaults apply. Tensors that ``proto`` holds as external data must
    have been loaded (``onnx.load(..., load_external_data=True)``). With ``source``, the files
    beside its model (tokenizer, ``config.json``, ...) are copied along when ``sidecars`` is
    true, and the returned handle keeps its attributes, updated with ``attributes``.
    """
    import onnx

    opts = options if options is not None else ExternalDataOptions()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file_name
    external = bool(opts.save_as_external_data)
    if not external:
        try:
            size = proto.ByteSize()
        except Exception:  # protobuf refuses to size models over 2 GB on some platforms
            size = -1
        external = size < 0 or size >= PROTOBUF_LIMIT
    for stale in (target, folder / (opts.external_data_name or file_name + ".data")):
        stale.unlink(missing_ok=True)
    if external:
        one_file = bool(opts.all_tensors_to_one_file)
        location = (opts.external_data_name or file_name + ".data") if one_file else None
        if not opts.save_as_external_data:  # forced by size: keep every tensor out of the file
            one_file, location = True, opts.external_data_name or file_name + ".data"
        onnx.save_model(proto, str(target), save_as_external_data=True,
                        all_tensors_to_one_file=one_file, location=location,
                        size_threshold=int(opts.size_threshold),
                        convert_attribute=bool(opts.convert_attribute))
    else:
        onnx.save_model(proto, str(target))
    if source is not None and sidecars:
        copy_sidecar_files(source, folder, skip={p.name for p in folder.iterdir()})
    merged = {**(source.attrs_dict() if source is not None else {}), **attributes}
    return OnnxModel(path=str(folder), onnx_file_name=file_name, attributes=plain_data(merged))


def copy_sidecar_files(model: ModelHandle, dest: Path, skip: set[str] | None = None) -> list[str]:
    """Copy the files beside an ONNX model (tokenizer, configs) into ``dest``; return their names.

    The ``.onnx`` files, the model's external data, ``run.json``, ``summary.txt`` and names in
    ``skip`` stay behind.
    """
    if not isinstance(model, OnnxModel):
        return []
    src = Path(model.path)
    if not src.is_dir():
        return []
    from olivine.models import _external_data_files

    leave = {p.name for p in _external_data_files(model.model_file())}
    for other in src.glob("*.onnx"):  # the external data of the other models there (a composite's)
        leave |= {p.name for p in _external_data_files(other)}
    leave |= {"run.json", "summary.txt"} | (skip or set())
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix != ".onnx" and f.name not in leave:
            shutil.copy2(f, dest / f.name)
            copied.append(f.name)
    return copied


def plain_data(value: Any) -> Any:
    """Handle attribute values as plain JSON data: read-only mappings (FrozenDict) become
    dicts and tuples become lists, all the way down."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    return value
