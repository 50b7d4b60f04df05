"""Run a step in a child Python process and bring its outcome back intact.

The child is a fresh interpreter (``python -m olivine.systems.worker``), started
the same way on every platform; the request and the result travel as JSON files.
Progress events come back one of two ways:

- POSIX: over a pipe the child inherits (``pass_fds``), and on Linux the child is
  killed when olivine dies (``PR_SET_PDEATHSIG``, set in ``preexec_fn``).
- Elsewhere (Windows, where neither ``pass_fds`` nor ``preexec_fn`` exist), or when
  ``OLIVINE_PORTABLE_CHILD=1``: the child appends them to a file that a thread of
  the parent reads as it grows. Tests set the variable to run this path on Linux.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from olivine.systems.base import ProgressSink, StepOutcome, StepRequest

EVENT_FD_ENV = "OLIVINE_EVENT_FD"
EVENT_FILE_ENV = "OLIVINE_EVENT_FILE"
#: set to ``1`` to use the portable (Windows) way of starting a child on any platform
PORTABLE_ENV = "OLIVINE_PORTABLE_CHILD"


def portable() -> bool:
    """True when children are started without ``pass_fds``/``preexec_fn`` (events through a file)."""
    return os.name != "posix" or os.environ.get(PORTABLE_ENV, "") not in ("", "0")


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


def _deliver(line: str, progress: ProgressSink) -> None:
    try:
        event = json.loads(line)
        progress(float(event["done"]), event.get("total"), str(event.get("message", "")))
    except (ValueError, KeyError, TypeError):
        pass


class _PipeEvents:
    """Events over a pipe whose write end the child inherits (POSIX)."""

    def __init__(self, progress: ProgressSink) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.env = {EVENT_FD_ENV: str(self.write_fd)}
        self.popen_args: dict[str, Any] = {
            "pass_fds": (self.write_fd,),
            "preexec_fn": _die_with_parent if sys.platform == "linux" else None}
        self._thread = threading.Thread(target=self._pump, args=(progress,), daemon=True)
        self._thread.start()

    def _pump(self, progress: ProgressSink) -> None:
        with os.fdopen(self.read_fd, "r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                _deliver(line, progress)

    def started(self) -> None:
        """The child holds its copy of the write end: close ours, so the reader sees its end."""
        os.close(self.write_fd)

    def finish(self) -> None:
        """Wait until every event the child wrote has been delivered."""
        self._thread.join()


class _FileEvents:
    """Events appended by the child to a file the parent reads as it grows (any platform)."""

    def __init__(self, path: Path, progress: ProgressSink) -> None:
        path.write_bytes(b"")
        self.env = {EVENT_FILE_ENV: str(path)}
        self.popen_args: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, args=(path, progress), daemon=True)
        self._thread.start()

    def _follow(self, path: Path, progress: ProgressSink) -> None:
        pending = ""
        with path.open("r", encoding="utf-8", errors="replace", newline="") as stream:
            while True:
                last_round = self._stop.is_set()
                chunk = stream.read()
                if chunk:
                    *lines, pending = (pending + chunk).split("\n")
                    for line in lines:
                        _deliver(line, progress)
                elif last_round:
                    return
                else:
                    self._stop.wait(0.05)

    def started(self) -> None:
        """Nothing to hand over: the child opens the file by name."""

    def finish(self) -> None:
        """Read what the child wrote last, then stop following the file."""
        self._stop.set()
        self._thread.join()


def _events(io_base: Path, progress: ProgressSink) -> _PipeEvents | _FileEvents:
    return _FileEvents(io_base / "events.jsonl", progress) if portable() else _PipeEvents(progress)


def _why(code: int) -> str:
    """Why a child that wrote no result ended, from its exit status."""
    if code >= 0:
        return f"the step's process exited with code {code} before reporting a result"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    why = f"the step's process was killed by {name}"
    if -code == getattr(signal, "SIGKILL", None):
        why += " (out of memory?)"
    return why


def _wait(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait()
    except BaseException:  # interrupted: the child goes too (the event reader is a daemon)
        proc.kill()
        proc.wait()
        raise


class _Relay:
    """A progress sink whose target is set later (a standby child's events arrive here)."""

    def __init__(self) -> None:
        self.target: ProgressSink | None = None

    def __call__(self, done: float, total: float | None, message: str) -> None:
        if self.target is not None:
            self.target(done, total, message)


def _child_env(env: Mapping[str, str] | None, channel: Mapping[str, str]) -> dict[str, str]:
    child_env = dict(os.environ)
    child_env.update(env or {})
    for name in (EVENT_FD_ENV, EVENT_FILE_ENV):  # never a channel olivine's own parent gave it
        child_env.pop(name, None)
    child_env.update(channel)
    return child_env


class StandbyChild:
    """A step's child process started before its request exists.

    It imports the pass's ``preload`` modules (torch, transformers, a converter: seconds)
    while this process hashes the step's inputs, then waits on its stdin for the request
    and runs it as any child does. :meth:`cancel` ends it unused (a cache hit, a failure
    before the step): nothing was written but its log file, removed again when it is
    empty and was not there before. POSIX only (the events travel over an inherited pipe).
    """

    def __init__(self, python: str, log_file: Path, modules: tuple[str, ...] | list[str],
                 env: Mapping[str, str] | None = None) -> None:
        self.python = python
        self.log_file = log_file
        self.relay = _Relay()
        self.events = _PipeEvents(self.relay)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._new_log = not log_file.exists()
        with log_file.open("ab") as log:
            try:
                self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                    [python, "-m", "olivine.systems.worker", "--standby", *modules],
                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                    env=_child_env(env, self.events.env), **self.events.popen_args)
            except OSError:
                self.proc = None
        self.events.started()

    def usable(self, python: str, log_file: Path) -> bool:
        """Whether it is alive and was started for this interpreter and log."""
        return (self.proc is not None and self.proc.poll() is None and python == self.python
                and log_file == self.log_file)

    def hand_over(self, req_path: Path, res_path: Path, progress: ProgressSink) -> int:
        """Give it the request; wait for it to end; return its exit status."""
        assert self.proc is not None and self.proc.stdin is not None
        self.relay.target = progress
        try:
            self.proc.stdin.write((json.dumps({"request": str(req_path), "result": str(res_path)})
                                   + "\n").encode())
            self.proc.stdin.close()
        except OSError:  # it died meanwhile: its exit status says how
            pass
        code = _wait(self.proc)
        self.events.finish()
        return code

    def cancel(self) -> None:
        """End it unused."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self.events.finish()
        try:
            if self._new_log and self.log_file.stat().st_size == 0:
                self.log_file.unlink()
        except OSError:
            pass


def run_in_child(python: str, request: StepRequest, progress: ProgressSink, log_file: Path,
                 env: Mapping[str, str] | None = None,
                 standby: StandbyChild | None = None) -> StepOutcome:
    """Run ``request`` with interpreter ``python`` (which must have olivine and the pass installed).

    ``standby``, when given and usable for this interpreter and log, runs it (see
    :class:`StandbyChild`); otherwise it is cancelled and a fresh child started.
    """
    io_base = Path(request.work_dir).parent / "io"
    io_base.mkdir(parents=True, exist_ok=True)
    req_path, res_path = io_base / "request.json", io_base / "result.json"
    req_path.write_text(json.dumps(request.to_dict()))
    if standby is not None and standby.usable(python, log_file):
        code = standby.hand_over(req_path, res_path, progress)
        return _outcome(res_path, log_file, code)
    if standby is not None:
        standby.cancel()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    events = _events(io_base, progress)
    with log_file.open("ab") as log:
        try:
            proc = subprocess.Popen(
                [python, "-m", "olivine.systems.worker", str(req_path), str(res_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_child_env(env, events.env), **events.popen_args)
        except OSError as exc:
            events.started()
            events.finish()
            return StepOutcome(model=None, error=f"cannot start {python}: {exc}", error_type="OSError")
        events.started()
        code = _wait(proc)
    events.finish()
    return _outcome(res_path, log_file, code)


def _outcome(res_path: Path, log_file: Path, code: int) -> StepOutcome:
    if res_path.is_file():
        data = json.loads(res_path.read_text())
        data["log_file"] = str(log_file)
        data["exit_code"] = code
        return StepOutcome(**data)
    tail = _tail(log_file)
    return StepOutcome(model=None, error=_why(code), error_type="ChildProcessError",
                       traceback=tail or None, log_file=str(log_file), exit_code=code)
