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


_MODULES: dict[tuple[str, float], Any] = {}


def load_module(script: str, script_dir: str | None, key: str) -> Any:
    """Import the Python file ``script`` as Olive does: ``script_dir`` on ``sys.path`` first.

    Relative ``script`` paths are taken from the working directory, then from
    ``script_dir``. Olive's ``olive`` imports work inside it (see
    :mod:`olivine.data.olive_compat`). A file is imported once per process and
    modification time. ``key`` names the config key in errors; an exception raised by
    the script itself is reported as a :class:`UsageError` naming the script.
    """
    from olivine.data.olive_compat import active

    if script_dir is not None:
        folder = Path(script_dir).expanduser()
        if not folder.is_dir():
            raise UsageError(f"script_dir: no such folder {script_dir!r}")
        if str(folder.resolve()) not in sys.path:
            sys.path.append(str(folder.resolve()))
    path = Path(script).expanduser()
    if not path.is_file() and script_dir and (Path(script_dir) / path).is_file():
        path = Path(script_dir) / path
    if not path.is_file():
        where = " (looked in the working directory and script_dir)" if script_dir else ""
        raise UsageError(f"{key}: no such file {script!r}{where}")
    path = path.resolve()
    cache_key = (str(path), path.stat().st_mtime)
    if cache_key in _MODULES:
        return _MODULES[cache_key]
    name = f"olivine_user_{path.stem}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{key}: {script!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with active():
            spec.loader.exec_module(module)
    except UsageError:
        raise
    except ImportError as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"{key}: {path.name} cannot be imported: {exc}") from exc
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"{key}: {path.name} failed while loading: {type(exc).__name__}: "
                         f"{exc}") from exc
    _MODULES[cache_key] = module
    return module


def call_object(module: Any, name: str, key: str) -> Callable[..., Any]:
    """The callable ``name`` of ``module`` (``key`` names the config key in errors)."""
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UsageError(f"{key}: {Path(module.__file__ or '?').name} defines no function "
                         f"{name!r}")
    return fn
