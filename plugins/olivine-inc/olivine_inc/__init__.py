"""olivine-inc: Olive's Intel Neural Compressor (INC) quantization passes.

``IncQuantization``, ``IncDynamicQuantization`` and ``IncStaticQuantization`` with Olive's
options, run by ``onnx-neural-compressor`` (the package INC 3.x moved its ONNX Runtime
quantizer to). Importing this package is cheap: the quantizer is imported when a pass runs.

``IncAutoRound`` runs INC's AutoRound weight-only algorithm through ``neural_compressor.torch``
on a Hugging Face model and writes a GPTQ checkpoint for ``ModelBuilder`` (extra ``[torch]``).
"""

from __future__ import annotations

from typing import Any

import olivine
from olivine_inc.autoround import IncAutoRound
from olivine_inc.options import (
    IncDynamicQuantization,
    IncQuantization,
    IncStaticQuantization,
)

#: the olivine plugin API versions this plugin supports
olivine_api = ">=1.1,<2"

__version__ = "0.1.0"
__all__ = ["IncAutoRound", "IncDynamicQuantization", "IncQuantization", "IncStaticQuantization"]


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register the three INC ONNX quantization passes and IncAutoRound."""
    register(IncQuantization)
    register(IncDynamicQuantization)
    register(IncStaticQuantization)
    register(IncAutoRound)
