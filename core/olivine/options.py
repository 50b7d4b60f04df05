"""Option metadata for the attrs ``Config`` classes of passes, evaluators and systems.

:func:`option` is the typed way to describe an option::

    @attrs.frozen
    class MyConfig:
        alpha: float = attrs.field(default=0.5, metadata=olivine.option(
            help="how strongly to smooth", search=[0.25, 0.5, 0.75]))
        calibration: str | None = attrs.field(default=None, metadata=olivine.option(
            help="the data config to calibrate with", data_config=True))

It returns the mapping attrs keeps as ``field.metadata``. The string-keyed form of API 1.0
(``metadata={"help": ..., "search": [...], "data_config": True}``) is still read; the host
warns (``DeprecationWarning``) when it registers a class that uses it. :func:`option_info`
reads either form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["LEGACY_KEYS", "OptionInfo", "legacy_fields", "option", "option_info"]

#: The string keys of API 1.0's ``metadata`` dicts (still read; :func:`option` writes them).
LEGACY_KEYS = ("help", "search", "data_config", "input_path", "aliases")
#: The key under which :func:`option` stores its :class:`OptionInfo`.
_INFO_KEY = "olivine.option"


@attrs.frozen
class OptionInfo:
    """What the host knows about one option, whichever form declared it."""

    #: one line shown by ``olivine passes``, ``--help`` and the JSON schema
    help: str = ""
    #: the values a search tries (``search: true`` in a workflow); empty: none declared
    search: tuple[Any, ...] = ()
    #: the value names an entry of the workflow's ``data_configs``
    data_config: bool = False
    #: the value is a local file or folder the pass reads (or a list or mapping of them;
    #: for a mapping, a tuple of the keys that are paths); it enters the cache key by content
    input_path: bool | tuple[str, ...] = False
    #: older names of the option, still accepted in configs
    aliases: tuple[str, ...] = ()


def option(help: str = "", *, search: Sequence[Any] | None = None, data_config: bool = False,
           input_path: bool | Sequence[str] = False, aliases: Sequence[str] = ()) -> dict[str, Any]:
    """The ``metadata`` of an attrs field that is an option of a pass, evaluator or system.

    :param help: one line that says what the option does.
    :param search: the values a search tries for this option (``search: true``).
    :param data_config: the value names an entry of the workflow's ``data_configs``.
    :param input_path: the value is a local path the pass reads (``True``), or, for a
        mapping value, the keys whose values are paths (a sequence of key names).
    :param aliases: older names of the option that configs may still use.
    """
    if not isinstance(help, str):
        raise TypeError(f"option(help=...) takes a string, got {type(help).__name__}")
    if isinstance(aliases, str) or isinstance(input_path, str):
        raise TypeError("option(aliases=..., input_path=...) take a sequence of names, not a string")
    paths: bool | tuple[str, ...] = input_path if isinstance(input_path, bool) else tuple(input_path)
    info = OptionInfo(help, tuple(search or ()), bool(data_config), paths, tuple(aliases))
    out: dict[str, Any] = {_INFO_KEY: info}
    if help:
        out["help"] = help
    if search is not None:
        out["search"] = list(info.search)
    if data_config:
        out["data_config"] = True
    if paths:
        out["input_path"] = paths
    if aliases:
        out["aliases"] = info.aliases
    return out


def option_info(field: Any) -> OptionInfo:
    """The :class:`OptionInfo` of an attrs field (``attrs.Attribute``), from either form."""
    meta: Mapping[str, Any] = getattr(field, "metadata", None) or {}
    info = meta.get(_INFO_KEY)
    if isinstance(info, OptionInfo):
        return info
    paths = meta.get("input_path", False)
    return OptionInfo(str(meta.get("help", "")), tuple(meta.get("search", ()) or ()),
                      bool(meta.get("data_config", False)),
                      paths if isinstance(paths, bool) else tuple(paths),
                      tuple(meta.get("aliases", ()) or ()))


def legacy_fields(cls: Any) -> list[str]:
    """The fields of attrs class ``cls`` whose metadata uses API 1.0's string keys."""
    if not (isinstance(cls, type) and attrs.has(cls)):
        return []
    return [f.name for f in attrs.fields(cls)
            if _INFO_KEY not in f.metadata and any(k in f.metadata for k in LEGACY_KEYS)]
