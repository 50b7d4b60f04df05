"""The System base class and the requests and records that cross process boundaries.

A system sees only data: a :class:`StepRequest` (one pass on one model) or a
:class:`CandidateRequest` (one candidate of a search), both JSON-ready, and returns a
:class:`StepOutcome` or a candidate record. It never sees the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import attrs

from olivine.accelerator import AcceleratorConfig
from olivine.options import option

#: Receives ``(done, total, message)`` progress reports from a running step.
ProgressSink = Callable[[float, "float | None", str], None]


@attrs.frozen
class SystemConfig:
    """Options every system has: the accelerators it offers."""

    accelerators: list[AcceleratorConfig] = attrs.field(
        factory=list, metadata=option(help="devices and execution providers of this system"))


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
    #: where a child process writes the step's log (the run's folder); None: beside work_dir
    log_dir: str | None = None

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


@attrs.frozen
class CandidateRequest:
    """One candidate of a search, in JSON-ready form (it may go to another process or machine).

    :func:`olivine.run_candidate` runs it anywhere olivine and the workflow's plugins are
    installed and ``cache_dir`` is reachable, and returns its record.
    """

    #: the workflow config as the user wrote it (validated again where the candidate runs)
    workflow: dict[str, Any]
    #: the config's file (for messages), or None
    source: str | None
    #: the folder relative paths of the workflow are taken from
    base_dir: str
    cache_dir: str
    #: the run's folder (child-process logs go there)
    run_dir: str
    #: the search's input model (``ModelHandle.to_dict()``) and its cache identity
    model: dict[str, Any]
    model_id: str
    #: the candidate: ``{"<step>.<option>": value}``
    choice: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON data."""
        return attrs.asdict(self)


#: Runs one candidate in this process and returns its record (what the engine hands a system).
CandidateRunner = Callable[[CandidateRequest], dict[str, Any]]


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

    def runs_here(self, isolate: bool) -> bool:
        """Whether a step whose pass has ``isolate`` runs in this Python process (API 1.2).

        The engine imports the ``Pass.preload`` modules of such steps ahead of time, while
        an earlier step runs elsewhere. The default, ``False``, suits systems that run steps
        in another process or on another machine.
        """
        return False

    def prepare_step(self, step_name: str, log_dir: str, isolate: bool,
                     preload: tuple[str, ...]) -> None:
        """A step named ``step_name`` comes next, its request once its inputs are hashed
        (API 1.3). A system that starts a process per step may start it now, so that it
        imports ``preload`` (``Pass.preload``) meanwhile; the next :meth:`run_step` uses it,
        and :meth:`cancel_prepared` ends it unused (a cache hit). The default does nothing.
        """

    def cancel_prepared(self) -> None:
        """End what :meth:`prepare_step` started and :meth:`run_step` did not use (API 1.3)."""

    #: how many candidates of a search this system runs at once
    parallelism: int = 1

    def run_candidates(self, requests: list[CandidateRequest],
                       run_here: CandidateRunner) -> list[dict[str, Any]]:
        """Run search candidates and return their records, in the order of ``requests``.

        Each record is what ``run.json`` keeps: ``choice``, ``steps``, ``status``, and
        ``metrics`` or ``error``. The default runs each here, one after another, with
        ``run_here``; a system that runs elsewhere sends each request (``to_dict()``) to
        :func:`olivine.run_candidate` there. A candidate that fails is a record with
        ``status: failed``, never an exception.
        """
        return [run_here(r) for r in requests]

    def log_dir(self) -> Path | None:
        """Deprecated (API 1.0): where child-process logs go is ``StepRequest.log_dir``."""
        return None
