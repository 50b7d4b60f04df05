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
olivine_api = ">=1.4,<2"

__version__ = "0.1.0"


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register the ONNX graph passes."""
    for cls in ALL_PASSES:
        register(cls)


@olivine.hookimpl
def register_commands(register: Any) -> None:
    """Register ``generate-cost-model`` (the csv CaptureSplitInfo reads), ``tune-session-params``."""
    from olivine_onnx import costmodel, tune_cli

    def handler(args: Any) -> int:
        return costmodel.cmd_generate_cost_model(args)

    register("generate-cost-model", "write the per-module cost csv that CaptureSplitInfo's "
             "cost_model reads, from a Hugging Face model", costmodel.configure, handler)
    register("tune-session-params", tune_cli.HELP, tune_cli.configure, tune_cli.handle)
