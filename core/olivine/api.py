"""The Python API: ``olivine.run(config)`` and ``olivine.validate(config)``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from olivine.config.loader import load_document
from olivine.config.workflow import WorkflowConfig, validate_workflow
from olivine.engine import Engine, RunResult
from olivine.plugins import get_plugin_host


def validate(config: str | Path | Mapping[str, Any], **overrides: Any) -> WorkflowConfig:
    """Read and validate a workflow (a file path or a dict); raise ConfigError on problems.

    ``overrides`` replace top-level keys (for example ``output_dir=...``).
    """
    host = get_plugin_host()
    if isinstance(config, Mapping):
        raw, source, base = dict(config), None, Path.cwd()
    else:
        raw = load_document(config)
        source, base = str(config), Path(config).resolve().parent
    for key, value in overrides.items():
        if isinstance(raw.get("engine"), dict) and key in raw["engine"]:
            raw["engine"][key] = value
        else:
            raw[key] = value
    if source is None:  # a file was checked as it was read; a dict from Python is checked here
        from olivine.config.loader import check_depth, check_finite

        check_depth(raw, "the workflow")
        check_finite(raw, "the workflow")
    return validate_workflow(raw, host, source=source, base_dir=base)


def run(config: str | Path | Mapping[str, Any] | WorkflowConfig, **overrides: Any) -> RunResult:
    """Run a workflow and return its result (output model, metrics, report).

    Raises ConfigError for a bad config and PassError when a step fails.
    """
    workflow = config if isinstance(config, WorkflowConfig) else validate(config, **overrides)
    return Engine(workflow, get_plugin_host()).run()
