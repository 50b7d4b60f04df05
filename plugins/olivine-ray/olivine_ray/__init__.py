"""The Ray system: steps and search candidates as Ray tasks.

Ray is imported only when a RaySystem is used, never when olivine starts.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

import olivine
from olivine import (
    CandidateRequest,
    CandidateRunner,
    LocalSystem,
    LocalSystemConfig,
    ProgressSink,
    StepOutcome,
    StepRequest,
    System,
    SystemConfig,
    UsageError,
    option,
)

olivine_api = ">=1.1,<2"

_QUIET_WORKERS = {"OLIVINE_DISABLE_PLUGINS": "olivine-progress"}


def _positive(instance: Any, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name}: must be > 0, got {value}")


@attrs.frozen
class RaySystemConfig(SystemConfig):
    """Options of ``RaySystem``."""

    address: str | None = attrs.field(
        default=None, metadata=option(help="null: start a local Ray instance; 'auto' or an address: "
                                           "join that cluster"))
    num_workers: int = attrs.field(default=2, validator=_positive,
                                   metadata=option(help="candidates that run at once"))
    num_cpus: float = attrs.field(default=1.0, validator=_positive,
                                  metadata=option(help="CPUs each task asks for"))
    num_gpus: float = attrs.field(default=0.0, metadata=option(help="GPUs each task asks for"))
    memory_mb: float | None = attrs.field(default=None, metadata=option(help="memory each task asks for"))
    max_retries: int = attrs.field(default=1, validator=attrs.validators.ge(0),
                                   metadata=option(help="retries of a task whose worker died"))
    step_isolation: str = attrs.field(
        default="auto", validator=attrs.validators.in_(["auto", "always", "never"]),
        metadata=option(help="how steps run inside a worker (as LocalSystem's isolation)"))
    runtime_env: dict[str, Any] = attrs.field(factory=dict, metadata=option(help="Ray runtime_env"))


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("RaySystem needs Ray: pip install olivine-ray (or pip install ray)") from None
    return ray


def _worker_system(isolation: str) -> System:
    return LocalSystem(LocalSystemConfig(isolation=isolation))  # type: ignore[arg-type]


def candidate_task(request: dict[str, Any], isolation: str) -> dict[str, Any]:
    """Run one search candidate inside a Ray worker (module level: Ray pickles it by name)."""
    result = olivine.run_candidate(request, system=_worker_system(isolation))
    result["worker_pid"] = os.getpid()
    return result


def step_task(request: dict[str, Any], isolation: str, isolate: bool) -> dict[str, Any]:
    """Run one step inside a Ray worker; the outcome as a dict."""
    outcome = _worker_system(isolation).run_step(StepRequest(**request), lambda *a: None, isolate)
    return attrs.asdict(outcome)


class RaySystem(System):
    """Runs each candidate of a search (and each step of a plain run) as a Ray task."""

    name = "RaySystem"
    aliases = ("Ray",)
    Config = RaySystemConfig

    @property
    def parallelism(self) -> int:  # type: ignore[override]
        """Candidates run at once."""
        return int(self.config.num_workers)

    def _start(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            env = dict(self.config.runtime_env)
            env["env_vars"] = {**_QUIET_WORKERS, **env.get("env_vars", {})}
            kwargs: dict[str, Any] = {"runtime_env": env, "ignore_reinit_error": True,
                                      "include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if self.config.address is None:
                kwargs["num_cpus"] = max(1, int(self.config.num_workers * self.config.num_cpus))
            else:
                kwargs["address"] = self.config.address
            ray.init(**kwargs)
        return ray

    def _options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.config.num_cpus, "max_retries": self.config.max_retries}
        if self.config.runtime_env:
            env = dict(self.config.runtime_env)
            env["env_vars"] = {**_QUIET_WORKERS, **env.get("env_vars", {})}
            opts["runtime_env"] = env
        if self.config.num_gpus:
            opts["num_gpus"] = self.config.num_gpus
        if self.config.memory_mb:
            opts["memory"] = int(self.config.memory_mb * 2**20)
        return opts

    def run_step(self, request: StepRequest, progress: ProgressSink, isolate: bool) -> StepOutcome:
        """Run one step as a Ray task and wait for it."""
        ray = self._start()
        task = ray.remote(step_task).options(**self._options())
        try:
            data = ray.get(task.remote(request.to_dict(), self.config.step_isolation, isolate))
        except Exception as exc:  # the worker died (after retries) or Ray failed
            return StepOutcome(model=None, error=_describe(exc), error_type="RayTaskError")
        return StepOutcome(**data)

    def run_candidates(self, requests: list[CandidateRequest],
                       run_here: CandidateRunner) -> list[dict[str, Any]]:
        """Submit every candidate as a task; a task that still dies after retries fails alone."""
        ray = self._start()
        task = ray.remote(candidate_task).options(**self._options())
        refs = [task.remote(r.to_dict(), self.config.step_isolation) for r in requests]
        results = []
        for choice, ref in zip((r.choice for r in requests), refs):
            try:
                results.append(ray.get(ref))
            except Exception as exc:
                results.append({"choice": {k: v for k, v in choice.items() if not k.startswith("__")},
                                "steps": [], "status": "failed", "error": _describe(exc)})
        return results


def _describe(exc: Exception) -> str:
    name = type(exc).__name__
    if "WorkerCrashed" in name or "ActorDied" in name or "NodeDied" in name:
        return f"the Ray worker died (retried, then gave up): {name}"
    text = str(exc).strip().splitlines()
    return f"{name}: {text[-1] if text else ''}"


@olivine.hookimpl
def register_systems(register: Any) -> None:
    """Register RaySystem."""
    register(RaySystem)
