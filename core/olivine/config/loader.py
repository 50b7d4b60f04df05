"""Read workflow files: JSON (comments and trailing commas allowed) and YAML."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from olivine.errors import UsageError


def strip_json_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments and trailing commas outside strings.

    Olive's docs show configs with ``// comments``; users paste them as they are.
    """
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                in_string = False
            i += 1
            continue
        if ch == '"':
            in_string = True
            out.append(ch)
            i += 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(ch)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def parse_text(text: str, source: str, fmt: str | None = None) -> Any:
    """Parse ``text`` as JSON (with comments) or YAML; raise UsageError naming the line."""
    if fmt is None:
        fmt = "yaml" if source.endswith((".yaml", ".yml")) else "json"
    if fmt == "yaml":
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{source}: not valid YAML: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(strip_json_comments(text))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno}") from exc


def load_document(path: str | Path) -> dict[str, Any]:
    """Read a workflow file into a dict; a missing or unreadable file is a UsageError."""
    p = Path(path)
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
