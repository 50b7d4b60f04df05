"""Turn plain JSON/YAML values into attrs objects, collecting every problem.

This is the one place that knows how config values are checked: pass configs,
system configs and the workflow sections all go through :func:`structure`.
Each problem is reported as ``path: message`` with a did-you-mean for unknown
keys and bad choices. :func:`json_schema` describes the same classes.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import attrs

from olivine.errors import did_you_mean

_MISSING = object()

#: Marker in ``field.metadata`` for keys that were renamed; maps old name -> new name.
ALIASES = "aliases"


class Problems:
    """Collects ``path: message`` lines while structuring a document."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        """Record one problem at ``path``."""
        self.items.append(f"{path}: {message}" if path else message)

    def __bool__(self) -> bool:
        return bool(self.items)


def show(value: Any) -> str:
    """A value as the user wrote it, JSON-style (``"big"``, ``3``, ``true``)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_name(tp: Any) -> str:
    """A short, user-facing name for a type annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(show(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        suffix = " or null" if type(None) in args else ""
        return " or ".join(parts) + suffix
    if origin in (list, tuple) or tp in (list, tuple):
        inner = type_name(args[0]) if args else "any value"
        return f"list of {inner}"
    if origin is dict or tp is dict:
        return "object"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(show(m.value) for m in tp)
    if attrs.has(tp):
        return "object"
    return {int: "int", float: "number", str: "string", bool: "bool"}.get(tp, str(tp))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def convert(value: Any, tp: Any, path: str, problems: Problems) -> Any:
    """Check ``value`` against annotation ``tp``; return the converted value or ``_MISSING``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        records = [a for a in options if attrs.has(a)]
        if isinstance(value, Mapping) and len(records) == 1:
            return convert(value, records[0], path, problems)
        for option in options:
            trial = Problems()
            out = convert(value, option, path, trial)
            if not trial:
                return out
        if len(options) == 1:
            return convert(value, options[0], path, problems)
        problems.add(path, f"expected {type_name(tp)}, got {show(value)}")
        return _MISSING
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        hint = did_you_mean(str(value), [str(a) for a in args]) if isinstance(value, str) else ""
        problems.add(path, f"expected one of {', '.join(show(a) for a in args)}, got {show(value)}{hint}")
        return _MISSING
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        if value in values:
            return tp(value)
        hint = did_you_mean(str(value), [str(v) for v in values])
        problems.add(path, f"expected one of {', '.join(show(v) for v in values)}, got {show(value)}{hint}")
        return _MISSING
    if attrs.has(tp):
        if not isinstance(value, Mapping):
            problems.add(path, f"expected an object, got {show(value)}")
            return _MISSING
        return structure(value, tp, path, problems)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            problems.add(path, f"expected {type_name(tp)}, got {show(value)}")
            return _MISSING
        inner = args[0] if args else Any
        items = [convert(v, inner, _join(path, i), problems) for i, v in enumerate(value)]
        if any(i is _MISSING for i in items):
            return _MISSING
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            problems.add(path, f"expected an object, got {show(value)}")
            return _MISSING
        vt = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            out[str(k)] = convert(v, vt, _join(path, str(k)), problems)
        return _MISSING if _MISSING in out.values() else out
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    problems.add(path, f"expected {type_name(tp)}, got {show(value)}")
    return _MISSING


def field_help(field: attrs.Attribute) -> str:
    """A field's help text (``metadata={"help": ...}``)."""
    return str(field.metadata.get("help", ""))


