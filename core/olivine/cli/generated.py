"""For commands that turn their flags into a workflow and run it (auto-opt, finetune, quantize).

Their common flags (``--cache_dir``, ``--save_config``, ``--dry_run``), the cache folder
they name, and running the generated workflow on the same engine as ``olivine run``.
Light: the engine is imported only when a workflow runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_CACHE_DIR = ".olivine-cache"


def add_cache_dir(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--cache_dir`` (default: ``$OLIVINE_CACHE_DIR`` or ``.olivine-cache``)."""
    p.add_argument("--cache_dir", "--cache-dir", dest="cache_dir", default=None,
                   help=help or f"step cache folder (default: $OLIVINE_CACHE_DIR or {DEFAULT_CACHE_DIR})")


def add_save_config(p: argparse.ArgumentParser) -> None:
    """``--save_config [FILE]``: write the generated workflow (see :func:`run_generated`)."""
    p.add_argument("--save_config", "--save_config_file", dest="save_config", nargs="?", const="",
                   default=None, metavar="FILE",
                   help="write the workflow config this command runs (default FILE: config.json "
                        "in the output folder, written after the run)")


def add_dry_run(p: argparse.ArgumentParser,
                help: str = "check everything, print (or --save_config) the workflow, do not run"
                ) -> None:
    """``--dry_run``: validate and show the workflow without running it."""
    p.add_argument("--dry_run", "--dry-run", dest="dry_run", action="store_true", help=help)


def cache_dir(value: str | None) -> str:
    """The cache folder a ``--cache_dir`` value names (its default when ``None``)."""
    return str(value or os.environ.get("OLIVINE_CACHE_DIR") or DEFAULT_CACHE_DIR)


def save_workflow(path: Path, workflow: dict[str, Any]) -> None:
    """Write ``workflow`` as JSON and say how to run it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(workflow, indent=2) + "\n")
    from olivine.output import record_file

    record_file(path.parent, path)  # inside a published output: list it, so reruns may replace it
    print(f"workflow config: {path} (run it with: olivine run --config {path})", file=sys.stderr)


def run_generated(workflow: dict[str, Any], *, dry_run: bool, save_config: str | None = None,
                  before_run: Callable[[], None] | None = None) -> Any:
    """Validate ``workflow``; with ``dry_run`` print (or save) it and return ``None``, else run it.

    ``save_config``: ``None`` saves nothing, ``""`` saves ``config.json`` in the output
    folder after the run, a path saves there (before returning, or instead of printing
    on a dry run). ``before_run`` is called between validation and the run (checks that
    only matter when something will be written). Returns the run's result.
    """
    from olivine.api import run, validate

    validated = validate(workflow)
    if dry_run:
        if save_config:
            save_workflow(Path(save_config), workflow)
        else:
            print(json.dumps(workflow, indent=2))
        return None
    if before_run is not None:
        before_run()
    result = run(validated)
    if save_config is not None:
        target = Path(save_config) if save_config else Path(workflow["output_dir"]) / "config.json"
        save_workflow(target, workflow)
    return result


def print_summary(result: Any) -> None:
    """Print the run's ``summary.txt`` (when written) and the output folder."""
    summary = result.report_path.parent / "summary.txt"
    if summary.is_file():
        print(summary.read_text(), end="")
    print(f"  model: {result.output_dir}")
