"""User scripts written for Olive load unchanged: a stand-in ``olive`` package, only when needed.

A recipe's ``user_script`` starts with ``from olive.data.registry import Registry`` (or
``from olive.workflows import run``). olivine installs no package named ``olive``.
While olivine loads a user script (a data config's ``user_script``, a model's
``model_script``), :func:`active` puts a meta-path finder first on ``sys.meta_path``
that answers for these modules:

``olive``, ``olive.data``, ``olive.data.registry``, ``olive.data.constants``,
``olive.workflows``, ``olive.constants``, ``olive.model``

``Registry`` is olivine's (:class:`olivine.data.registry.Registry`), ``run`` is
:func:`olivine.run`, ``OliveModelHandler`` is a class for type hints only. The finder
is installed only when no real ``olive`` is importable: with Olive installed, the
script imports the real Olive, and olivine then finds components the script
registered in Olive's own registry (:func:`real_olive_component`). The finder is
removed when the script has loaded; the stand-in modules the script imported stay in
``sys.modules`` (the script's functions may import them again when called). Any other
``olive.*`` import fails with an error naming the module. ``olivine script FILE`` runs a
driver script (``import olive.workflows; olive.workflows.run(config)``) with the finder
active for the whole script.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

#: the modules the stand-in provides
MODULES = ("olive", "olive.data", "olive.data.registry", "olive.data.constants",
           "olive.workflows", "olive.constants", "olive.model")
SHIM_MARK = "__olivine_stand_in__"


class DataComponentType(str, enum.Enum):
    """Olive's data component kinds."""

    LOAD_DATASET = "load_dataset"
    PRE_PROCESS_DATA = "pre_process_data"
    POST_PROCESS_DATA = "post_process_data"
    DATALOADER = "dataloader"


class DataContainerType(str, enum.Enum):
    """Olive's data container kind."""

    DATA_CONTAINER = "data_container"


class Framework(str, enum.Enum):
    """Olive's model frameworks (``olive.constants.Framework``)."""

    ONNX = "ONNX"
    PYTORCH = "PyTorch"
    QNN = "QNN"
    TENSORFLOW = "TensorFlow"
    OPENVINO = "OpenVINO"


class OliveModelHandler:
    """Stand-in for Olive's model handler base class: for type hints in user scripts only."""


class WorkflowOutput:
    """What ``olive.workflows.run`` returns, over olivine's :class:`olivine.engine.RunResult`.

    Olive's ``has_output_model()`` and ``get_output_models()`` work; every other attribute
    is the run result's (``output_dir``, ``output_model``, ``metrics``, ``report``).
    """

    def __init__(self, result: Any) -> None:
        self.result = result

    def has_output_model(self) -> bool:
        """True when the run produced an output model."""
        return self.result.output_model is not None

    def get_output_models(self) -> list[Any]:
        """The output model handles (one at most in olivine)."""
        return [self.result.output_model] if self.result.output_model is not None else []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)


def _run(run_config: Any, list_required_packages: bool = False, package_config: Any = None,
         tempdir: Any = None) -> WorkflowOutput:
    """``olive.workflows.run`` (and ``olive.run``): runs the workflow with olivine."""
    from olivine.api import run

    if list_required_packages or package_config is not None or tempdir is not None:
        raise TypeError("olivine's stand-in for olive.workflows.run takes only the run config "
                        "(list_required_packages, package_config and tempdir are Olive's own)")
    return WorkflowOutput(run(run_config))


def _build(name: str) -> types.ModuleType:
    from olivine.data.registry import Registry

    module = types.ModuleType(name)
    setattr(module, SHIM_MARK, True)
    module.__path__ = [] if name in ("olive", "olive.data") else None  # type: ignore[assignment]
    if module.__path__ is None:
        del module.__path__
    content: dict[str, dict[str, Any]] = {
        "olive": {"run": _run, "__version__": "0.13.0+olivine"},
        "olive.data.registry": {"Registry": Registry},
        "olive.data.constants": {"DataComponentType": DataComponentType,
                                 "DataContainerType": DataContainerType},
        "olive.workflows": {"run": _run},
        "olive.constants": {"Framework": Framework},
        "olive.model": {"OliveModelHandler": OliveModelHandler},
    }
    for key, value in content.get(name, {}).items():
        setattr(module, key, value)
    return module


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _build(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class OliveFinder(importlib.abc.MetaPathFinder):
    """Answers imports of the stand-in ``olive`` modules; refuses other ``olive.*`` modules."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        """A spec for the stand-in modules; ``ImportError`` for other ``olive.*`` names."""
        if fullname in MODULES:
            return importlib.machinery.ModuleSpec(
                fullname, _Loader(), is_package=fullname in ("olive", "olive.data"))
        if fullname.startswith("olive."):
            raise ImportError(f"olivine runs Olive user scripts without Olive: it provides "
                              f"{', '.join(MODULES)}, not {fullname!r}", name=fullname)
        return None


def real_olive_installed() -> bool:
    """True when a real ``olive`` package (not the stand-in) is importable."""
    loaded = sys.modules.get("olive")
    if loaded is not None:
        return not getattr(loaded, SHIM_MARK, False)
    return importlib.util.find_spec("olive") is not None


@contextlib.contextmanager
def active() -> Iterator[None]:
    """Within the block, ``import olive...`` gives the stand-in unless Olive is installed."""
    if real_olive_installed():
        yield
        return
    finder = OliveFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)


def real_olive_component(kind: str, name: str) -> Any:
    """A component registered in a real Olive's ``Registry`` (imported by a user script), or None."""
    module = sys.modules.get("olive.data.registry")
    if module is None or getattr(module, SHIM_MARK, False):
        return None
    table = getattr(getattr(module, "Registry", None), "_REGISTRY", {})
    return table.get(kind, {}).get(name.lower()) if isinstance(table, dict) else None