def structure(data: Mapping[str, Any], cls: type, path: str, problems: Problems) -> Any:
    """Build ``cls`` (an attrs class) from ``data``; record every problem; ``_MISSING`` on failure."""
    attrs.resolve_types(cls)
    fields = {f.name: f for f in attrs.fields(cls) if f.init}
    renamed: dict[str, str] = {}
    for f in fields.values():
        for old in f.metadata.get(ALIASES, ()):
            renamed[old] = f.name
    kwargs: dict[str, Any] = {}
    failed = False
    for key, value in data.items():
        name = renamed.get(key, key)
        if name not in fields or name.startswith("_"):
            hint = did_you_mean(str(key), [n for n in fields if not n.startswith("_")])
            problems.add(_join(path, str(key)), f"unknown key{hint}")
            failed = True
            continue
        converted = convert(value, fields[name].type, _join(path, name), problems)
        if converted is _MISSING:
            failed = True
        else:
            kwargs[name] = converted
    for name, f in fields.items():
        if name not in kwargs and f.default is attrs.NOTHING and not name.startswith("_"):
            if not failed or name not in data:
                problems.add(_join(path, name), f"required key is missing ({type_name(f.type)})")
            failed = True
    if failed:
        return _MISSING
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        for message in _validator_messages(exc):
            problems.add(*_validator_message(message, path))
        return _MISSING


_ATTRS_MSG = re.compile(r"^'(?P<name>\w+)' must be (?P<rule>.*?): (?P<value>.*)$", re.S)


def _validator_messages(exc: Exception) -> list[str]:
    """A validator's messages: one, or one per line of a :class:`FieldProblems`."""
    if isinstance(exc, FieldProblems):
        return list(exc.problems)
    return [str(exc.args[0]) if exc.args else str(exc)]


class FieldProblems(ValueError):
    """Several problems found by one validator, each ``"field[0].key: message"``.

    A validator that checks a nested value (a list of objects, say) raises this to report
    every problem at once, each under its own path below the field.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _validator_message(text: str, path: str) -> tuple[str, str]:
    """Turn a validator's message into ``(path, message)``; attrs' own wording is rephrased."""
    m = _ATTRS_MSG.match(text)
    if m:  # attrs: "'block_size' must be <= 256: 512"
        return _join(path, m["name"]), f"must be {m['rule']}, got {m['value']}"
    head, sep, rest = text.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*(\[\d+\][\w.]*)*", head):  # "field: message"
        return (f"{path}.{head}" if path else head), rest
    return path, text


def is_missing(value: Any) -> bool:
    """True when :func:`structure` or :func:`convert` failed."""
    return value is _MISSING


def unstructure(obj: Any) -> Any:
    """An attrs object (or nested value) as plain JSON data."""
    if attrs.has(type(obj)):
        return {f.name: unstructure(getattr(obj, f.name)) for f in attrs.fields(type(obj))
                if not f.name.startswith("_")}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(k): unstructure(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [unstructure(v) for v in obj]
    return obj


def json_schema(tp: Any) -> dict[str, Any]:
    """A JSON-schema fragment for an annotation or attrs class."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return {}
    if origin in (Union, types.UnionType):
        return {"anyOf": [json_schema(a) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(args)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if attrs.has(tp):
        attrs.resolve_types(tp)
        props: dict[str, Any] = {}
        required = []
        for f in attrs.fields(tp):
            if not f.init or f.name.startswith("_"):
                continue
            schema = json_schema(f.type)
            if field_help(f):
                schema["description"] = field_help(f)
            if f.default is attrs.NOTHING:
                required.append(f.name)
            elif not isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
                schema["default"] = unstructure(f.default)
            props[f.name] = schema
        out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            out["required"] = required
        if tp.__doc__:
            out["description"] = tp.__doc__.strip().splitlines()[0]
        return out
    if origin in (list, tuple) or tp in (list, tuple):
        return {"type": "array", "items": json_schema(args[0]) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object", "additionalProperties": json_schema(args[1]) if len(args) == 2 else {}}
    return {"type": {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, "string")}


def describe_fields(cls: type) -> list[dict[str, Any]]:
    """One row per field of an attrs class: name, type, default, help."""
    attrs.resolve_types(cls)
    rows = []
    for f in attrs.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        if f.default is attrs.NOTHING:
            default: Any = "(required)"
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            default = unstructure(f.default.factory())
        else:
            default = unstructure(f.default)
        rows.append({"name": f.name, "type": type_name(f.type), "default": default,
                     "help": field_help(f)})
    return rows
