"""olivine-rotate: rotations of a Hugging Face LLM's residual stream, QuaRot and SliceGPT.

The entry point names this module and every ``olivine`` command imports it, so it stays
light: torch and transformers are imported inside the passes' ``run``.
"""

from __future__ import annotations

from typing import Any

import olivine

#: the olivine plugin API versions this plugin supports
olivine_api = ">=1.1,<2"


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register ``QuaRot`` and ``SliceGPT`` (Hugging Face model in, Hugging Face model out)."""
    from olivine_rotate import passes

    register(passes.QuaRot)
    register(passes.SliceGPT)
