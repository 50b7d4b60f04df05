"""The host's own model kinds, registered through ``register_model_kinds`` like a plugin's."""

from __future__ import annotations

from collections.abc import Callable

from olivine.hookspecs import hookimpl
from olivine.models import BUILTIN_KINDS


@hookimpl
def register_model_kinds(register: Callable[[type], None]) -> None:
    """Register ``hf``, ``onnx``, ``pytorch``, ``adapter`` and ``composite``."""
    for cls in BUILTIN_KINDS:
        register(cls)
