"""What the OpenVINO passes share: dependency checks, user functions, data, side files."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from olivine import UsageError

#: import name -> (distribution, what needs it)
MODULES = {
    "openvino": "openvino",
    "nncf": "nncf",
    "optimum.intel": "optimum-intel",
    "onnx": "onnx",
}
INSTALL = "pip install 'olivine-openvino[openvino]' (or: tox -e openvino)"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(modules: Iterable[str]) -> list[str]:
    """The distributions of ``modules`` that are not installed."""
    return [MODULES.get(m, m) for m in modules if not _importable(m)]


def dependency_problems(pass_name: str, modules: Iterable[str]) -> list[str]:
    """A config problem naming what to install when any of ``modules`` is absent."""
    gone = missing(modules)
    if not gone:
        return []
    return [f"{pass_name} needs {', '.join(gone)}, not installed here: {INSTALL}"]


def user_function(config: Any, key: str) -> Callable[..., Any] | None:
    """The function named by option ``key`` from the pass's ``user_script`` (None if unset)."""
    from olivine import call_object, load_module

    name = getattr(config, key)
    if name is None:
        return None
    if config.user_script is None:
        raise UsageError(f"{key}: names a function, so user_script must name the file defining it")
    module = load_module(config.user_script, config.script_dir, "user_script")
    return call_object(module, name, key)


def _default_transform(item: Any) -> Any:
    """Olive's default transform: a dataloader item is ``(inputs, label)``; the inputs go in."""
    if isinstance(item, tuple | list) and len(item) == 2:
        return item[0]
    return item


def _numpy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def nncf_dataset(config: Any, context: Any, model: Any, required: bool = True) -> Any:
    """``nncf.Dataset`` over the batches of ``config.data_config`` (the host's data layer),
    through ``transform_fn`` from the user script or Olive's default (inputs of ``(inputs,
    label)``). ``None`` when no data_config is set and none is ``required``."""
    import nncf

    from olivine.data import resolve

    if config.data_config is None:
        if required:
            raise UsageError("data_config: required")
        return None
    dc = context.data_configs.get(config.data_config)
    if dc is None:
        raise UsageError(f"data_config {config.data_config!r} is not defined in the workflow")
    batches = list(resolve(dc, model).create_dataloader())
    if not batches:
        raise UsageError(f"data config {config.data_config!r} yields no samples")
    user = user_function(config, "transform_fn")
    if user is not None:
        return nncf.Dataset(batches, user)
    return nncf.Dataset(batches, lambda item: _numpy(_default_transform(item)))


def copy_side_files(src: Path, dst: Path) -> None:
    """Copy the json/txt files and tokenizer folders next to an IR (optimum-intel's genai layout)."""
    from olivine_openvino.model import TOKENIZER_DIRS

    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.suffix in (".json", ".txt"):
            _link_or_copy(item, dst / item.name)
        elif item.is_dir() and item.name in TOKENIZER_DIRS:
            shutil.copytree(item, dst / item.name, dirs_exist_ok=True, copy_function=_link_or_copy)


def _link_or_copy(src: Any, dst: Any) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_ir(src_xml: Path, dst_dir: Path, stem: str) -> None:
    """Hard-link (or copy) ``src_xml`` and its ``.bin`` into ``dst_dir`` as ``stem``.xml/.bin."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    _link_or_copy(src_xml, dst_dir / f"{stem}.xml")
    _link_or_copy(src_xml.with_suffix(".bin"), dst_dir / f"{stem}.bin")


def ignored_scope(config: Any) -> Any:
    """``nncf.IgnoredScope`` from Olive's ``ignored_scope`` + ``ignored_scope_type`` (or None)."""
    import nncf

    if not config.ignored_scope:
        return None
    types = config.ignored_scope_type
    if isinstance(types, list):
        return nncf.IgnoredScope(**dict(zip(types, config.ignored_scope, strict=True)))
    return nncf.IgnoredScope(**{types: config.ignored_scope})


def nncf_target_device(name: str) -> Any:
    """Olive's device name -> ``nncf.TargetDevice`` (unknown names are ANY, as in Olive)."""
    import nncf

    table = {"cpu": "CPU", "gpu": "GPU", "cpu_spr": "CPU_SPR", "npu": "NPU", "any": "ANY"}
    return getattr(nncf.TargetDevice, table.get(name, "ANY"))
