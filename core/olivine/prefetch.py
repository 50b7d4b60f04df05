"""Import the modules of later in-process steps while an earlier step runs in a child process.

A workflow such as OnnxConversion -> OrtTransformersOptimization -> OnnxDynamicQuantization
runs its first step in a child process (it loads torch and the model) while this process
waits. The later steps run here and begin by importing onnxruntime's optimizer and
quantizer, and through them torch: seconds of single-threaded work. :class:`Prefetch`
does those imports in a daemon thread during the child's run, on the core the child
leaves free, and the engine joins it as soon as the child ends, so no import of this
process ever runs concurrently with the engine's own code.

Prefetching is a hint: a module that fails to import is recorded and ignored (the step
imports it again and reports the real error), and nothing here changes a result.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)


class Prefetch:
    """A background import of ``modules``; :meth:`join` waits for it and returns what it did."""

    def __init__(self, modules: Iterable[str]) -> None:
        self.modules = list(dict.fromkeys(m for m in modules if m))
        #: module name -> seconds its import took here, or the error text
        self.done: dict[str, float | str] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> Prefetch:
        """Begin importing (nothing to do when every module is imported already)."""
        pending = [m for m in self.modules if m not in sys.modules]
        if pending:
            self._thread = threading.Thread(target=self._run, args=(pending,), daemon=True,
                                            name="olivine-prefetch")
            self._thread.start()
        return self

    def _run(self, modules: list[str]) -> None:
        for name in modules:
            t0 = time.perf_counter()
            try:
                importlib.import_module(name)
            except BaseException as exc:  # a hint only: the step imports it again and reports it
                self.done[name] = f"{type(exc).__name__}: {exc}"
                continue
            self.done[name] = round(time.perf_counter() - t0, 3)

    def join(self) -> dict[str, float | str]:
        """Wait until the imports have finished; return :attr:`done`."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            log.debug("prefetched imports: %s", self.done)
        return self.done
