"""Entry point of a step's child process: ``python -m olivine.systems.worker REQUEST RESULT``,
or ``--standby MODULE...`` (started ahead of its request: see
:class:`~olivine.systems.child.StandbyChild`)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import attrs

from olivine.systems.base import StepRequest
from olivine.systems.child import EVENT_FD_ENV, EVENT_FILE_ENV


def main(argv: list[str]) -> int:
    """Run the request in ``argv[0]``; write the outcome to ``argv[1]``."""
    request = StepRequest(**json.loads(Path(argv[0]).read_text()))
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    logging.basicConfig(level=levels[max(0, min(4, request.log_level))],
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    fd, event_file = os.environ.get(EVENT_FD_ENV), os.environ.get(EVENT_FILE_ENV)
    # a pipe inherited from the parent (POSIX), else a file the parent follows (any platform)
    events = os.fdopen(int(fd), "w", buffering=1) if fd else \
        open(event_file, "a", buffering=1, encoding="utf-8") if event_file else None  # noqa: SIM115
    last = [0.0]

    def progress(done: float, total: float | None, message: str) -> None:
        now = time.monotonic()
        if events is None or (now - last[0] < 0.1 and (total is None or done < total)):
            return
        last[0] = now
        events.write(json.dumps({"done": done, "total": total, "message": message}) + "\n")

    from olivine.systems.execute import execute_to_outcome, peak_rss_mb

    outcome = execute_to_outcome(request, progress)
    peak = peak_rss_mb() or 0.0
    data = attrs.asdict(outcome)
    if outcome.model is not None:
        data["peak_rss_mb"] = round(max(peak, outcome.peak_rss_mb or 0), 1)
    data["python"] = sys.executable
    tmp = Path(argv[1] + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, argv[1])
    if events is not None:
        events.close()
    return 0


def standby(modules: list[str]) -> int:
    """``--standby MODULE...``: import ``modules`` now (a hint: failures are ignored, the step
    imports them again and reports the real error), then read ``{"request", "result"}`` from
    stdin and run that request; end with nothing done when stdin closes first."""
    import importlib

    import olivine.systems.execute  # noqa: F401  (what every step needs)

    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException:  # a hint only
            continue
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    order = json.loads(line)
    return main([order["request"], order["result"]])


if __name__ == "__main__":
    from olivine.fastexit import exit_now

    # with torch and a model loaded, the teardown takes 1-2 s after the result is written
    if sys.argv[1:2] == ["--standby"]:
        exit_now(standby(sys.argv[2:]))
    exit_now(main(sys.argv[1:]))
