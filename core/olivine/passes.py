"""The base class of optimization passes and the context they run in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from olivine.accelerator import Accelerator
from olivine.models import ModelHandle


@attrs.frozen
class NoConfig:
    """A pass without options."""


ProgressFn = Callable[[float, "float | None", str], None]


@attrs.define
class PassContext:
    """What a running pass may use besides its input model and config.

    ``work_dir`` is an empty folder of its own: the pass writes its output model
    there and returns a handle naming it. Nothing else should be written.
    """

    work_dir: Path
    step_name: str
    accelerator: Accelerator
    data_configs: Mapping[str, Any] = attrs.field(factory=dict)
    #: a folder that survives a failed or killed attempt of this same step (same cache key),
    #: for checkpoints to resume from; removed once the step succeeds
    state_dir: Path | None = None
    logger: logging.Logger = attrs.field(factory=lambda: logging.getLogger("olivine.pass"))
    progress_fn: ProgressFn | None = None

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report progress: ``done`` of ``total`` units (``total=None`` when unknown)."""
        if self.progress_fn is not None:
            self.progress_fn(done, total, message)


class Pass:
    """One optimization technique: takes a model handle, returns a new one.

    Subclasses set the class attributes below and implement :meth:`run`. The
    ``Config`` attrs class declares every option: typed fields with defaults,
    validators and ``metadata={"help": ...}``. A field whose metadata has
    ``"data_config": True`` names an entry of the workflow's ``data_configs``; one with
    ``"input_path": True`` names a local file or folder the pass reads (or a list or
    mapping of them; for a mapping, a tuple of the keys that are paths). Both enter the
    step's cache key by content (:mod:`olivine.inputs`): declare every option that names
    a file the pass reads, or a changed file returns the old cached result.
    """

    #: The name workflow configs use in ``type`` (matched case-insensitively).
    name: ClassVar[str] = ""
    #: Other accepted names (for example Olive's older names).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: The attrs class of this pass's options.
    Config: ClassVar[type] = NoConfig
    #: Model kinds the pass takes (``hf``, ``onnx``, ``adapter``, ``composite``).
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    #: The model kind the pass returns.
    produces: ClassVar[str] = "onnx"
    #: Input kinds for which the pass returns another kind than ``produces`` (input -> output),
    #: for passes whose output kind follows their input's (an ONNX model in, an ONNX model out).
    produces_for: ClassVar[dict[str, str]] = {}
    #: Distributions whose versions change the output (part of the cache key).
    libraries: ClassVar[tuple[str, ...]] = ()
    #: Run in a child process on ``LocalSystem`` (``isolation: auto``): for passes that
    #: load large models, so their memory is returned when the step ends.
    isolate: ClassVar[bool] = False
    #: Modules :meth:`run` imports (``"onnxruntime.quantization"``). While an earlier step of
    #: the chain runs in a child process, the engine imports them in a background thread of
    #: this process, so their import time overlaps that step (API 1.2). An isolated pass's own
    #: child process, started before its inputs are hashed, imports them while the engine hashes
    #: (API 1.3, ``System.prepare_step``). A hint only: a name
    #: that fails to import is ignored there, and ``run`` imports what it needs as usual.
    preload: ClassVar[tuple[str, ...]] = ()
    #: False for passes that use no ONNX Runtime execution provider (Olive's non-ONNX passes):
    #: a workflow of such passes only runs on the CPU when its accelerator names no one device.
    needs_execution_provider: ClassVar[bool] = True
    #: Bump when the pass's output changes for the same inputs (part of the cache key).
    version: ClassVar[str] = "1"

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator,
              model: ModelHandle | None = None) -> list[str]:
        """Problems with ``config`` for ``accelerator`` found before running (``[]`` if none).

        ``model`` is the pass's input when it is known before the run (the workflow's
        input model, for the first pass), else ``None``. Read only what is cheap (a
        config file, not weights). Each message is reported under the pass's path in
        the workflow config.
        """
        return []

    def run(self, model: ModelHandle, config: Any, context: PassContext) -> ModelHandle:
        """Produce the output model in ``context.work_dir`` and return its handle."""
        raise NotImplementedError
