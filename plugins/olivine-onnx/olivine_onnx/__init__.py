"""olivine-onnx: passes that rewrite ONNX graphs, with Olive's names and options.

``GraphSurgeries`` (Olive's surgeons, :mod:`olivine_onnx.surgeons`), ``OnnxPeepholeOptimizer``,
``DynamicToFixedShape``, ``OnnxIODataTypeConverter``, ``OnnxOpVersionConversion``,
``OnnxQuantizationPreprocess``, ``AddOliveMetadata``, ``OrtSessionParamsTuning``,
``CaptureSplitInfo``, ``SplitModel``, ``ComposeOnnxModels`` and ``StaticLLM``. Every pass that
writes ONNX files takes Olive's external-data options
(:class:`olivine.onnxsave.ExternalDataOptions`). Importing this package is cheap: onnx,
numpy and onnxruntime are imported when a pass runs.
"""

from __future__ import annotations

from typing import Any

import olivine
from olivine_onnx.passes import ALL_PASSES

#: the olivine plugin API versions this plugin supports
olivine_api = ">=1.1,<2"

__version__ = "0.1.0"


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register the ONNX graph passes."""
    for cls in ALL_PASSES:
        register(cls)
