"""Dry-run every Olive workflow of an olive-recipes checkout through olivine.

A workflow is a ``.json`` file holding ``"passes"``. Each is run as
``olivine run --config FILE --dry-run`` from its own folder, in this process (the
same ``olivine.cli.main`` the console script calls; one process instead of 181).

    python scripts/recipe_dry_runs.py                 # summary: passed / failed, grouped reasons
    python scripts/recipe_dry_runs.py --update        # rewrite tests/recipes/dry_run_exceptions.json

``--update`` keeps the reason already written for a workflow that still fails, drops
workflows that now pass, and gives new failures a reason derived from the first error
(``needs pass X``, ``option X``): read those and write the honest one (vendor SDK, GPU,
a local file the recipe does not ship, or the issue whose work it waits on).
``tests/recipes/test_recipe_dry_runs.py`` checks the list against a fresh walk.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO.parent / "shared" / "olive-recipes"
EXCEPTIONS = REPO / "tests" / "recipes" / "dry_run_exceptions.json"


def workflows(root: Path) -> list[Path]:
    """Every ``.json`` file under ``root`` that holds a top-level ``passes`` object."""
    found = []
    for path in sorted(root.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "passes" in data:
            found.append(path)
    return found


def dry_run(path: Path) -> tuple[int, str]:
    """``(exit code, stderr)`` of ``olivine run --config NAME --dry-run`` in ``path``'s folder."""
    from olivine.cli import main

    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        os.chdir(path.parent)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(["run", "--config", path.name, "--dry-run"])
    finally:
        os.chdir(cwd)
        root.handlers[:] = handlers
    return code, err.getvalue()


def walk(root: Path = RECIPES) -> dict[str, tuple[int, str]]:
    """``{relative path: (exit code, stderr)}`` for every workflow under ``root``."""
    return {path.relative_to(root).as_posix(): dry_run(path) for path in workflows(root)}


_UNKNOWN_PASS = re.compile(r"unknown pass type '([^']+)'", re.I)


#: Which issue's work a missing pass waits on (for the reasons ``--update`` writes).
PASS_ISSUE = {
    "GraphSurgeries": 14, "OnnxPeepholeOptimizer": 14, "DynamicToFixedShape": 14,
    "OrtSessionParamsTuning": 14, "AddOliveMetadata": 14, "StaticLLM": 14, "CaptureSplitInfo": 14,
    "SplitModel": 14, "ComposeOnnxModels": 14, "OnnxIODataTypeConverter": 14,
    "OnnxOpVersionConversion": 14, "OnnxQuantizationPreprocess": 14,
    "SelectiveMixedPrecision": 13, "OnnxKQuantQuantization": 13, "MatMulNBitsToQDQ": 13,
    "QuaRot": 13, "Quarot": 13, "SliceGPT": 13, "dora": 13, "loha": 13, "lokr": 13, "DoRA": 13,
    "LoHa": 13, "LoKr": 13, "IncStaticQuantization": 13, "IncDynamicQuantization": 13,
}
#: Problems (a fragment of the message) and the reason written for them.
KNOWN_PROBLEMS = (
    ("no such file or folder", "needs a local file the recipe does not ship"),
    ("no such file:", "needs a local file the recipe does not ship"),
)


def guessed_reason(stderr: str) -> str:
    """A reason for a failure, from its errors: the missing passes and the issue each waits on,
    else the first known problem, else the first error line (to be edited by hand)."""
    lines = [ln.strip(" -") for ln in stderr.splitlines() if ln.strip()]
    passes = sorted({m.group(1) for m in _UNKNOWN_PASS.finditer(stderr)})
    if passes:
        return "needs pass " + ", ".join(
            f"{p} (issue {PASS_ISSUE[p]})" if p in PASS_ISSUE else p for p in passes)
    for fragment, reason in KNOWN_PROBLEMS:
        if fragment in stderr:
            return reason
    for line in lines:
        if not line.startswith("olivine: invalid workflow config"):
            return line[:200]
    return (lines[0] if lines else "failed without a message")[:200]


def load_exceptions(path: Path = EXCEPTIONS) -> dict[str, str]:
    """The checked-in ``{workflow: reason}`` list."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return dict(data.get("exceptions", {}))


def write_exceptions(results: dict[str, tuple[int, str]], path: Path = EXCEPTIONS,
                     keep_reasons: bool = True) -> dict[str, str]:
    """Rewrite the exceptions list from a walk: failures keep their reasons (unless
    ``keep_reasons`` is false), passes drop out."""
    old = load_exceptions(path)
    new = {name: old.get(name) if keep_reasons and old.get(name) else guessed_reason(err)
           for name, (code, err) in sorted(results.items()) if code != 0}
    doc: dict[str, Any] = {
        "about": "Workflows of ../shared/olive-recipes that `olivine run --config FILE --dry-run` "
                 "(from the file's folder) does not accept yet, with the reason. Checked by "
                 "tests/recipes/test_recipe_dry_runs.py; regenerate with "
                 "`python scripts/recipe_dry_runs.py --update`, then edit new reasons by hand.",
        "passing": len(results) - len(new),
        "total": len(results),
        "exceptions": new,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return new


def main(argv: list[str] | None = None) -> int:
    """Walk, print a summary, optionally rewrite the exceptions list."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=RECIPES, help="olive-recipes folder")
    parser.add_argument("--update", action="store_true", help="rewrite the exceptions list")
    parser.add_argument("--show", action="store_true", help="print every failure's first lines")
    parser.add_argument("--fresh-reasons", action="store_true",
                        help="with --update: derive every reason again (hand-written ones are lost)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"no recipes folder at {args.root}", file=sys.stderr)
        return 2
    results = walk(args.root)
    failed = {k: v for k, v in results.items() if v[0] != 0}
    reasons: dict[str, int] = {}
    for _, err in failed.values():
        reason = guessed_reason(err)
        reasons[reason] = reasons.get(reason, 0) + 1
    print(f"{len(results) - len(failed)}/{len(results)} workflows pass the dry run")
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {count:3d}  {reason}")
    if args.show:
        for name, (_, err) in failed.items():
            print(f"\n== {name}\n" + "\n".join(err.splitlines()[:8]))
    if args.update:
        write_exceptions(results, keep_reasons=not args.fresh_reasons)
        print(f"wrote {EXCEPTIONS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
