"""Leaving a process without tearing the interpreter down.

Once its work is written, a process that loaded torch, onnxruntime, onnx or sympy spends
about a second freeing modules and objects one by one (0.85-0.95 s for ``olivine run`` after
the MiniLM workflow's in-process fusion and quantization; 1-2 s for a step's child with torch
and a model). :func:`exit_now` does what ``sys.exit`` does that anyone can observe (stops
executors and waits for the threads that are not daemons, runs the ``atexit`` handlers,
flushes the logs, the standard streams and C's stdio buffers) and then ends the process
with ``os._exit``.

What only happens during the teardown is skipped: finalizers of objects still alive (a file
opened without ``with`` and never closed loses its buffer). So under a profiler or a tracer
(``python -m cProfile -o ...``), and with ``OLIVINE_FAST_EXIT=0``, it exits the ordinary way.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import NoReturn

__all__ = ["FAST_EXIT_ENV", "exit_now"]

#: Set to ``0`` to make :func:`exit_now` exit through ``sys.exit`` (full teardown).
FAST_EXIT_ENV = "OLIVINE_FAST_EXIT"


def exit_now(code: int) -> NoReturn:
    """End the process with exit status ``code``, skipping only the interpreter's teardown."""
    if (os.environ.get(FAST_EXIT_ENV, "1") == "0" or sys.getprofile() is not None
            or sys.gettrace() is not None):
        sys.exit(code)
    shutdown = getattr(threading, "_shutdown", None)
    main = threading.main_thread()
    if threading.current_thread() is main and callable(shutdown):
        shutdown()  # what the interpreter does first: stop executors, join non-daemon threads
    else:
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread not in (current, main) and not thread.daemon and thread.is_alive():
                thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    _flush_c_stdio()
    os._exit(code)


def _flush_c_stdio() -> None:
    """Flush what native libraries wrote with ``printf`` (``os._exit`` does not)."""
    if os.name != "posix":
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)
