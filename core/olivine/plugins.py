"""Loading plugins and the registries they fill.

:func:`get_plugin_host` loads every module registered under the ``olivine``
entry-point group (honouring ``OLIVINE_LOAD_PLUGINS`` and
``OLIVINE_DISABLE_PLUGINS``), checks their hooks against the specs, and collects
what they register into name-keyed registries. Two plugins that register the
same name is an error that names both.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from olivine import hookspecs
from olivine.errors import PluginError, did_you_mean
from olivine.evaluation import Evaluator
from olivine.passes import Pass
from olivine.systems.base import System

GROUP = "olivine"
HOST_DISTRIBUTION = "olivine"
LOAD_ENV = "OLIVINE_LOAD_PLUGINS"
DISABLE_ENV = "OLIVINE_DISABLE_PLUGINS"

T = TypeVar("T")


log = logging.getLogger("olivine.plugins")


@attrs.frozen
class SkippedPlugin:
    """An installed plugin that was not loaded because it does not support this host's API."""

    name: str
    distribution: str
    version: str
    reason: str


@attrs.frozen
class PluginInfo:
    """A loaded plugin: its entry-point name, distribution and version."""

    name: str
    distribution: str
    version: str
    module: str
    builtin: bool


class Registry(Generic[T]):
    """Classes registered under case-insensitive names, remembering which plugin gave each."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, tuple[str, T, str]] = {}  # lower name -> (name, cls, plugin)
        self._aliases: set[str] = set()
        #: plugins left out at load (their names are mentioned when a name is unknown)
        self.skipped: list[SkippedPlugin] = []

    def add(self, name: str, item: T, plugin: str, alias: bool = False) -> None:
        """Register ``item`` under ``name``; a clash with another plugin raises PluginError."""
        if not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.what} without a name: {item!r}")
        key = name.lower()
        if key in self._items:
            _, other, owner = self._items[key]
            if other is item:
                return
            raise PluginError(
                f"{self.what} name {name!r} is registered twice: by plugin {owner!r} "
                f"({_qualname(other)}) and by plugin {plugin!r} ({_qualname(item)}); "
                f"uninstall one, or disable one with {DISABLE_ENV}={owner} or {DISABLE_ENV}={plugin}"
            )
        self._items[key] = (name, item, plugin)
        if alias:
            self._aliases.add(key)

    def get(self, name: str) -> T | None:
        """The item registered as ``name`` (any case), or ``None``."""
        found = self._items.get(name.lower())
        return found[1] if found else None

    def owner(self, name: str) -> str | None:
        """The plugin that registered ``name``."""
        found = self._items.get(name.lower())
        return found[2] if found else None

    def canonical(self, name: str) -> str | None:
        """The spelling ``name`` was registered with."""
        found = self._items.get(name.lower())
        return found[0] if found else None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(n for n, _, _ in self._items.values())

    def items(self) -> Iterator[tuple[str, T, str]]:
        """``(name, item, plugin)`` for each registration."""
        return iter(sorted(self._items.values(), key=lambda t: t[0].lower()))

    def unknown(self, name: str) -> str:
        """A message for a name that is not registered, listing the installed ones."""
        installed = ", ".join(self.primary_names()) or "none"
        text = f"unknown {self.what} {name!r}{did_you_mean(name, self.names())}; installed: {installed}"
        if self.skipped:
            text += ("; not loaded because they do not support this olivine's API: "
                     + ", ".join(f"{p.name} ({p.distribution} {p.version})" for p in self.skipped))
        return text

    def owned_by(self, plugin: str) -> list[str]:
        """The names (without aliases) that ``plugin`` registered."""
        return sorted(n for k, (n, _, o) in self._items.items() if o == plugin and k not in self._aliases)

    def primary_names(self) -> list[str]:
        """Names under which a class is registered by its own ``name`` (no aliases)."""
        return sorted(n for k, (n, _, _) in self._items.items() if k not in self._aliases)


@attrs.define
class CommandSpec:
    """A CLI sub-command contributed by a plugin."""

    name: str
    help: str
    configure: Callable[[Any], None]
    handler: Callable[[Any], int]
    plugin: str


class PluginHost:
    """The loaded plugins and what they registered: one typed facade over the hook relay."""

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo],
                 skipped: list[SkippedPlugin] | None = None) -> None:
        self.pm = pm
        self.plugins = plugins
        #: installed plugins left out because they state an API range this host is not in
        self.skipped: list[SkippedPlugin] = list(skipped or [])
        self.passes: Registry[type[Pass]] = Registry("pass type")
        self.evaluators: Registry[type[Evaluator]] = Registry("metric type")
        self.systems: Registry[type[System]] = Registry("system type")
        for registry in (self.passes, self.evaluators, self.systems):
            registry.skipped = self.skipped
        self.commands: dict[str, CommandSpec] = {}
        #: model kind -> (handle class, plugin), from register_model_kinds
        self.model_kinds: dict[str, tuple[type, str]] = {}
        #: Olive input_model type (lower case) -> kind, for kinds that read an input_model
        self.input_types: dict[str, str] = {}
        #: (kind, name) -> (component or container spec, plugin), from register_data_components
        self.data_components: dict[tuple[str, str], tuple[Any, str]] = {}
        self._collect()

    # -- registration -----------------------------------------------------------------
    def _plugin_of(self, impl: pluggy.HookImpl) -> str:
        return impl.plugin_name

    def _collect(self) -> None:
        for impl in self.pm.hook.register_passes.get_hookimpls():
            owner = self._plugin_of(impl)
            impl.function(register=lambda cls, o=owner: self._add_named(self.passes, cls, o))
        for impl in self.pm.hook.register_systems.get_hookimpls():
            owner = self._plugin_of(impl)
            impl.function(register=lambda cls, o=owner: self._add_named(self.systems, cls, o))
        for impl in self.pm.hook.register_evaluators.get_hookimpls():
            owner = self._plugin_of(impl)

            def add_evaluator(cls: type[Evaluator], o: str = owner) -> None:
                for metric_type in getattr(cls, "metric_types", ()):
                    self.evaluators.add(metric_type, cls, o)

            impl.function(register=add_evaluator)
        for impl in self.pm.hook.register_commands.get_hookimpls():
            owner = self._plugin_of(impl)
            impl.function(register=lambda *a, o=owner, **k: self._add_command(o, *a, **k))
        for impl in self.pm.hook.register_model_kinds.get_hookimpls():
            owner = self._plugin_of(impl)
            impl.function(register=lambda cls, o=owner: self._add_model_kind(o, cls))
        for impl in self.pm.hook.register_data_components.get_hookimpls():
            owner = self._plugin_of(impl)
            impl.function(register=lambda *a, o=owner: self._add_data_component(o, *a))
        from olivine.data.registry import install_plugin_components

        install_plugin_components(self.data_components)

    def _add_data_component(self, owner: str, kind: str, obj: Any, name: str | None = None) -> None:
        from olivine.data.registry import check_plugin_component

        key, obj = check_plugin_component(kind, obj, name, owner)
        other = self.data_components.get(key)
        if other is not None:
            raise PluginError(f"data {key[0]} {key[1]!r} is registered twice: by plugin "
                              f"{other[1]!r} and by plugin {owner!r}")
        self.data_components[key] = (obj, owner)

    def _add_model_kind(self, owner: str, cls: Any) -> None:
        from olivine.models import register_kind

        kind = getattr(cls, "kind", None)
        other = self.model_kinds.get(kind) if isinstance(kind, str) else None
        if other is not None and other[0] is not cls:
            raise PluginError(f"model kind {kind!r} is registered twice: by plugin {other[1]!r} "
                              f"and by plugin {owner!r}")
        try:
            register_kind(cls)
        except ValueError as exc:
            raise PluginError(f"plugin {owner!r} registered a bad model kind: {exc}") from exc
        self.model_kinds[cls.kind] = (cls, owner)
        for name in getattr(cls, "input_types", ()):
            clash = self.input_types.get(name.lower())
            if clash is not None and clash != cls.kind:
                raise PluginError(f"input_model type {name!r} is claimed by model kinds "
                                  f"{clash!r} and {cls.kind!r} (plugin {owner!r})")
            if not callable(getattr(cls, "from_input_config", None)):
                raise PluginError(f"plugin {owner!r}: model kind {cls.kind!r} lists input_types "
                                  "but has no from_input_config(config, base_dir)")
            self.input_types[name.lower()] = cls.kind

    def _add_named(self, registry: Registry[Any], cls: type, owner: str) -> None:
        registry.add(getattr(cls, "name", ""), cls, owner)
        _warn_legacy_options(cls, owner)
        for alias in getattr(cls, "aliases", ()):
            registry.add(alias, cls, owner, alias=True)

    def _add_command(self, owner: str, name: str, help: str,
                     configure: Callable[[Any], None], handler: Callable[[Any], int]) -> None:
        if name in self.commands:
            other = self.commands[name].plugin
            raise PluginError(f"command {name!r} is registered twice: by plugin {other!r} and by "
                              f"plugin {owner!r}")
        self.commands[name] = CommandSpec(name, help, configure, handler, owner)

    # -- events -------------------------------------------------------------------------
    @property
    def events(self) -> Any:
        """The hook relay for event hooks (``host.events.step_started(step=...)``)."""
        return self.pm.hook

    # -- lookups ------------------------------------------------------------------------
    def plugin(self, name: str) -> PluginInfo | None:
        """The loaded plugin called ``name``."""
        return next((p for p in self.plugins if p.name == name), None)

    def plugin_version(self, name: str) -> str:
        """The version of the distribution that provides plugin ``name``."""
        info = self.plugin(name)
        return info.version if info else "unknown"

    def describe(self) -> list[dict[str, Any]]:
        """Each plugin with its version and what it registers (``olivine plugins --json``)."""
        out = []
        for info in self.plugins:
            hooks = sorted(h.name for h in self.pm.get_hookcallers(self.pm.get_plugin(info.name)) or [])
            out.append({
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                "builtin": info.builtin,
                "hooks": hooks,
                "passes": self.passes.owned_by(info.name),
                "metric_types": self.evaluators.owned_by(info.name),
                "systems": self.systems.owned_by(info.name),
                "commands": sorted(c.name for c in self.commands.values() if c.plugin == info.name),
                "model_kinds": sorted(k for k, (_, o) in self.model_kinds.items() if o == info.name),
                "data_components": sorted(f"{k}:{n}" for (k, n), (_, o) in
                                          self.data_components.items() if o == info.name),
            })
        return out


def _warn_legacy_options(cls: type, owner: str) -> None:
    from olivine.options import legacy_fields

    legacy = legacy_fields(getattr(cls, "Config", None))
    if legacy:
        warnings.warn(f"plugin {owner!r}: {_qualname(cls)}.Config declares options with API 1.0's "
                      f"metadata={{'help': ...}} dicts ({', '.join(legacy)}); use "
                      "metadata=olivine.option(help=...) (the dict form is read until API 2)",
                      DeprecationWarning, stacklevel=2)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = text.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a version (numbers joined by dots)")
    return tuple(int(p) for p in parts)


_OPS: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
}


def api_supported(spec: str, version: str) -> bool:
    """Whether API ``version`` satisfies ``spec`` (``">=1,<2"``; ValueError when malformed)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{spec!r} is not a version range such as '>=1,<2'")
    have = _version_tuple(version)
    for clause in spec.split(","):
        clause = clause.strip()
        op = next((o for o in (">=", "<=", "==", "!=", ">", "<") if clause.startswith(o)), None)
        if op is None:
            where = "" if clause == spec.strip() else f" in {spec!r}"
            raise ValueError(f"{clause!r}{where} starts with none of >=, <=, ==, !=, >, <")
        want = _version_tuple(clause[len(op):])
        width = max(len(have), len(want))
        if not _OPS[op](have + (0,) * (width - len(have)), want + (0,) * (width - len(want))):
            return False
    return True


