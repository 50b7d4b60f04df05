"""Files a user's config names: a Python file's function (Olive's ``user_script`` + function
name) and data files found relative to the working directory or ``script_dir``."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from olivine.errors import UsageError


def load_function(script: str, func: str, script_key: str, func_key: str) -> Callable[..., Any]:
    """``func`` from the file ``script`` (relative paths from the working directory).

    ``script_key`` and ``func_key`` name the config keys in error messages, so a missing
    file or function is reported where the user wrote it.
    """
    path = Path(script).expanduser()
    if not path.is_file():
        raise UsageError(f"{script_key}: no such file {script!r}")
    name = f"olivine_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{script_key}: {script!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    fn = getattr(module, func, None)
    if not callable(fn):
        raise UsageError(f"{func_key}: {path} defines no function {func!r}")
    return fn


def resolve_data_file(value: str, script_dir: str | None = None) -> Path:
    """A data file or folder: as given, from the working directory, then under ``script_dir``.

    Raises :class:`UsageError` naming the value and where it was looked for.
    """
    p = Path(value).expanduser()
    if p.exists():
        return p.resolve()
    if script_dir and (Path(script_dir) / p).exists():
        return (Path(script_dir) / p).resolve()
    where = ", then under script_dir" if script_dir else ""
    raise UsageError(f"data file {value!r} does not exist (relative paths are taken from the "
                     f"working directory{where})")
