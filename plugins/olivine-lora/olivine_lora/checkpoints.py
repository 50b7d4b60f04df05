"""Where a training step keeps checkpoints so that a killed run can resume.

The host gives each step a ``PassContext.state_dir`` (``CACHE/state/<key>``): the step
key names the exact input model and config, the folder outlives a failed or killed
attempt, and the engine holds the key's lock while the step runs, so one process at a
time uses it. The host removes it once the step succeeds. A pass run outside the
engine (no ``state_dir``) uses a temporary folder, and nothing resumes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import attrs

TRAINER_STATE = "trainer_state.json"


@attrs.define
class StateDir:
    """A step's state folder and whether it outlives a killed run."""

    path: Path
    persistent: bool

    def cleanup(self) -> None:
        """Remove the folder (after the step succeeded, or always when not persistent)."""
        shutil.rmtree(self.path, ignore_errors=True)


def state_dir_for(context: Any) -> StateDir:
    """The state folder of the step ``context`` runs (see the module docstring)."""
    explicit = getattr(context, "state_dir", None)
    if explicit:
        path = Path(explicit)
        path.mkdir(parents=True, exist_ok=True)
        return StateDir(path, True)
    return StateDir(Path(tempfile.mkdtemp(prefix="olivine-lora-state-")), False)


def _step_of(folder: Path) -> int:
    try:
        return int(folder.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` under ``folder`` that was written to the end.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint without a readable one
    was cut off by the kill; such folders are removed.
    """
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and _step_of(p) >= 0),
                   key=_step_of, reverse=True)
    for candidate in found:
        try:
            json.loads((candidate / TRAINER_STATE).read_text())
            return candidate
        except (OSError, ValueError):
            shutil.rmtree(candidate, ignore_errors=True)
    return None
