"""olivine-transformers: ONNX export of transformers models, ONNX Runtime fusions, float16.

Registers ``OnnxConversion``, ``OrtTransformersOptimization`` and
``OnnxFloatToFloat16``, and the data components that need a tokenizer
(``HuggingfaceContainer``'s pre-processing, the transformers dummy-data containers).
Importing this package is cheap: torch, transformers and onnxruntime are imported when a
pass runs.
"""

from __future__ import annotations

from typing import Any

import olivine
from olivine_transformers.conversion import OnnxConversion
from olivine_transformers.optimization import OnnxFloatToFloat16, OrtTransformersOptimization

#: the olivine plugin API versions this plugin supports
olivine_api = ">=1.4,<2"

__version__ = "0.1.0"
__all__ = ["OnnxConversion", "OnnxFloatToFloat16", "OrtTransformersOptimization"]


@olivine.hookimpl
def register_data_components(register: Any) -> None:
    """Register the tokenizing pre-processors and the transformers dummy-data containers."""
    from olivine_transformers.data_components import register_all

    register_all(register)


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register this plugin's passes."""
    register(OnnxConversion)
    register(OrtTransformersOptimization)
    register(OnnxFloatToFloat16)
