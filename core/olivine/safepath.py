"""Names from configs and model files never become paths outside their root.

Two checks, used by every place that turns a user-given name into a path:

- :func:`check_component` says whether a name is one path component (no ``/``,
  ``\\``, ``..``, NUL, at most 255 bytes). Config validation calls it and reports
  the bad key.
- :func:`inside` joins names under a root and refuses a result that resolves
  (symlinks followed) outside that root. Writes under the cache, the output and a
  step's work folder go through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from olivine.errors import UsageError

#: The longest file name most file systems take (ext4, XFS, APFS, NTFS in UTF-16 units).
MAX_COMPONENT_BYTES = 255


def component_problem(name: str) -> str | None:
    """Why ``name`` is not a single, safe path component, or ``None`` when it is."""
    if not isinstance(name, str) or name == "":
        return "must be a non-empty name"
    if "\x00" in name:
        return "must not contain a NUL character"
    if "/" in name or "\\" in name:
        return "must be a single name, without '/' or '\\'"
    if name in (".", ".."):
        return f"must not be {name!r}"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
        return f"is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def path_problem(path: str | Path) -> str | None:
    """Why the file system would refuse ``path`` outright (a NUL, a name over 255 bytes), or ``None``.

    Each folder and file name of a user-given path is checked, so that a too-long
    name is a clear message rather than an ``OSError`` from deep inside a run.
    """
    text = str(path)
    if "\x00" in text:
        return "must not contain a NUL character"
    for part in Path(text).parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            shown = part if len(part) <= 40 else part[:20] + "..." + part[-12:]
            return (f"the name {shown!r} is longer than {MAX_COMPONENT_BYTES} bytes, the most a "
                    "file or folder name may have")
    return None


def check_component(name: str, what: str) -> str:
    """Return ``name`` when it is one safe path component; else raise a UsageError naming ``what``."""
    problem = component_problem(name)
    if problem is not None:
        raise UsageError(f"{what}: {name!r} {problem}")
    return name


def is_inside(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` resolves (symlinks followed) to ``root`` or below it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def inside(root: str | Path, *parts: str | Path, what: str = "path") -> Path:
    """``root / parts...``, refused (UsageError) when it would resolve outside ``root``."""
    path = Path(root).joinpath(*parts)
    if not is_inside(path, root):
        shown = os.path.join(*(str(p) for p in parts)) if parts else str(path)
        raise UsageError(f"{what} {shown!r} leads outside {str(root)!r}; olivine writes only inside "
                         "its output, cache and step folders")
    return path
