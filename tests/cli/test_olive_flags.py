"""Every flag of Olive 0.13's commands is accepted by olivine's parser, or the table says why not.

``olive_0_13_cli_flags.json`` is read from Olive's own argparse parsers by
``scripts/olive_cli_flags.py`` (in a venv with olive-ai 0.13.0). A command is checked once
olivine registers it; the compatibility table is ``docs/compat/commands.yaml``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from olivine_testutil import REPO

FIXTURE = Path(__file__).with_name("olive_0_13_cli_flags.json")
TABLE = REPO / "docs" / "compat" / "commands.yaml"
STATUSES = ("supported", "partly", "not")


@pytest.fixture(scope="module")
def olive() -> dict[str, Any]:
    """Olive's commands and their flags."""
    return dict(json.loads(FIXTURE.read_text(encoding="utf-8"))["commands"])


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    """The ``commands`` rows of the compatibility table (``commands.yaml`` and ``commands-*.yaml``)."""
    yaml = pytest.importorskip("yaml")
    rows: dict[str, Any] = {}
    for path in [TABLE, *sorted(TABLE.parent.glob("commands-*.yaml"))]:
        rows.update(yaml.safe_load(path.read_text(encoding="utf-8")).get("commands") or {})
    return rows


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    """olivine's sub-command parsers (built-in and every installed plugin's)."""
    from olivine.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _row(value: Any) -> tuple[str, str]:
    if isinstance(value, str):
        return value, ""
    return str(value.get("status")), str(value.get("how") or value.get("why") or "")


def _accepts(parser: argparse.ArgumentParser, flag: dict[str, Any]) -> str | None:
    """Why ``parser`` does not take Olive's ``flag`` as Olive does (``None`` when it does)."""
    actions = [parser._option_string_actions.get(o) for o in flag["options"]]
    found = [a for a in actions if a is not None]
    if not found:
        return "not accepted"
    missing = [o for o, a in zip(flag["options"], actions, strict=True) if a is None]
    if missing:
        return f"not accepted as {', '.join(missing)}"
    action = found[0]
    takes_value = action.nargs != 0
    bare_ok = action.nargs in (0, "?", "*")
    if flag["value"] and not takes_value:
        return "takes no value here (Olive's takes one)"
    if not flag["value"] and not bare_ok:
        return "needs a value here (Olive's takes none)"
    return None


def test_every_olive_flag_of_olivines_commands_is_accepted_or_explained(
        olive: dict[str, Any], table: dict[str, Any],
        parsers: dict[str, argparse.ArgumentParser]) -> None:
    wrong = []
    checked = 0
    for name, command in olive.items():
        parser = parsers.get(name)
        if parser is None:
            continue
        rows = (table.get(name) or {}).get("flags") or {}
        for flag in command["flags"]:
            checked += 1
            key = flag["options"][-1]
            problem = _accepts(parser, flag)
            if problem is None:
                continue
            status, note = _row(rows.get(key, "missing"))
            if status not in ("not", "partly") or not note:
                wrong.append(f"olivine {name} {key}: {problem}, and docs/compat/commands.yaml "
                             "gives no reason (a not/partly row with why/how)")
    assert checked > 150  # run, run-pass, optimize, tune-session-params, ... are registered
    assert not wrong, f"{len(wrong)} flags:\n" + "\n".join(wrong)


def test_table_rows_name_olives_commands_and_flags(olive: dict[str, Any],
                                                   table: dict[str, Any]) -> None:
    wrong = []
    for name, row in table.items():
        if name not in olive:
            wrong.append(f"{name}: not an Olive 0.13 command")
            continue
        status, note = _row(row)
        if status not in STATUSES:
            wrong.append(f"{name}: status {status!r}")
        if status != "supported" and not note:
            wrong.append(f"{name}: status {status} needs how (partly) or why (not)")
        known = {o for f in olive[name]["flags"] for o in f["options"]}
        for flag, value in (row.get("flags") or {}).items():
            fstatus, fnote = _row(value)
            if not set(flag.split("/")) <= known:  # "-m/--model_name_or_path": one flag's names
                wrong.append(f"{name} {flag}: not a flag of Olive 0.13's {name}")
            if fstatus not in STATUSES or (fstatus != "supported" and not fnote):
                wrong.append(f"{name} {flag}: status {fstatus!r} without how/why")
    assert not wrong, "\n".join(wrong)


def test_olivines_commands_that_olive_has_have_a_row(olive: dict[str, Any], table: dict[str, Any],
                                                     parsers: dict[str, argparse.ArgumentParser]
                                                     ) -> None:
    missing = sorted(n for n in olive if n in parsers and n not in table)
    assert not missing, f"commands without a row in docs/compat/commands.yaml: {missing}"


def test_fixture_is_olives_whole_command_line(olive: dict[str, Any]) -> None:
    # Olive 0.13 has 18 commands; a fixture made from another version would differ
    assert len(olive) == 18
    assert {"optimize", "run-pass", "tune-session-params", "run"} <= set(olive)
    optimize = {f["options"][-1] for f in olive["optimize"]["flags"]}
    assert {"--precision", "--exporter", "--surgeries", "--test", "--extra_mb_options"} <= optimize
