"""Search spaces in pass configs.

A pass option is searched when the workflow gives it a list of values (for an
option that is not itself a list) or Olive's ``"SEARCHABLE_VALUES"``, which takes
the values the pass declares in the field's ``metadata={"search": [...]}``.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from olivine.config.typed import Problems, is_missing, show, structure

SEARCHABLE = "SEARCHABLE_VALUES"


def _is_list_type(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_is_list_type(a) for a in typing.get_args(tp))
    return tp in (list, tuple, Any) or origin in (list, tuple)


def split_search(options: Mapping[str, Any], cls: type, path: str, problems: Problems,
                 searching: bool) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Separate fixed options from searched ones (``{field: [values]}``).

    ``searching`` is False when the engine has no search strategy or the pass has
    ``disable_search``: then ``SEARCHABLE_VALUES`` means the field's default and a
    list of values is an error.
    """
    attrs.resolve_types(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    fixed: dict[str, Any] = {}
    space: dict[str, list[Any]] = {}
    for key, value in options.items():
        field = fields.get(key)
        if field is None:
            fixed[key] = value
            continue
        if value == SEARCHABLE:
            declared = list(field.metadata.get("search", ()))
            if not declared:
                problems.add(f"{path}.{key}", f"{cls.__name__} declares no searchable values for "
                             f"{key}; give a list of values instead")
            elif searching:
                space[key] = declared
            continue  # not searching: the field's default
        if isinstance(value, list) and not _is_list_type(field.type):
            if not value:
                problems.add(f"{path}.{key}", "an empty list of values to search")
            elif not searching:
                problems.add(f"{path}.{key}", "a list of values is a search space; set "
                             "engine.search_strategy to search it, or give one value")
            else:
                bad = next((i for i, v in enumerate(value) if not _is_plain(v)), None)
                if bad is not None:
                    problems.add(f"{path}.{key}[{bad}]", "a searched value must be a number, "
                                 "string, boolean, null or a list of those; objects cannot be "
                                 "searched, got " + show(value[bad]))
                else:
                    space[key] = list(dict.fromkeys(_hashable(v) for v in value))
            continue
        fixed[key] = value
    return fixed, space


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def _is_plain(value: Any) -> bool:
    """True for scalars and (nested) lists of scalars: the values a search can hold."""
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def check_values(fixed: Mapping[str, Any], space: Mapping[str, list[Any]], cls: type, path: str,
                 problems: Problems) -> Any:
    """Structure the config once per searched value; return the config of the first values."""
    first = {k: v[0] for k, v in space.items()}
    config = structure({**fixed, **first}, cls, path, problems)
    if is_missing(config):
        return config
    for key, values in space.items():
        for value in values[1:]:
            trial = Problems()
            structure({**fixed, **first, key: value}, cls, path, trial)
            for item in trial.items:
                if item not in problems.items:
                    problems.items.append(item)
    return config


@attrs.frozen
class Dimension:
    """One searched option: ``passes.<step>.<option>`` and its values."""

    step: str
    option: str
    values: tuple[Any, ...]

    @property
    def label(self) -> str:
        """``step.option``."""
        return f"{self.step}.{self.option}"


def combinations(dims: list[Dimension]) -> Iterator[dict[str, Any]]:
    """Every choice of values, in order (``{label: value}``)."""
    for combo in itertools.product(*(d.values for d in dims)):
        yield {d.label: v for d, v in zip(dims, combo)}
