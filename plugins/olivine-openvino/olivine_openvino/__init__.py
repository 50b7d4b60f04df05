"""olivine-openvino: Olive's OpenVINO passes and an OpenVINO IR model kind.

``OpenVINOOptimumConversion``, ``OpenVINOConversion``, ``OpenVINOIoUpdate``,
``OpenVINOEncapsulation``, ``OpenVINOQuantization``, ``OpenVINOQuantizationWithAccuracy`` and
``OpenVINOWeightCompression`` with Olive 0.13's options, run on openvino, nncf and
optimum-intel (the ``openvino`` extra). Importing this package needs none of them: without
them the passes are listed, and a workflow using one is a config error naming what to install.
"""

from __future__ import annotations

from typing import Any

import olivine
from olivine import Accelerator, ModelHandle, Pass, PassContext
from olivine_openvino import common
from olivine_openvino.model import OpenVINOModel
from olivine_openvino.options import OptimumConversionConfig
from olivine_openvino.passes import (
    OpenVINOConversion,
    OpenVINOEncapsulation,
    OpenVINOIoUpdate,
    OpenVINOQuantization,
    OpenVINOQuantizationWithAccuracy,
    OpenVINOWeightCompression,
)

#: the host API versions this plugin works with (checked when the host loads it)
olivine_api = ">=1.1,<2"

__version__ = "0.1.0"


class OpenVINOOptimumConversion(Pass):
    """Olive's ``OpenVINOOptimumConversion``: a Hugging Face model to OpenVINO IR with
    optimum-intel's exporter; ``ov_quant_config`` compresses weights (int8/int4/nf4/...) or
    quantizes (quant_mode) as optimum-cli does. Several exported models (an encoder and a
    decoder) make a composite model."""

    name = "OpenVINOOptimumConversion"
    Config = OptimumConversionConfig
    accepts = ("hf",)
    produces = "openvino"
    produces_for = {"hf": "openvino"}
    libraries = ("openvino", "nncf", "optimum-intel", "transformers")
    isolate = True
    needs_execution_provider = False

    @classmethod
    def check(cls, config: Any, accelerator: Accelerator,
              model: ModelHandle | None = None) -> list[str]:
        """A config error naming what to install when optimum-intel or its stack is absent."""
        return common.dependency_problems(cls.name, ("openvino", "nncf", "optimum.intel"))

    def run(self, model: ModelHandle, config: OptimumConversionConfig,
            context: PassContext) -> ModelHandle:
        from olivine import HfModel
        from olivine_openvino.optimum import convert

        assert isinstance(model, HfModel)
        return convert(model, config, context)


PASSES = (OpenVINOOptimumConversion, OpenVINOConversion, OpenVINOIoUpdate, OpenVINOEncapsulation,
          OpenVINOQuantization, OpenVINOQuantizationWithAccuracy, OpenVINOWeightCompression)
__all__ = ["PASSES", "OpenVINOModel", *(p.name for p in PASSES)]


@olivine.hookimpl
def register_model_kinds(register: Any) -> None:
    """Register the OpenVINO IR kind (Olive's ``OpenVINOModel`` input type)."""
    register(OpenVINOModel)


@olivine.hookimpl
def register_passes(register: Any) -> None:
    """Register the seven OpenVINO passes."""
    for cls in PASSES:
        register(cls)
