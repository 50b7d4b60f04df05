"""olivine-quantization: quantization passes for ONNX models.

int8 activation quantization (:mod:`olivine_quantization.int8`): ``OnnxDynamicQuantization``,
``OnnxStaticQuantization``, ``OnnxQuantization``. Importing this package is cheap:
onnxruntime is imported when a pass runs.
"""

from __future__ import annotations

from typing import Any

import olivine
from olivine_quantization.int8 import (
    OnnxDynamicQuantization,
    OnnxQuantization,
    OnnxStaticQuantization,
)

#: the olivine plugin API versions this plugin supports
olivine_api = ">=1.4,<2"

__version__ = "0.1.0"
__all__ = ["OnnxDynamicQuantization", "OnnxQuantization", "OnnxStaticQuantization"]


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register the quantization passes."""
    register(OnnxDynamicQuantization)
    register(OnnxStaticQuantization)
    register(OnnxQuantization)
