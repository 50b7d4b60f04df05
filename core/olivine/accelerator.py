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


#: Which devices each execution provider runs on (Olive's table, for inferring a missing device).
PROVIDER_DEVICES: dict[str, tuple[str, ...]] = {
    "CPUExecutionProvider": ("cpu",),
    "OpenVINOExecutionProvider": ("cpu", "gpu", "npu"),
    "QNNExecutionProvider": ("gpu", "npu"),
    "DmlExecutionProvider": ("gpu", "npu"),
    "VitisAIExecutionProvider": ("npu",),
    "CUDAExecutionProvider": ("gpu",),
    "ROCMExecutionProvider": ("gpu",),
    "MIGraphXExecutionProvider": ("gpu",),
    "TensorrtExecutionProvider": ("gpu",),
    "NvTensorRTRTXExecutionProvider": ("gpu",),
    "JsExecutionProvider": ("gpu",),
    "WebGpuExecutionProvider": ("gpu",),
    "CoreMLExecutionProvider": ("gpu", "npu"),
}


def infer_device(providers: list[str]) -> str | None:
    """The device a list of execution providers names, as Olive infers it; ``None`` if unclear.

    No providers, or the CPU provider alone: ``cpu``; QNN alone: ``npu``; otherwise the one
    device that every provider other than the CPU one maps to alone.
    """
    if not providers or providers == ["CPUExecutionProvider"]:
        return "cpu"
    if providers == ["QNNExecutionProvider"]:
        return "npu"
    found: list[str] = []
    for name in providers:
        if name == "CPUExecutionProvider":
            continue
        devices = PROVIDER_DEVICES.get(name, ())
        if len(devices) != 1:
            return None
        if devices[0] not in found:
            found.append(devices[0])
    return found[0] if len(found) == 1 else None


@attrs.frozen
class AcceleratorConfig:
    """One device and the execution providers to use on it, as in Olive's ``accelerators``.

    Without ``device`` the device is inferred from ``execution_providers`` as Olive does
    (``CUDAExecutionProvider`` alone means ``gpu``); where the providers do not name one
    device, ``device`` must be given, unless no pass of the workflow needs an execution
    provider (Olive then runs on ``cpu``: see :meth:`resolved`).
    """

    device: Device = attrs.field(default=None, metadata={
        "help": "cpu, gpu or npu; when left out, inferred from execution_providers as in Olive"})
    execution_providers: list[str] = attrs.field(
        factory=list, validator=_check_providers,
        metadata={"help": "ONNX Runtime execution providers, best first"})

    def __attrs_post_init__(self) -> None:
        if self.device is None:
            object.__setattr__(self, "device", infer_device(self.execution_providers))

    def resolved(self, needs_provider: bool = True) -> Accelerator:
        """The target this config names: its device and first execution provider.

        Where the providers name no one device: a ValueError when ``needs_provider`` (a pass
        or metric of the workflow runs on ONNX Runtime), else Olive's fallback, the CPU.
        """
        if self.device is None:
            if needs_provider:
                raise ValueError(f"device: the execution providers {self.execution_providers} do "
                                 "not name one device; give device (cpu, gpu or npu)")
            return Accelerator(device="cpu", execution_provider=DEFAULT_PROVIDER["cpu"])
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
