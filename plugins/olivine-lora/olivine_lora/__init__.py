"""olivine-lora: the ``LoRA``, ``QLoRA``, ``DoRA``, ``LoHa``, ``LoKr``, ``MergeAdapterWeights`` and
``ExtractAdapters`` passes and the ``finetune``, ``convert-adapters`` and ``generate-adapter``
commands.

This module is what the entry point names and every ``olivine`` command imports it,
so it stays light: torch, transformers, peft and onnx are imported inside the code
that trains, merges or converts.
"""

from __future__ import annotations

from typing import Any

import olivine

#: the olivine plugin API versions this plugin supports
olivine_api = ">=1.1,<2"


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register ``LoRA``, ``QLoRA``, ``DoRA``, ``LoHa``, ``LoKr``, ``MergeAdapterWeights`` and
    ``ExtractAdapters``."""
    from olivine_lora.passes import PASSES

    for cls in PASSES:
        register(cls)


@olivine.hookimpl
def register_commands(register: Any) -> None:
    """Register ``finetune``, ``convert-adapters``, ``generate-adapter`` and ``extract-adapters``."""
    from olivine_lora import cli

    for name, help_text, configure, handler in cli.COMMANDS:
        register(name, help_text, configure, handler)
    from olivine_lora import extract_cli

    def extract(args: Any) -> int:
        return extract_cli.cmd_extract_adapters(args)

    register("extract-adapters", "write the LoRA weights of peft adapters or of an ONNX model "
             "built with one into .onnx_adapter/.npz/.safetensors/.pt files (Olive's command)",
             extract_cli.configure, extract)
