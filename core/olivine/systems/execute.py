"""Run one pass from a :class:`StepRequest`: shared by in-process and child-process systems."""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from olivine.accelerator import Accelerator
from olivine.composite import run_per_component, runs_per_component
from olivine.config.sections import DataConfig
from olivine.config.typed import Problems, is_missing, structure
from olivine.errors import OlivineError
from olivine.models import CompositeModel, ModelHandle, handle_from_dict
from olivine.passes import PassContext
from olivine.plugins import get_plugin_host
from olivine.systems.base import ProgressSink, StepOutcome, StepRequest


def current_rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; elsewhere the peak so far, or 0)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return peak_rss_mb() or 0.0


def peak_rss_mb() -> float | None:
    """The peak resident memory of this process in MiB, or ``None`` where it cannot be read.

    ``resource`` where it exists (POSIX); else psutil when installed (Windows); else ``None``.
    """
    try:
        import resource
    except ImportError:
        try:
            import psutil
        except ImportError:
            return None
        info = psutil.Process().memory_info()
        return float(getattr(info, "peak_wset", info.rss)) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


class PeakSampler:
    """Samples this process's resident memory in a thread; ``peak_mb`` after ``stop()``."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_mb = current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, current_rss_mb())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())


def execute(request: StepRequest, progress: ProgressSink) -> tuple[ModelHandle, float]:
    """Run the request's pass here; return the output handle and the step's peak RSS (MiB).

    Raises whatever the pass raises.
    """
    host = get_plugin_host()
    cls = host.passes.get(request.pass_name)
    if cls is None:
        raise OlivineError(f"pass {request.pass_name!r} is not installed in this Python "
                           f"environment; installed: {', '.join(host.passes.primary_names())}")
    problems = Problems()
    config = structure(request.config, cls.Config, "config", problems)
    if is_missing(config):
        raise OlivineError("; ".join(problems.items))
    data_configs = {name: DataConfig(**value) for name, value in request.data_configs.items()}
    context = PassContext(
        work_dir=Path(request.work_dir), step_name=request.step_name,
        accelerator=Accelerator(request.device, request.execution_provider),
        data_configs=data_configs, logger=logging.getLogger(f"olivine.pass.{request.pass_name}"),
        progress_fn=progress, state_dir=Path(request.state_dir) if request.state_dir else None)
    model = handle_from_dict(request.model)
    with PeakSampler() as sampler:
        output: ModelHandle
        if isinstance(model, CompositeModel) and runs_per_component(cls.accepts, model):
            instance = cls()  # as Olive: once per component, the outputs a composite again
            output = run_per_component(lambda m, c: instance.run(m, config, c), cls.name,
                                       tuple(cls.accepts), model, context)
        else:
            output = cls().run(model, config, context)
    if not isinstance(output, ModelHandle):
        raise OlivineError(f"pass {request.pass_name} returned {type(output).__name__}, "
                           "not a model handle")
    return output, sampler.peak_mb


def execute_to_outcome(request: StepRequest, progress: ProgressSink) -> StepOutcome:
    """Like :func:`execute`, but a failure becomes an outcome with the error and traceback."""
    try:
        output, peak = execute(request, progress)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        code = exc.exit_code if isinstance(exc, OlivineError) else 1
        return StepOutcome(model=None, error=str(exc) or type(exc).__name__,
                           error_type=type(exc).__name__, traceback=traceback.format_exc(),
                           error_exit_code=code)
    return StepOutcome(model=output.to_dict(), peak_rss_mb=round(peak, 1))
