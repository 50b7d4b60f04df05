"""The System base class and the step request/outcome that cross process boundaries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import attrs

from olivine.accelerator import AcceleratorConfig

#: Receives ``(done, total, message)`` progress reports from a running step.
ProgressSink = Callable[[float, "float | None", str], None]


@attrs.frozen
class SystemConfig:
    """Options every system has: the accelerators it offers."""

    accelerators: list[AcceleratorConfig] = attrs.field(
        factory=list, metadata={"help": "devices and execution providers of this system"})


@attrs.frozen
class StepRequest:
    """Everything needed to run one pass, in JSON-ready form (it may go to another process)."""

    pass_name: str
    config: dict[str, Any]
    model: dict[str, Any]
    work_dir: str
    step_name: str
    device: str
    execution_provider: str
    data_configs: dict[str, Any] = attrs.field(factory=dict)
    log_level: int = 1
    state_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON data."""
        return attrs.asdict(self)


@attrs.frozen
class StepOutcome:
    """What came back from a step: the output handle (JSON form) or the error."""

    model: dict[str, Any] | None
    peak_rss_mb: float | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    log_file: str | None = None
    exit_code: int | None = None
    python: str | None = None
    #: the exit code the error asks for (2 for bad input found while running, else 1)
    error_exit_code: int | None = None


class System:
    """A place where steps run. Subclasses set ``name`` and ``Config`` and implement ``run_step``."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = SystemConfig

    def __init__(self, config: Any) -> None:
        self.config = config

    def run_step(self, request: StepRequest, progress: ProgressSink, isolate: bool) -> StepOutcome:
        """Run ``request`` and return its outcome; never raise for a failure of the pass itself.

        :param isolate: the pass asked to run in a child process (``Pass.isolate``).
        """
        raise NotImplementedError

    #: how many candidates of a search this system runs at once
    parallelism: int = 1

    def run_candidates(self, engine: Any, cache: Any, run_dir: Path, model: Any, model_id: str,
                       choices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run search candidates (their chains and metrics); default: one after another here.

        Each result is a record for ``run.json`` with ``status`` and ``metrics`` or ``error``.
        """
        from olivine.search.driver import run_candidate

        return [run_candidate(engine, cache, run_dir, model, model_id, c) for c in choices]

    def log_dir(self) -> Path | None:
        """Where child-process logs go (set by the engine)."""
        return getattr(self, "_log_dir", None)
