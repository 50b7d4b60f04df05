"""Run a step in a child Python process and bring its outcome back intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from olivine.systems.base import ProgressSink, StepOutcome, StepRequest

EVENT_FD_ENV = "OLIVINE_EVENT_FD"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan keeps writing
    except (OSError, AttributeError):
        pass


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def run_in_child(python: str, request: StepRequest, progress: ProgressSink, log_file: Path,
                 env: Mapping[str, str] | None = None) -> StepOutcome:
    """Run ``request`` with interpreter ``python`` (which must have olivine and the pass installed)."""
    io_base = Path(request.work_dir).parent / "io"
    io_base.mkdir(parents=True, exist_ok=True)
    req_path, res_path = io_base / "request.json", io_base / "result.json"
    req_path.write_text(json.dumps(request.to_dict()))
    read_fd, write_fd = os.pipe()
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env[EVENT_FD_ENV] = str(write_fd)
    log_file.parent.mkdir(parents=True, exist_ok=True)

    def pump() -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                try:
                    event = json.loads(line)
                    progress(float(event["done"]), event.get("total"), str(event.get("message", "")))
                except (ValueError, KeyError, TypeError):
                    continue

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    with log_file.open("ab") as log:
        try:
            proc = subprocess.Popen(
                [python, "-m", "olivine.systems.worker", str(req_path), str(res_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env,
                pass_fds=(write_fd,), preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except OSError as exc:
            os.close(write_fd)
            reader.join()
            return StepOutcome(model=None, error=f"cannot start {python}: {exc}", error_type="OSError")
        os.close(write_fd)
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    reader.join()
    if res_path.is_file():
        data = json.loads(res_path.read_text())
        data["log_file"] = str(log_file)
        data["exit_code"] = code
        return StepOutcome(**data)
    if code < 0:
        name = signal.Signals(-code).name
        why = f"the step's process was killed by {name}"
        if -code == signal.SIGKILL:
            why += " (out of memory?)"
    else:
        why = f"the step's process exited with code {code} before reporting a result"
    tail = _tail(log_file)
    return StepOutcome(model=None, error=why, error_type="ChildProcessError",
                       traceback=tail or None, log_file=str(log_file), exit_code=code)
