"""olivine: hardware-aware model optimization for ONNX Runtime, built from plugins.

This module is the declared API of plugins (API version :data:`API_VERSION`): every name
in ``__all__`` below, and the public submodules in :data:`PUBLIC_MODULES`, each with its
own ``__all__``. Everything else in the ``olivine`` package is private and may change
in any release. Names are re-exported lazily so that ``import olivine`` stays instant:
nothing heavy (torch, onnxruntime, transformers) is imported by the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: The version of the plugin API: the minor number grows when names are added, the major
#: one when a name is removed or changes meaning (after a deprecation period). Plugins
#: state the range they support as a module attribute, ``olivine_api = ">=1,<2"``.
API_VERSION = "1.4"
__api_version__ = API_VERSION

#: The submodules plugins may import from, besides ``olivine`` itself (each declares ``__all__``).
PUBLIC_MODULES = ("olivine.data", "olivine.ortsession", "olivine.onnxsave", "olivine.ortshapes",
                  "olivine.commands", "olivine.config", "olivine.options", "olivine.testing")

_EXPORTS = {
    # passes
    "Pass": "olivine.passes",
    "PassContext": "olivine.passes",
    "NoConfig": "olivine.passes",
    "option": "olivine.options",
    "option_info": "olivine.options",
    "OptionInfo": "olivine.options",
    # evaluators
    "Evaluator": "olivine.evaluation",
    "EvalContext": "olivine.evaluation",
    "MetricConfig": "olivine.evaluation",
    "SubMetric": "olivine.evaluation",
    # systems
    "System": "olivine.systems.base",
    "SystemConfig": "olivine.systems.base",
    "StepRequest": "olivine.systems.base",
    "StepOutcome": "olivine.systems.base",
    "CandidateRequest": "olivine.systems.base",
    "ProgressSink": "olivine.systems.base",
    "CandidateRunner": "olivine.systems.base",
    "LocalSystem": "olivine.systems.builtin",
    "LocalSystemConfig": "olivine.systems.builtin",
    "run_candidate": "olivine.search.driver",
    # model handles
    "ModelHandle": "olivine.models",
    "HfModel": "olivine.models",
    "OnnxModel": "olivine.models",
    "PyTorchModel": "olivine.models",
    "AdapterModel": "olivine.models",
    "CompositeModel": "olivine.models",
    "handle_from_dict": "olivine.models",
    "freeze_mapping": "olivine.models",
    "HUB_ID": "olivine.config.inputmodel",
    "external_data_locations": "olivine.onnxfile",
    # accelerators
    "Accelerator": "olivine.accelerator",
    "DEFAULT_PROVIDER": "olivine.accelerator",
    "EXECUTION_PROVIDERS": "olivine.accelerator",
    "PROVIDER_SHORT_NAMES": "olivine.accelerator",
    # plugins
    "hookimpl": "olivine.hookspecs",
    "get_plugin_host": "olivine.plugins",
    # running
    "run": "olivine.api",
    "validate": "olivine.api",
    "RunResult": "olivine.engine",
    "Cache": "olivine.cache",
    "check_output_dir": "olivine.output",
    # user scripts and paths
    "load_function": "olivine.userscript",
    "load_module": "olivine.userscript",
    "call_object": "olivine.userscript",
    "resolve_data_file": "olivine.userscript",
    "component_problem": "olivine.safepath",
    # errors
    "OlivineError": "olivine.errors",
    "UsageError": "olivine.errors",
    "ConfigError": "olivine.errors",
    "PassError": "olivine.errors",
    "PluginError": "olivine.errors",
    "did_you_mean": "olivine.errors",
}

__all__ = [
    "API_VERSION",
    "DEFAULT_PROVIDER",
    "EXECUTION_PROVIDERS",
    "HUB_ID",
    "PROVIDER_SHORT_NAMES",
    "PUBLIC_MODULES",
    "Accelerator",
    "AdapterModel",
    "Cache",
    "CandidateRequest",
    "CandidateRunner",
    "CompositeModel",
    "ConfigError",
    "EvalContext",
    "Evaluator",
    "HfModel",
    "LocalSystem",
    "LocalSystemConfig",
    "MetricConfig",
    "ModelHandle",
    "NoConfig",
    "OlivineError",
    "OnnxModel",
    "OptionInfo",
    "Pass",
    "PassContext",
    "PassError",
    "PluginError",
    "ProgressSink",
    "PyTorchModel",
    "RunResult",
    "StepOutcome",
    "StepRequest",
    "SubMetric",
    "System",
    "SystemConfig",
    "UsageError",
    "__api_version__",
    "__version__",
    "call_object",
    "check_output_dir",
    "component_problem",
    "did_you_mean",
    "external_data_locations",
    "freeze_mapping",
    "get_plugin_host",
    "handle_from_dict",
    "hookimpl",
    "load_function",
    "load_module",
    "option",
    "option_info",
    "resolve_data_file",
    "run",
    "run_candidate",
    "validate",
]

if TYPE_CHECKING:
    from olivine.accelerator import DEFAULT_PROVIDER, EXECUTION_PROVIDERS, PROVIDER_SHORT_NAMES, Accelerator
    from olivine.api import run, validate
    from olivine.cache import Cache
    from olivine.config.inputmodel import HUB_ID
    from olivine.engine import RunResult
    from olivine.errors import ConfigError, OlivineError, PassError, PluginError, UsageError, did_you_mean
    from olivine.evaluation import EvalContext, Evaluator, MetricConfig, SubMetric
    from olivine.hookspecs import hookimpl
    from olivine.models import (
        AdapterModel,
        CompositeModel,
        HfModel,
        ModelHandle,
        OnnxModel,
        PyTorchModel,
        freeze_mapping,
        handle_from_dict,
    )
    from olivine.onnxfile import external_data_locations
    from olivine.options import OptionInfo, option, option_info
    from olivine.output import check_output_dir
    from olivine.passes import NoConfig, Pass, PassContext
    from olivine.plugins import get_plugin_host
    from olivine.safepath import component_problem
    from olivine.search.driver import run_candidate
    from olivine.systems.base import (
        CandidateRequest,
        CandidateRunner,
        ProgressSink,
        StepOutcome,
        StepRequest,
        System,
        SystemConfig,
    )
    from olivine.systems.builtin import LocalSystem, LocalSystemConfig
    from olivine.userscript import call_object, load_function, load_module, resolve_data_file


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'olivine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
