"""olivine-modelbuilder: the ``ModelBuilder`` pass and the ``auto-opt``, ``capture-onnx-graph``,
``generate``, ``demo`` and ``optimize`` commands.

This module is what the entry point names and every ``olivine`` command imports
it, so it stays light: torch, transformers and onnxruntime-genai are imported
inside the code that runs a build or a generation.
"""

from __future__ import annotations

from typing import Any

import olivine

#: the olivine plugin API versions this plugin supports
olivine_api = ">=1.1,<2"


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register ``ModelBuilder``."""
    from olivine_modelbuilder.passes import ModelBuilder

    register(ModelBuilder)


@olivine.hookimpl
def register_commands(register: Any) -> None:
    """Register ``auto-opt``, ``capture-onnx-graph``, ``generate``, ``demo`` and ``optimize``."""
    from olivine_modelbuilder import cli, optimize_cli

    for name, help_text, configure, handler in (*cli.COMMANDS, *optimize_cli.COMMANDS):
        register(name, help_text, configure, handler)
