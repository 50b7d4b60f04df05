"""Read workflow files: JSON (comments and trailing commas allowed) and YAML 1.2.

JSON: ``//`` and ``/* */`` comments and trailing commas (as in Olive's docs) are
removed by a tokenizer that knows where strings are, so text inside a string never
changes. Removed characters become spaces (newlines stay), so the line and column of
an error are those of the file as written.

YAML: plain scalars are read by the YAML 1.2 core schema, not PyYAML's YAML 1.1
rules: ``2e-4`` and ``1e-2`` are floats, ``yes``/``no``/``on``/``off`` are strings
(only ``true``/``false`` in any of their three spellings are booleans), ``0o17`` is
octal and ``017`` is seventeen, ``0x1F`` is hexadecimal, ``1_000``, ``0b101`` and
``1:30`` are strings, and dates are strings. Merge keys (``<<: *anchor``) still work.

Both refuse documents nested deeper than :data:`MAX_DEPTH` (no config needs it, and
the parsers would otherwise fail with a RecursionError).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from olivine.errors import UsageError
from olivine.safepath import path_problem

#: the deepest nesting of objects and lists a workflow file may have
MAX_DEPTH = 64


def _json_tokens(text: str) -> Iterator[tuple[str, int, int]]:
    """``(kind, start, end)`` for each comment, string, comma and bracket outside strings.

    ``kind`` is ``"comment"``, ``"string"``, the character itself (``,{}[]``) or
    ``"value"`` (any other character that is not white space).
    An unterminated string ends the scan (the JSON parser reports it); an
    unterminated block comment is a UsageError raised by the caller.
    """
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return
            yield "string", i, j + 1
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            yield "comment", i, end
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            yield "comment", i, (n if end < 0 else end + 2)
            if end < 0:
                yield "unterminated", i, n
            i = n if end < 0 else end + 2
        elif ch in ",{}[]":
            yield ch, i, i + 1
            i += 1
        else:
            if not ch.isspace():
                yield "value", i, i + 1
            i += 1


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _blank(chars: list[str], start: int, end: int) -> None:
    for k in range(start, end):
        if chars[k] not in "\r\n":
            chars[k] = " "


def strip_json_comments(text: str, source: str = "config") -> str:
    """``text`` with comments and trailing commas outside strings turned into spaces.

    Lines and columns keep their places, so the JSON parser's error positions are
    those of the file. Raises UsageError for an unterminated ``/*`` comment or
    nesting deeper than :data:`MAX_DEPTH`.
    """
    chars = list(text)
    pending_comma: int | None = None  # a comma that is trailing if a closing bracket follows
    depth = 0
    for kind, start, end in _json_tokens(text):
        if kind == "unterminated":
            line, col = _line_col(text, start)
            raise UsageError(f"{source}: not valid JSON: a /* comment is not closed "
                             f"(opened at line {line}, column {col})")
        if kind == "comment":
            _blank(chars, start, end)
            continue
        if kind in "}]" and pending_comma is not None:
            chars[pending_comma] = " "
        pending_comma = start if kind == "," else None
        if kind in "{[":
            depth += 1
            if depth > MAX_DEPTH:
                line, col = _line_col(text, start)
                raise UsageError(f"{source}: nested deeper than {MAX_DEPTH} levels at line {line}, "
                                 f"column {col}; a workflow config never needs that much nesting")
        elif kind in "}]":
            depth = max(0, depth - 1)
    return "".join(chars)


# -- YAML 1.2 -------------------------------------------------------------------------------
_YAML12_LOADER: Any = None


def _yaml_int(loader: Any, node: Any) -> int:
    value = str(loader.construct_scalar(node))
    sign, digits = (-1, value[1:]) if value.startswith("-") else (1, value.lstrip("+"))
    base = {"0o": 8, "0x": 16}.get(digits[:2], 10)
    try:
        return sign * int(digits[2:] if base != 10 else digits, base)
    except ValueError:
        import yaml

        raise yaml.constructor.ConstructorError(None, None, f"{value!r} is not an integer",
                                                node.start_mark) from None


def _yaml12_loader() -> Any:
    """A PyYAML SafeLoader subclass that resolves plain scalars by the YAML 1.2 core schema."""
    global _YAML12_LOADER
    if _YAML12_LOADER is not None:
        return _YAML12_LOADER
    import yaml

    class Yaml12Loader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 core-schema resolution of plain scalars."""

    kept = {"tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"}
    Yaml12Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag in kept]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    core = [
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("tag:yaml.org,2002:float",
         r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
    ]
    for tag, pattern, first in core:
        Yaml12Loader.add_implicit_resolver(tag, re.compile(pattern), list(first))
    Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _yaml_int)
    Yaml12Loader.add_constructor("tag:yaml.org,2002:map", _yaml_unique_mapping)
    _YAML12_LOADER = Yaml12Loader
    return Yaml12Loader


def check_depth(data: Any, source: str) -> None:
    """Raise UsageError when ``data`` nests lists and objects deeper than :data:`MAX_DEPTH`."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    seen: set[tuple[int, int]] = set()  # YAML aliases share nodes: visit each once per depth
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:  # also catches an alias inside its own anchor (a cycle)
                raise UsageError(f"{source}: nested deeper than {MAX_DEPTH} levels; a workflow "
                                 "config never needs that much nesting")
            if (id(value), depth) in seen:
                continue
            seen.add((id(value), depth))
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)


def check_finite(data: Any, source: str) -> None:
    """Raise UsageError for an infinite or NaN number anywhere in ``data``.

    JSON has no such numbers (``1e400`` overflows to infinity when read), and a run
    report that held one would not be valid JSON; no option wants one.
    """
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            at = f" at {where}" if where else ""
            raise UsageError(f"{source}: the number{at} is {value!r} (too large for a float, or "
                             "not a number); give a finite number")
        if isinstance(value, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))


def _unique_pairs(source: str) -> Any:
    """A json ``object_pairs_hook`` that refuses a key given twice in one object."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise UsageError(f"{source}: key {key!r} appears twice in one object; the first "
                                 "value would be silently dropped: keep one")
            out[key] = value
        return out

    return hook


def _yaml_unique_mapping(loader: Any, node: Any) -> dict[Any, Any]:
    """Build a YAML mapping, refusing a key written twice (YAML 1.2 requires unique keys).

    Keys a merge (``<<``) brings in may still be overridden by the mapping's own keys.
    """
    import yaml

    written: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            continue  # unhashable keys are refused by PyYAML itself
        if key in written:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping (YAML requires unique "
                "keys; the first value would be silently dropped)", key_node.start_mark)
        written.add(key)
    return dict(loader.construct_mapping(node, deep=True))


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML 1.2 text; raise UsageError naming the line."""
    import yaml

    try:
        data = yaml.load(text, Loader=_yaml12_loader())  # a SafeLoader subclass: no objects
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML: {exc}") from exc
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply to read; a workflow config never needs "
                         f"more than {MAX_DEPTH} levels") from None
    check_depth(data, source)
    check_finite(data, source)
    return data


def parse_text(text: str, source: str, fmt: str | None = None) -> Any:
    """Parse ``text`` as JSON (with comments) or YAML; raise UsageError naming the line."""
    if fmt is None:
        fmt = "yaml" if source.endswith((".yaml", ".yml")) else "json"
    if fmt == "yaml":
        return parse_yaml(text, source)
    cleaned = strip_json_comments(text, source)
    try:
        data = json.loads(cleaned, object_pairs_hook=_unique_pairs(source))
        check_finite(data, source)
        return data
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno}") from exc
    except RecursionError:  # unreachable after the depth check; kept as a guard
        raise UsageError(f"{source}: nested too deeply to read") from None


def load_document(path: str | Path) -> dict[str, Any]:
    """Read a workflow file into a dict; a missing or unreadable file is a UsageError."""
    p = Path(path)
    problem = path_problem(p)
    if problem is not None:
        raise UsageError(f"config file {str(p)!r}: {problem}")
    if not p.exists():
        raise UsageError(f"config file {str(p)!r} does not exist")
    if p.is_dir():
        raise UsageError(f"config file {str(p)!r} is a folder; pass a .json or .yaml file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {str(p)!r}: {exc}") from exc
    data = parse_text(text, str(p))
    if not isinstance(data, dict):
        raise UsageError(f"{p}: a workflow config must be an object with keys such as "
                         f"input_model and passes, got {type(data).__name__}")
    return data
