"""Devices and ONNX Runtime execution providers."""

from __future__ import annotations

from typing import Literal

import attrs

#: Execution providers that ONNX Runtime ships (the names configs use).
EXECUTION_PROVIDERS = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "NvTensorRTRTXExecutionProvider",
    "DmlExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "OpenVINOExecutionProvider",
    "QNNExecutionProvider",
    "VitisAIExecutionProvider",
    "CoreMLExecutionProvider",
    "WebGpuExecutionProvider",
    "JsExecutionProvider",
)

#: Short names (as onnxruntime-genai and the model builder spell them).
PROVIDER_SHORT_NAMES = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "trt",
    "NvTensorRTRTXExecutionProvider": "NvTensorRtRtx",
    "DmlExecutionProvider": "dml",
    "ROCMExecutionProvider": "rocm",
    "MIGraphXExecutionProvider": "migraphx",
    "OpenVINOExecutionProvider": "openvino",
    "QNNExecutionProvider": "qnn",
    "VitisAIExecutionProvider": "vitisai",
    "CoreMLExecutionProvider": "coreml",
    "WebGpuExecutionProvider": "webgpu",
    "JsExecutionProvider": "js",
}

Device = Literal["cpu", "gpu", "npu"]

DEFAULT_PROVIDER = {"cpu": "CPUExecutionProvider", "gpu": "CUDAExecutionProvider",
                    "npu": "QNNExecutionProvider"}


def _check_providers(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    from olivine.errors import did_you_mean

    for name in value:
        if name not in EXECUTION_PROVIDERS:
            raise ValueError(
                f"execution_providers: unknown execution provider {name!r}"
                f"{did_you_mean(name, EXECUTION_PROVIDERS)}; known: {', '.join(EXECUTION_PROVIDERS)}"
            )


@attrs.frozen
class AcceleratorConfig:
    """One device and the execution providers to use on it, as in Olive's ``accelerators``."""

    device: Device = attrs.field(default="cpu", metadata={"help": "cpu, gpu or npu"})
    execution_providers: list[str] = attrs.field(
        factory=list, validator=_check_providers,
        metadata={"help": "ONNX Runtime execution providers, best first"})

    def resolved(self) -> Accelerator:
        """The target this config names: its device and first execution provider."""
        providers = self.execution_providers or [DEFAULT_PROVIDER[self.device]]
        return Accelerator(device=self.device, execution_provider=providers[0])


@attrs.frozen
class Accelerator:
    """The device and execution provider a step targets."""

    device: str = "cpu"
    execution_provider: str = "CPUExecutionProvider"

    @property
    def provider_short(self) -> str:
        """``cpu``, ``cuda``, ``dml``, ... (the spelling onnxruntime-genai uses)."""
        return PROVIDER_SHORT_NAMES.get(self.execution_provider, self.execution_provider)

    def __str__(self) -> str:
        return f"{self.device}-{self.provider_short}"
