"""olivine-weightquant: weight-only int4/int8 quantization (RTN, GPTQ, HQQ, AWQ) and ``olivine quantize``.

The entry point names this module and every ``olivine`` command imports it, so it
stays light: torch, onnx and transformers are imported inside the passes' ``run``.
"""

from __future__ import annotations

from typing import Any

import olivine

#: the olivine plugin API versions this plugin supports
olivine_api = ">=1.1,<2"


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register the ONNX passes (RTN, HQQ, GPTQ, k-quant, MatMulNBits to QDQ) and the Hugging
    Face passes (Rtn, Gptq and Olive's GptqQuantizer/GptqModel, Awq, SelectiveMixedPrecision)."""
    from olivine_weightquant import passes, passes_recipes

    for cls in (passes.OnnxBlockWiseRtnQuantization, passes.OnnxHqqQuantization,
                passes.OnnxGptqQuantization, passes.Gptq, passes.GptqQuantizer,
                passes.GptqModel, passes.Awq, passes.Rtn):
        register(cls)
    for extra in (passes_recipes.SelectiveMixedPrecision, passes_recipes.OnnxKQuantQuantization,
                  passes_recipes.MatMulNBitsToQDQ):
        register(extra)


@olivine.hookimpl
def register_commands(register: Any) -> None:
    """Register ``olivine quantize``."""
    from olivine_weightquant import cli

    register("quantize", cli.HELP, cli.configure, cli.handle)
