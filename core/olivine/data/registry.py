"""Data components and containers by name: Olive's ``Registry``, filled from three places.

* olivine's own components (:mod:`olivine.data.builtin`), with Olive's names;
* plugins, through the ``register_data_components`` hook (the components that need
  transformers or datasets live in plugins);
* user scripts: ``from olive.data.registry import Registry`` and
  ``@Registry.register_dataset()`` & co. inside a data config's ``user_script`` (see
  :mod:`olivine.data.olive_compat`). A user script's name overrides a built-in one, as
  in Olive.

Names are case-insensitive. A component is a function: ``load_dataset(**params)``,
``pre_process(dataset, **params)``, ``post_process(output, **params)``,
``dataloader(dataset, **params)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from olivine.errors import PluginError

log = logging.getLogger("olivine.data")

LOAD_DATASET = "load_dataset"
PRE_PROCESS_DATA = "pre_process_data"
POST_PROCESS_DATA = "post_process_data"
DATALOADER = "dataloader"
DATA_CONTAINER = "data_container"
#: component kinds, in pipeline order
KINDS = (LOAD_DATASET, PRE_PROCESS_DATA, POST_PROCESS_DATA, DATALOADER)
#: the data config section of each kind
SECTIONS = {LOAD_DATASET: "load_dataset_config", PRE_PROCESS_DATA: "pre_process_data_config",
            POST_PROCESS_DATA: "post_process_data_config", DATALOADER: "dataloader_config"}
#: Olive's default component of each kind (what ``DataContainer`` uses)
DEFAULTS = {LOAD_DATASET: "default_load_dataset", PRE_PROCESS_DATA: "default_pre_process_data",
            POST_PROCESS_DATA: "default_post_process_data", DATALOADER: "default_dataloader"}


@attrs.frozen
class DataContainerSpec:
    """A data container type: its default component per kind, and task-specific overrides.

    ``fill`` names, per data config section, the parameters taken from the input model
    when the config leaves them empty (Olive fills ``model_name`` and ``task`` this way).
    """

    name: str
    components: Mapping[str, str] = attrs.field(factory=dict)
    task_components: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    fill: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)

    def defaults_for(self, task: str | None) -> dict[str, str]:
        """The component name per kind for ``task`` (``-with-past`` ignored, as in Olive)."""
        out = {**DEFAULTS, **self.components}
        if task:
            out.update(self.task_components.get(task.replace("-with-past", ""), {}))
        return out


def _kind(sub_type: Any) -> str:
    value = str(getattr(sub_type, "value", sub_type))
    if value not in (*KINDS, DATA_CONTAINER):
        raise ValueError(f"unknown data component type {value!r}; expected one of "
                         f"{', '.join((*KINDS, DATA_CONTAINER))}")
    return value


class Registry:
    """Olive's data registry: the decorators user scripts call, and look-ups by name."""

    #: user-script registrations (they override the others)
    _user: ClassVar[dict[str, dict[str, Any]]] = {k: {} for k in (*KINDS, DATA_CONTAINER)}
    #: plugin registrations: kind -> name -> (object, plugin)
    _plugins: ClassVar[dict[str, dict[str, tuple[Any, str]]]] = {
        k: {} for k in (*KINDS, DATA_CONTAINER)}

    @classmethod
    def register(cls, sub_type: Any, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator: register a component (or a container) under ``name`` or its own name."""
        kind = _kind(sub_type)

        def decorator(component: Any) -> Any:
            key = str(name or getattr(component, "__name__", "")).lower()
            obj = component
            if kind == DATA_CONTAINER and not isinstance(component, DataContainerSpec):
                obj = _spec_from_class(name or component.__name__, component)
            cls._user[kind][key] = obj
            return component

        return decorator

    @classmethod
    def register_dataset(cls, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator: a ``load_dataset`` component."""
        return cls.register(LOAD_DATASET, name)

    @classmethod
    def register_pre_process(cls, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator: a ``pre_process_data`` component."""
        return cls.register(PRE_PROCESS_DATA, name)

    @classmethod
    def register_post_process(cls, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator: a ``post_process_data`` component."""
        return cls.register(POST_PROCESS_DATA, name)

    @classmethod
    def register_dataloader(cls, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator: a ``dataloader`` component."""
        return cls.register(DATALOADER, name)

    @classmethod
    def register_default_dataset(cls) -> Callable[[Any], Any]:
        """Decorator: replace ``default_load_dataset``."""
        return cls.register(LOAD_DATASET, DEFAULTS[LOAD_DATASET])

    @classmethod
    def register_default_pre_process(cls) -> Callable[[Any], Any]:
        """Decorator: replace ``default_pre_process_data``."""
        return cls.register(PRE_PROCESS_DATA, DEFAULTS[PRE_PROCESS_DATA])

    @classmethod
    def register_default_post_process(cls) -> Callable[[Any], Any]:
        """Decorator: replace ``default_post_process_data``."""
        return cls.register(POST_PROCESS_DATA, DEFAULTS[POST_PROCESS_DATA])

    @classmethod
    def register_default_dataloader(cls) -> Callable[[Any], Any]:
        """Decorator: replace ``default_dataloader``."""
        return cls.register(DATALOADER, DEFAULTS[DATALOADER])

    # -- look-ups ---------------------------------------------------------------------
    @classmethod
    def get_component(cls, kind: str, name: str) -> Any:
        """The component ``name`` of ``kind``, or ``None``."""
        kind = _kind(kind)
        key = name.lower()
        if key in cls._user[kind]:
            return cls._user[kind][key]
        _load_plugins()
        if key in cls._plugins[kind]:
            return cls._plugins[kind][key][0]
        found = _builtins()[kind].get(key)
        if found is None and kind != DATA_CONTAINER:
            from olivine.data.olive_compat import real_olive_component

            found = real_olive_component(kind, name)
        return found

    @classmethod
    def get(cls, sub_type: Any, name: str) -> Any:
        """Olive's spelling of :meth:`get_component`."""
        return cls.get_component(_kind(sub_type), name)

    @classmethod
    def get_load_dataset_component(cls, name: str) -> Any:
        """A ``load_dataset`` component."""
        return cls.get_component(LOAD_DATASET, name)

    @classmethod
    def get_pre_process_component(cls, name: str) -> Any:
        """A ``pre_process_data`` component."""
        return cls.get_component(PRE_PROCESS_DATA, name)

    @classmethod
    def get_post_process_component(cls, name: str) -> Any:
        """A ``post_process_data`` component."""
        return cls.get_component(POST_PROCESS_DATA, name)

    @classmethod
    def get_dataloader_component(cls, name: str) -> Any:
        """A ``dataloader`` component."""
        return cls.get_component(DATALOADER, name)

    @classmethod
    def get_container(cls, name: str | None) -> DataContainerSpec | None:
        """The container spec ``name`` (``DataContainer`` when ``None``), or ``None``."""
        return cls.get_component(DATA_CONTAINER, name or "DataContainer")

    @classmethod
    def names(cls, kind: str) -> list[str]:
        """Every name of ``kind`` known now (containers in their registered spelling)."""
        kind = _kind(kind)
        _load_plugins()
        found: dict[str, str] = {}
        for table in (_builtins()[kind], {k: v for k, (v, _) in cls._plugins[kind].items()},
                      cls._user[kind]):
            for key, obj in table.items():
                found[key] = obj.name if isinstance(obj, DataContainerSpec) else key
        return sorted(found.values(), key=str.lower)

    @classmethod
    def owner(cls, kind: str, name: str) -> str:
        """Who provides ``name``: ``user script``, a plugin's name, or ``olivine``."""
        key = name.lower()
        if key in cls._user[_kind(kind)]:
            return "user script"
        entry = cls._plugins[kind].get(key)
        return entry[1] if entry else "olivine"

    @classmethod
    def clear_user_components(cls) -> None:
        """Forget what user scripts registered (between runs and tests)."""
        for table in cls._user.values():
            table.clear()


def _spec_from_class(name: str, klass: Any) -> DataContainerSpec:
    """A container spec from an Olive-style container class (``default_components_type``)."""
    comps = dict(getattr(klass, "default_components_type", {}) or {})
    tasks = dict(getattr(klass, "task_type_components_map", {}) or {})
    return DataContainerSpec(name, {str(k): str(v) for k, v in comps.items()},
                             {str(t): {str(k): str(v) for k, v in m.items()}
                              for t, m in tasks.items()})


_BUILTINS: dict[str, dict[str, Any]] | None = None
_PLUGINS_LOADED = False


def _builtins() -> dict[str, dict[str, Any]]:
    global _BUILTINS
    if _BUILTINS is None:
        from olivine.data import builtin

        _BUILTINS = builtin.table()
    return _BUILTINS


def check_plugin_component(kind: str, obj: Any, name: str | None,
                           plugin: str) -> tuple[tuple[str, str], Any]:
    """Validate one ``register(kind, obj, name)`` call of the ``register_data_components`` hook.

    Returns the registry key ``(kind, lower-case name)`` and the object to store (a
    container class becomes a :class:`DataContainerSpec`).
    """
    try:
        kind = _kind(kind)
    except ValueError as exc:
        raise PluginError(f"plugin {plugin!r}: {exc}") from None
    if kind == DATA_CONTAINER and not isinstance(obj, DataContainerSpec):
        obj = _spec_from_class(name or obj.__name__, obj)
    label = obj.name if isinstance(obj, DataContainerSpec) else (name or getattr(obj, "__name__", ""))
    if not label:
        raise PluginError(f"plugin {plugin!r} registered a data {kind} without a name: {obj!r}")
    if not isinstance(obj, DataContainerSpec) and not callable(obj):
        raise PluginError(f"plugin {plugin!r}: data {kind} {label!r} is not callable")
    if label.lower() in _builtins()[kind]:
        raise PluginError(f"plugin {plugin!r} registered the data {kind} {label!r}, which olivine "
                          "itself provides")
    return (kind, label.lower()), obj


def install_plugin_components(table: Mapping[tuple[str, str], tuple[Any, str]]) -> None:
    """Make ``table`` (the plugin host's data components) what look-ups find from plugins."""
    global _PLUGINS_LOADED
    for kind in Registry._plugins:
        Registry._plugins[kind].clear()
    for (kind, key), entry in table.items():
        Registry._plugins[kind][key] = entry
    _PLUGINS_LOADED = True


def _load_plugins() -> None:
    """Make sure the installed plugins' data components are registered (once per process)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from olivine.plugins import get_plugin_host

    get_plugin_host()