def _api_problem(module: Any) -> str | None:
    """Why ``module`` (a plugin) cannot be loaded by this host's API, or None."""
    from olivine import API_VERSION

    spec = getattr(module, "olivine_api", None)
    if spec is None:
        return None
    try:
        ok = api_supported(spec, API_VERSION)
    except ValueError as exc:
        return f"its olivine_api {spec!r} cannot be read: {exc}"
    if ok:
        return None
    return f"it supports olivine API {spec}, and this olivine offers API {API_VERSION}"


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


def _matches(ep: EntryPoint, names: list[str]) -> bool:
    dist = ep.dist.name if ep.dist else ""
    wanted = {n.lower().replace("_", "-") for n in names}
    return ep.name.lower() in wanted or dist.lower().replace("_", "-") in wanted


def get_plugin_manager(extra: list[object] | None = None) -> pluggy.PluginManager:
    """A plugin manager with the hook specs and the selected entry-point plugins loaded."""
    return _load(extra)[0]


def _load(extra: list[object] | None) -> tuple[pluggy.PluginManager, list[PluginInfo],
                                              list[SkippedPlugin]]:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    allow = _env_list(LOAD_ENV)
    block = _env_list(DISABLE_ENV) or []
    eps = list(entry_points(group=GROUP))
    known = sorted({(ep.dist.name if ep.dist else ep.name) for ep in eps} | {ep.name for ep in eps})
    for name in [*(allow or []), *block]:
        if not any(_matches(ep, [name]) for ep in eps):
            var = LOAD_ENV if allow and name in allow else DISABLE_ENV
            raise PluginError(f"{var} names {name!r}, which is not an installed olivine plugin"
                              f"{did_you_mean(name, known)}; installed: {', '.join(known)}")
    infos: list[PluginInfo] = []
    skipped: list[SkippedPlugin] = []
    for ep in sorted(eps, key=lambda e: (e.dist.name if e.dist else "", e.name)):
        dist = ep.dist.name if ep.dist else "?"
        builtin = dist.lower() == HOST_DISTRIBUTION
        if _matches(ep, block):
            continue
        if allow is not None and not builtin and not _matches(ep, allow):
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must say who it is
            raise PluginError(
                f"plugin {ep.name!r} (distribution {dist}) failed to load: {type(exc).__name__}: "
                f"{exc}; disable it with {DISABLE_ENV}={ep.name}") from exc
        version = ep.dist.version if ep.dist else "unknown"
        problem = _api_problem(module)
        if problem is not None:
            reason = (f"plugin {ep.name!r} ({dist} {version}) is not loaded: {problem}; install a "
                      f"version of {dist} made for this olivine, or disable it with "
                      f"{DISABLE_ENV}={ep.name}")
            log.warning("%s", reason)
            skipped.append(SkippedPlugin(ep.name, dist, version, reason))
            continue
        pm.register(module, name=ep.name)
        infos.append(PluginInfo(ep.name, dist, version, ep.value, builtin))
    for obj in extra or []:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        pm.register(obj, name=name)
        infos.append(PluginInfo(name, "(in-process)", "0", name, False))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name!r} implements a hook olivine does not have: {exc}") from exc
    return pm, infos, skipped


_HOST: PluginHost | None = None


def get_plugin_host(extra: list[object] | None = None, fresh: bool = False) -> PluginHost:
    """The process-wide :class:`PluginHost` (loaded once; ``fresh`` or ``extra`` reload)."""
    global _HOST
    if _HOST is None or fresh or extra:
        pm, infos, skipped = _load(extra)
        host = PluginHost(pm, infos, skipped)
        if extra:
            return host
        _HOST = host
    return _HOST


@contextmanager
def extra_plugins(objects: list[object]) -> Iterator[PluginHost]:
    """While it lasts, :func:`get_plugin_host` returns a host that also loaded ``objects``.

    For tests (``olivine.testing.using_plugin``): an in-process plugin is seen by the
    engine and by steps that run in this process.
    """
    global _HOST
    saved = _HOST
    pm, infos, skipped = _load(objects)
    _HOST = PluginHost(pm, infos, skipped)
    try:
        yield _HOST
    finally:
        _HOST = saved
        if saved is not None:
            from olivine.data.registry import install_plugin_components

            install_plugin_components(saved.data_components)
