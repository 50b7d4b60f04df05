"""Write tests/cli/olive_0_13_cli_flags.json: every flag of every command of Olive 0.13's CLI.

Run it with the Python of a scratch venv that has ``olive-ai==0.13.0`` installed (never a
project dependency)::

    /tmp/olive-venv/bin/python scripts/olive_cli_flags.py

It builds Olive's own argparse parser (``olive.cli.launcher.get_cli_parser``) and reads each
sub-parser's actions: the option strings, whether the flag takes a value, its default, its
choices and whether it is required. Nothing is run. ``tests/cli/test_olive_flags.py`` checks
olivine's parsers against the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "tests" / "cli" / "olive_0_13_cli_flags.json"


def _plain(value: Any) -> Any:
    """JSON-safe form of a default or a choice (enums by value, others by str)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return getattr(value, "value", value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(getattr(value, "value", value))


def _flag(action: argparse.Action) -> dict[str, Any]:
    takes = not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                    argparse._StoreConstAction, argparse._CountAction,
                                    argparse._HelpAction, argparse._VersionAction))
    row: dict[str, Any] = {"options": list(action.option_strings), "dest": action.dest,
                           "value": takes, "required": bool(action.required),
                           "default": _plain(action.default)}
    if action.nargs is not None:
        row["nargs"] = action.nargs if isinstance(action.nargs, (int, str)) else str(action.nargs)
    if action.choices is not None:
        row["choices"] = [_plain(c) for c in action.choices]
    return row


def collect() -> dict[str, Any]:
    """``{"olive_version", "commands": {name: {"help", "flags": [...], "positionals": [...]}}}``."""
    import olive
    from olive.cli.launcher import get_cli_parser

    parser = get_cli_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    commands: dict[str, Any] = {}
    for name, p in sub.choices.items():
        flags = [_flag(a) for a in p._actions if a.option_strings and a.dest != "help"]
        positionals = [a.dest for a in p._actions if not a.option_strings]
        commands[name] = {"help": helps.get(name, ""), "flags": flags, "positionals": positionals}
    return {"olive_version": olive.__version__,
            "how": "scripts/olive_cli_flags.py run in a venv with olive-ai==0.13.0: reads the "
                   "actions of olive.cli.launcher.get_cli_parser()'s sub-parsers",
            "commands": commands}


def main() -> int:
    """Write the file."""
    data = collect()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    n = sum(len(c["flags"]) for c in data["commands"].values())
    print(f"wrote {OUT}: {len(data['commands'])} commands, {n} flags (olive {data['olive_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
