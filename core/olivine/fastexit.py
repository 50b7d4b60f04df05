"""Leaving a process without tearing the interpreter down.

Once its work is written, a process that loaded torch, onnxruntime, onnx or sympy spends
about a second freeing modules and objects one by one (0.85 s for ``olivine run`` after the
MiniLM workflow's in-process fusion and quantization; 1-2 s for a step's child with torch and
a model). :func:`exit_now` does what ``sys.exit`` does that anyone can observe (waits for the
threads that are not daemons, runs the ``atexit`` handlers, flushes the logs and the standard
streams) and then ends the process with ``os._exit``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import NoReturn

__all__ = ["exit_now"]


def exit_now(code: int) -> NoReturn:
    """End the process with exit status ``code``, skipping only the interpreter's teardown."""
    shutdown = getattr(threading, "_shutdown", None)
    if threading.current_thread() is threading.main_thread() and callable(shutdown):
        shutdown()  # what the interpreter does first: stop executors, join non-daemon threads
    else:
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon and thread.is_alive():
                thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
