"""olivine: hardware-aware model optimization for ONNX Runtime, built from plugins.

The public API is re-exported here lazily so that ``import olivine`` stays
instant: nothing heavy (torch, onnxruntime, transformers) is imported by the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Pass": "olivine.passes",
    "PassContext": "olivine.passes",
    "NoConfig": "olivine.passes",
    "Evaluator": "olivine.evaluation",
    "EvalContext": "olivine.evaluation",
    "MetricConfig": "olivine.evaluation",
    "System": "olivine.systems.base",
    "SystemConfig": "olivine.systems.base",
    "ModelHandle": "olivine.models",
    "HfModel": "olivine.models",
    "OnnxModel": "olivine.models",
    "AdapterModel": "olivine.models",
    "CompositeModel": "olivine.models",
    "Accelerator": "olivine.accelerator",
    "hookimpl": "olivine.hookspecs",
    "run": "olivine.api",
    "validate": "olivine.api",
    "RunResult": "olivine.engine",
    "OlivineError": "olivine.errors",
    "ConfigError": "olivine.errors",
    "PassError": "olivine.errors",
}

__all__ = [
    "Accelerator", "AdapterModel", "CompositeModel", "ConfigError", "EvalContext", "Evaluator",
    "HfModel", "MetricConfig", "ModelHandle", "NoConfig", "OlivineError", "OnnxModel", "Pass",
    "PassContext", "PassError", "RunResult", "System", "SystemConfig", "__version__", "hookimpl",
    "run", "validate",
]

if TYPE_CHECKING:
    from olivine.accelerator import Accelerator
    from olivine.api import run, validate
    from olivine.engine import RunResult
    from olivine.errors import ConfigError, OlivineError, PassError
    from olivine.evaluation import EvalContext, Evaluator, MetricConfig
    from olivine.hookspecs import hookimpl
    from olivine.models import AdapterModel, CompositeModel, HfModel, ModelHandle, OnnxModel
    from olivine.passes import NoConfig, Pass, PassContext
    from olivine.systems.base import System, SystemConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'olivine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
