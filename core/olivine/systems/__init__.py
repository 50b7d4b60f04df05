"""Systems: where a step runs (this process, a child process, another Python)."""

from olivine.systems.base import StepOutcome, StepRequest, System, SystemConfig

__all__ = ["StepOutcome", "StepRequest", "System", "SystemConfig"]
