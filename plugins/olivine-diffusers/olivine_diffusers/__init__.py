"""olivine-diffusers: LoRA training for diffusion pipelines (SD 1.5, SDXL, Flux).

Registers the ``SDLoRA`` pass, the ``diffusers`` model kind (Olive's ``DiffusersModel``
input model), the ``ImageDataContainer`` data components and the ``diffusion-lora`` command.
This module is what the entry point names and every ``olivine`` command imports it, so it
stays light: torch, diffusers, transformers and peft are imported where training happens.
"""

from __future__ import annotations

from typing import Any

import olivine

#: the host API versions this plugin works with (checked when the host loads it)
olivine_api = ">=1.1,<2"

__version__ = "0.1.0"


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register ``SDLoRA``."""
    from olivine_diffusers.passes import PASSES

    for cls in PASSES:
        register(cls)


@olivine.hookimpl
def register_model_kinds(register: Any) -> None:
    """Register the ``diffusers`` kind (input model type ``DiffusersModel``)."""
    from olivine_diffusers.model import DiffusersModel

    register(DiffusersModel)


@olivine.hookimpl
def register_data_components(register: Any) -> None:
    """Register ``ImageDataContainer``, ``image_folder_dataset`` and ``image_lora_preprocess``."""
    from olivine_diffusers.data import register_all

    register_all(register)


@olivine.hookimpl
def register_commands(register: Any) -> None:
    """Register ``diffusion-lora``."""
    from olivine_diffusers import cli

    register(cli.NAME, cli.HELP, cli.configure, cli.run_command)
