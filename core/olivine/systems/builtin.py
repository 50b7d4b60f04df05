"""The host's built-in systems, registered through the ``olivine`` entry-point group."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

import attrs

from olivine.hookspecs import hookimpl
from olivine.options import option
from olivine.safepath import inside
from olivine.systems.base import ProgressSink, StepOutcome, StepRequest, System, SystemConfig
from olivine.systems.child import StandbyChild, portable, run_in_child
from olivine.systems.execute import execute_to_outcome


@attrs.frozen
class LocalSystemConfig(SystemConfig):
    """Options of ``LocalSystem``."""

    isolation: Literal["auto", "always", "never"] = attrs.field(
        default="auto", metadata=option(help="run steps in a child process: auto (passes that ask "
                                             "for it), always, or never"))


class LocalSystem(System):
    """This machine. Heavy passes run in a child process so their memory is returned."""

    name = "LocalSystem"
    Config = LocalSystemConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._standby: StandbyChild | None = None

    def prepare_step(self, step_name: str, log_dir: str, isolate: bool,
                     preload: tuple[str, ...]) -> None:
        """Start the child of an isolated step ahead, importing ``preload`` (POSIX;
        ``OLIVINE_STANDBY=0`` turns it off)."""
        self.cancel_prepared()
        if self.runs_here(isolate) or not standby_enabled():
            return
        self._standby = StandbyChild(sys.executable, _log_path(log_dir, step_name), preload)

    def cancel_prepared(self) -> None:
        """End an unused standby child."""
        standby, self._standby = self._standby, None
        if standby is not None:
            standby.cancel()

    def run_step(self, request: StepRequest, progress: ProgressSink, isolate: bool) -> StepOutcome:
        """Run in this process, or in a child when isolation says so."""
        standby, self._standby = self._standby, None
        if not self.runs_here(isolate):
            return run_in_child(sys.executable, request, progress, self._log(request), standby=standby)
        if standby is not None:
            standby.cancel()
        return execute_to_outcome(request, progress)

    def runs_here(self, isolate: bool) -> bool:
        """In this process unless isolation says a child process."""
        mode = self.config.isolation
        return not (mode == "always" or (mode == "auto" and isolate))

    def _log(self, request: StepRequest) -> Path:
        return step_log(self, request)


def step_log(system: System, request: StepRequest) -> Path:
    """Where a step's child process writes its log: the run's folder (or beside the work folder).

    The step name comes from a config: the path is checked to stay inside that folder.
    """
    folder = Path(request.log_dir) if request.log_dir else (system.log_dir()
                                                            or Path(request.work_dir).parent)
    return _log_path(str(folder), request.step_name)


def _log_path(folder: str, step_name: str) -> Path:
    return inside(Path(folder), f"{step_name}.log", what="step log")


def standby_enabled() -> bool:
    """Whether isolated steps' children start ahead of their requests (POSIX, unless
    ``OLIVINE_STANDBY=0``)."""
    return not portable() and os.environ.get("OLIVINE_STANDBY", "1") != "0"


def _python_of(path: str) -> Path | None:
    p = Path(path).expanduser()
    if p.is_file() and os.access(p, os.X_OK):
        return p
    for candidate in (p / "bin" / "python", p / "Scripts" / "python.exe"):
        if candidate.is_file():
            return candidate
    return None


def _check_env(instance: Any, attribute: Any, value: str) -> None:
    if _python_of(value) is None:
        raise ValueError(f"python_environment_path: no Python interpreter at {value!r} "
                         "(expected a virtual environment folder with bin/python, or the "
                         "interpreter itself)")


@attrs.frozen
class PythonEnvironmentConfig(SystemConfig):
    """Options of ``PythonEnvironment``."""

    python_environment_path: str = attrs.field(
        kw_only=True, validator=_check_env,
        metadata=option(help="a virtual environment (or interpreter) with olivine and the pass installed"))
    environment_variables: dict[str, str] = attrs.field(factory=dict)
    prepend_to_path: list[str] = attrs.field(factory=list)


class PythonEnvironment(System):
    """Another Python environment: every step runs in a child process of its interpreter.

    The cure for packages that cannot live together (onnxruntime flavours that
    clobber each other): install each in its own venv.
    """

    name = "PythonEnvironment"
    Config = PythonEnvironmentConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._standby: StandbyChild | None = None

    def _python_env(self) -> tuple[str, dict[str, str]]:
        python = _python_of(self.config.python_environment_path)
        assert python is not None  # checked by the config validator
        env = dict(self.config.environment_variables)
        if self.config.prepend_to_path:
            env["PATH"] = os.pathsep.join([*self.config.prepend_to_path, os.environ.get("PATH", "")])
        return str(python), env

    def prepare_step(self, step_name: str, log_dir: str, isolate: bool,
                     preload: tuple[str, ...]) -> None:
        """Start the environment's child ahead, importing ``preload`` there."""
        self.cancel_prepared()
        if standby_enabled():
            python, env = self._python_env()
            self._standby = StandbyChild(python, _log_path(log_dir, step_name), preload, env)

    def cancel_prepared(self) -> None:
        """End an unused standby child."""
        standby, self._standby = self._standby, None
        if standby is not None:
            standby.cancel()

    def run_step(self, request: StepRequest, progress: ProgressSink, isolate: bool) -> StepOutcome:
        """Run the step with the environment's interpreter."""
        python, env = self._python_env()
        standby, self._standby = self._standby, None
        return run_in_child(python, request, progress, step_log(self, request), env, standby=standby)


@hookimpl
def register_systems(register: Any) -> None:
    """Register LocalSystem and PythonEnvironment."""
    register(LocalSystem)
    register(PythonEnvironment)
