"""The built-in progress display: a live line per step on a terminal, plain lines otherwise.

Implemented as an ordinary plugin of the event hooks; disable it with
``OLIVINE_DISABLE_PLUGINS=olivine-progress``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from olivine.events import RunInfo, StepInfo
from olivine.hookspecs import hookimpl


class ProgressDisplay:
    """Draws step progress on ``stream`` (stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.level = 1
        self.started: dict[int, float] = {}
        self.last_plain: dict[int, float] = {}

    def _write(self, text: str) -> None:
        if self.level >= 4:
            return
        self.stream.write(text)
        self.stream.flush()

    def run_started(self, run: RunInfo) -> None:
        """Remember the run's log level."""
        self.level = run.log_level

    def step_started(self, step: StepInfo) -> None:
        """Announce the step."""
        self.started[step.index] = time.monotonic()
        label = f"[{step.index}/{step.count}] {step.name} ({step.pass_name})"
        self._write(f"\r\033[K{label} ..." if self.tty else f"{label}: started\n")

    def step_progress(self, step: StepInfo, done: float, total: float | None, message: str) -> None:
        """Redraw the live line, or print a plain line at most every 2 s."""
        elapsed = time.monotonic() - self.started.get(step.index, time.monotonic())
        label = f"[{step.index}/{step.count}] {step.name}"
        if total:
            frac = max(0.0, min(1.0, done / total))
            bar = "#" * int(frac * 20) + "-" * (20 - int(frac * 20))
            body = f"{bar} {frac:4.0%} {message}"
        else:
            body = message
        if self.tty:
            self._write(f"\r\033[K{label} {body} {elapsed:5.1f}s")
        else:
            now = time.monotonic()
            final = total is not None and done >= total
            if final or now - self.last_plain.get(step.index, 0) >= 2.0:
                self.last_plain[step.index] = now
                self._write(f"{label}: {body} ({elapsed:.1f} s)\n")

    def step_finished(self, step: StepInfo, record: dict[str, Any]) -> None:
        """Print the step's outcome on its own line."""
        status = record.get("status", "?")
        mark = {"ran": "done", "cached": "cached", "failed": "FAILED"}.get(status, status)
        line = (f"[{step.index}/{step.count}] {step.name} ({step.pass_name}): {mark} in "
                f"{record.get('duration_s', 0):.2f} s")
        self._write(("\r\033[K" if self.tty else "") + line + "\n")


_display = ProgressDisplay()


@hookimpl
def run_started(run: RunInfo) -> None:
    """Start a run's display."""
    _display.stream = sys.stderr
    _display.tty = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    _display.run_started(run)


@hookimpl
def step_started(step: StepInfo) -> None:
    """Show a step starting."""
    _display.step_started(step)


@hookimpl
def step_progress(step: StepInfo, done: float, total: float | None, message: str) -> None:
    """Show a step's progress."""
    _display.step_progress(step, done, total, message)


@hookimpl
def step_finished(step: StepInfo, record: dict[str, Any]) -> None:
    """Show a step's outcome."""
    _display.step_finished(step, record)
