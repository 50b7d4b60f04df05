"""Small records passed to the event hooks."""

from __future__ import annotations

from pathlib import Path

import attrs


@attrs.frozen
class StepInfo:
    """One step of a run as the event hooks see it."""

    index: int
    count: int
    name: str
    pass_name: str
    key: str = ""
    input_id: str = ""


@attrs.frozen
class RunInfo:
    """A workflow run as the event hooks see it."""

    run_id: str
    steps: tuple[str, ...]
    output_dir: Path | None
    cache_dir: Path
    log_level: int = 1
