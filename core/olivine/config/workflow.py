"""Validate a workflow document against the installed plugins.

Accepts Olive's current form and its older form (``PyTorchModel`` with
``config.hf_config``, passes with a nested ``config``, ``search_algorithm``) and
reports every problem at once, each with its path in the user's document.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from olivine.accelerator import Accelerator, AcceleratorConfig
from olivine.config import typed
from olivine.config.evaluators import evaluators_section, metrics_section
from olivine.config.evaluators import undefined as _undefined
from olivine.config.inputmodel import HUB_ID, InputModel, input_model, resolve_path
from olivine.config.loader import check_depth
from olivine.config.sections import (
    ENGINE_KEYS,
    DataConfig,
    EngineConfig,
    SearchStrategy,
)
from olivine.config.typed import Problems, is_missing, show, structure
from olivine.errors import ConfigError, did_you_mean
from olivine.evaluation import EvaluatorConfig
from olivine.plugins import PluginHost
from olivine.safepath import component_problem, path_problem
from olivine.search.space import Dimension, check_values, split_search


@functools.cache
def known_providers() -> dict[str, str]:
    """Lower-case pass type -> the plugin distribution of this repository that provides it.

    Data (``providers.json``, generated from ``docs/compat/passes-*.yaml`` by
    ``scripts/gen_providers.py``), for "which plugin would provide it".
    """
    text = (Path(__file__).resolve().parents[1] / "providers.json").read_text()
    return dict(json.loads(text)["passes"])

__all__ = ["HUB_ID", "InputModel", "PassEntry", "SystemEntry", "WorkflowConfig", "validate_workflow"]

TOP_KEYS = ("input_model", "systems", "data_configs", "metrics", "evaluators", "passes",
            "engine", "workflow_id", "$schema")
DEFAULT_SYSTEM = "local_system"
#: names the cache folder when neither ``--cache_dir`` nor the config does
CACHE_DIR_ENV = "OLIVINE_CACHE_DIR"


@attrs.frozen
class SystemEntry:
    """A validated ``systems.NAME`` entry."""

    name: str
    type: str
    config: Any


@attrs.frozen
class PassEntry:
    """A validated ``passes.NAME`` entry: the canonical pass type and its structured config."""

    name: str
    type: str
    config: Any
    disable_search: bool = False
    #: searched options and their values (empty without a search strategy)
    search: dict[str, list[Any]] = attrs.field(factory=dict)
    #: files the step reads that no option names (what a user script opens): part of its key
    input_files: tuple[str, ...] = ()


@attrs.frozen
class WorkflowConfig:
    """A complete, validated workflow."""

    input_model: InputModel
    systems: dict[str, SystemEntry]
    data_configs: dict[str, DataConfig]
    evaluators: dict[str, EvaluatorConfig]
    passes: list[PassEntry]
    engine: EngineConfig
    workflow_id: str = "default_workflow"
    source: str | None = None
    base_dir: str = "."

    raw: dict[str, Any] = attrs.field(factory=dict, eq=False)

    def dimensions(self) -> list[Dimension]:
        """Every searched option of every pass, in workflow order."""
        return [Dimension(p.name, k, tuple(v)) for p in self.passes for k, v in p.search.items()]

    def host_system(self) -> SystemEntry:
        """The system that runs the passes."""
        return self.systems[self.engine.host or DEFAULT_SYSTEM]

    def target_system(self) -> SystemEntry:
        """The system the output model is for (its accelerator is the target)."""
        return self.systems[self.engine.target or self.engine.host or DEFAULT_SYSTEM]

    def to_dict(self) -> dict[str, Any]:
        """The workflow in olivine's normalized (current Olive) form."""
        im = self.input_model.handle.to_dict()
        settings = (im.pop("attributes", None) or {}).get("inference_settings")
        if settings:
            im["inference_settings"] = settings
        return {
            "workflow_id": self.workflow_id,
            "input_model": {"type": self.input_model.type, **im},
            "systems": {n: {"type": s.type, **typed.unstructure(s.config)} for n, s in self.systems.items()},
            "data_configs": [typed.unstructure(d) for d in self.data_configs.values()],
            "evaluators": {n: typed.unstructure(e) for n, e in self.evaluators.items()},
            "passes": {p.name: {"type": p.type, **typed.unstructure(p.config),
                                **{k: list(v) for k, v in p.search.items()},
                                **({"input_files": list(p.input_files)} if p.input_files else {})}
                       for p in self.passes},
            "engine": typed.unstructure(self.engine),
        }


def _section(raw: Mapping[str, Any], key: str, problems: Problems, kind: type = dict) -> Any:
    value = raw.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        want = "an object" if kind is dict else "a list"
        problems.add(key, f"expected {want}, got {show(value)}")
        return kind()
    return value


def _split_config(entry: Mapping[str, Any], path: str, problems: Problems,
                  own_keys: tuple[str, ...]) -> dict[str, Any] | None:
    """Options of a pass/system entry: flat (current form) or under ``config`` (older form)."""
    flat = {k: v for k, v in entry.items() if k not in own_keys and k != "config"}
    nested = entry.get("config")
    if nested is None:
        return flat
    if not isinstance(nested, Mapping):
        problems.add(f"{path}.config", f"expected an object, got {show(nested)}")
        return None
    if flat:
        problems.add(path, f"options given both flat ({', '.join(sorted(flat))}) and under "
                           f"'config'; use one place")
        return None
    return dict(nested)


def _folder_problem(value: str) -> str | None:
    """Why folder ``value`` cannot be created (a name too long, a file on its way), or ``None``."""
    if not value.strip():
        return "must name a folder; an empty value would mean the working directory itself"
    problem = path_problem(value)
    if problem is not None:
        return problem
    p = Path(value).expanduser().absolute()
    for parent in p.parents:
        try:
            if parent.exists():
                return None if parent.is_dir() else \
                    f"{value!r} cannot be created: {str(parent)!r} is a file, not a folder"
        except OSError as exc:
            return f"{value!r} cannot be used: {exc.strerror or exc}"
    return None


def _system_entry(name: str, entry: Any, path: str, host: PluginHost,
                  problems: Problems) -> SystemEntry | None:
    """One system object (a ``systems`` entry or an inline ``host``/``target``), validated."""
    if not isinstance(entry, Mapping):
        problems.add(path, f"expected an object with 'type', got {show(entry)}")
        return None
    stype = entry.get("type")
    cls = host.systems.get(str(stype)) if stype else None
    if cls is None:
        problems.add(f"{path}.type", "required key is missing" if not stype
                     else host.systems.unknown(str(stype)))
        return None
    options = _split_config(entry, path, problems, ("type",))
    if options is None:
        return None
    cfg_path = f"{path}.config" if "config" in entry else path
    cfg = structure(options, cls.Config, cfg_path, problems)
    if is_missing(cfg):
        return None
    return SystemEntry(name, host.systems.canonical(str(stype)) or str(stype), cfg)


def _systems(raw: Mapping[str, Any], host: PluginHost, problems: Problems) -> dict[str, SystemEntry]:
    out: dict[str, SystemEntry] = {}
    for name, entry in raw.items():
        system = _system_entry(name, entry, f"systems.{name}", host, problems)
        if system is not None:
            out[name] = system
    if not raw:
        default_cls = host.systems.get("LocalSystem")
        if default_cls is not None:
            out[DEFAULT_SYSTEM] = SystemEntry(
                DEFAULT_SYSTEM, "LocalSystem",
                default_cls.Config(accelerators=[AcceleratorConfig("cpu", ["CPUExecutionProvider"])]))
        else:
            installed = ", ".join(host.systems.primary_names()) or "none"
            problems.add("systems", "no system is defined and the built-in LocalSystem is not loaded "
                         "(is olivine-systems in OLIVINE_DISABLE_PLUGINS?); define one under "
                         f"systems (installed system types: {installed}) or load olivine-systems")
    return out


def _data_configs(raw: Any, problems: Problems) -> dict[str, DataConfig]:
    out: dict[str, DataConfig] = {}
    entries = list(raw.items()) if isinstance(raw, Mapping) else list(enumerate(raw))
    for key, entry in entries:
        path = f"data_configs[{key}]" if isinstance(key, int) else f"data_configs.{key}"
        if isinstance(entry, Mapping) and isinstance(key, str) and "name" not in entry:
            entry = {"name": key, **entry}
        if not isinstance(entry, Mapping):
            problems.add(path, f"expected an object, got {show(entry)}")
            continue
        dc = structure(entry, DataConfig, path, problems)
        if is_missing(dc):
            continue
        if dc.name in out:
            problems.add(f"{path}.name", f"data config {dc.name!r} is defined twice")
        from olivine.data.pipeline import validate as validate_data

        for problem in validate_data(dc):
            if problem.startswith("data_configs."):
                problems.add("", problem)
            else:
                problems.add(path, problem)
        out[dc.name] = dc
    return out


def _passes(raw: Mapping[str, Any], host: PluginHost, data: Mapping[str, DataConfig],
            problems: Problems, searching: bool, base_dir: Path) -> list[PassEntry]:
    out: list[PassEntry] = []
    for name, entry in raw.items():
        path = f"passes.{name}"
        bad_name = component_problem(name)
        if bad_name is not None:  # the name becomes a log file and folder name
            problems.add(path, f"pass name {name!r} {bad_name} (it names the step's log file)")
            continue
        if not isinstance(entry, Mapping):
            problems.add(path, f"expected an object with 'type', got {show(entry)}")
            continue
        ptype = entry.get("type")
        if not ptype:
            problems.add(f"{path}.type", "required key is missing (a pass type such as "
                         + ", ".join(host.passes.primary_names()[:3]) + ")")
            continue
        cls = host.passes.get(str(ptype))
        if cls is None:
            msg = host.passes.unknown(str(ptype))
            provider = known_providers().get(str(ptype).lower())
            installed = {p.distribution for p in host.plugins}
            if provider and provider not in installed:  # never name a plugin that is there
                msg += f"; {ptype} is provided by the {provider} plugin, which is not installed"
            problems.add(f"{path}.type", msg)
            continue
        disable_search = entry.get("disable_search", False)
        if not isinstance(disable_search, bool):
            problems.add(f"{path}.disable_search", f"expected bool, got {show(disable_search)}")
        input_files = _input_files(entry.get("input_files"), f"{path}.input_files", base_dir,
                                   problems)
        options = _split_config(entry, path, problems, ("type", "disable_search", "input_files"))
        if options is None:
            continue
        cfg_path = f"{path}.config" if "config" in entry else path
        fixed, space = split_search(options, cls.Config, cfg_path, problems,
                                    searching and not disable_search)
        cfg = check_values(fixed, space, cls.Config, cfg_path, problems)
        if is_missing(cfg):
            continue
        for field in attrs.fields(cls.Config):
            ref = getattr(cfg, field.name)
            if field.metadata.get("data_config") and ref is not None and ref not in data:
                problems.add(f"{cfg_path}.{field.name}", _undefined("data config", ref, data))
        out.append(PassEntry(name, host.passes.canonical(str(ptype)) or str(ptype), cfg,
                             bool(disable_search), space, input_files))
    return out


def _input_files(value: Any, path: str, base_dir: Path, problems: Problems) -> tuple[str, ...]:
    """A pass entry's ``input_files``: existing files or folders (relative: working directory,
    then the config's folder)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.add(path, f"expected a list of file or folder paths, got {show(value)}")
        return ()
    for i, item in enumerate(value):
        if resolve_path(item, base_dir) is None:
            problems.add(f"{path}[{i}]", f"no such file or folder: {item!r} (relative paths are "
                         "taken from the working directory, then from the config's folder)")
    return tuple(value)


def _inline_systems(raw: Mapping[str, Any], systems: dict[str, SystemEntry], host: PluginHost,
                    problems: Problems) -> Mapping[str, Any]:
    """Olive's inline form: ``host``/``target`` written as a system object, not a name.

    Each inline object is validated like a ``systems`` entry (problems under
    ``engine.target...``), added to ``systems`` under its key's name (``target``, or
    ``target_1``, ... when taken) and replaced by that name in the returned copy of ``raw``.
    """
    block = raw.get("engine")
    places = [("engine", block), (None, raw)] if isinstance(block, Mapping) else [(None, raw)]
    inline = [(where, key) for where, section in places for key in ("host", "target")
              if isinstance(section.get(key), Mapping)]
    if not inline:
        return raw
    out = dict(raw)
    if isinstance(block, Mapping):
        out["engine"] = dict(block)
    for where, key in inline:
        section = out["engine"] if where else out
        name, n = key, 0
        while name in systems:
            n += 1
            name = f"{key}_{n}"
        path = f"engine.{key}" if where else key
        system = _system_entry(name, section[key], path, host, problems)
        if system is None:
            section[key] = None
            continue
        systems[name] = system
        section[key] = name
    return out


def _engine(raw: Mapping[str, Any], problems: Problems) -> EngineConfig:
    block = raw.get("engine") or {}
    if not isinstance(block, Mapping):
        problems.add("engine", f"expected an object, got {show(block)}")
        block = {}
    merged: dict[str, Any] = {}
    for key in ENGINE_KEYS:
        if key in raw and key in block:
            problems.add(key, f"given both at the top level and in engine; keep one (engine.{key})")
        if key in raw:
            merged[key] = raw[key]
    merged.update(block)
    strategy = merged.get("search_strategy")
    if isinstance(strategy, Mapping):
        strategy = dict(strategy)
        algo_cfg = strategy.get("search_algorithm_config")
        if isinstance(algo_cfg, Mapping):
            if "num_samples" in algo_cfg and "max_samples" not in strategy:
                strategy["max_samples"] = algo_cfg["num_samples"]
            if "seed" in algo_cfg and "seed" not in strategy:
                strategy["seed"] = algo_cfg["seed"]
        merged["search_strategy"] = strategy
    if "cache_dir" not in merged and os.environ.get(CACHE_DIR_ENV):
        merged["cache_dir"] = os.environ[CACHE_DIR_ENV]  # the default when nothing names one
    prefix = "engine" if block else ""
    engine = structure(merged, EngineConfig, prefix, problems)
    if is_missing(engine):
        return EngineConfig()
    from olivine.sharedcache import local_cache_dir

    if local_cache_dir(engine) and "cache_dir" not in raw and "cache_dir" not in block:
        engine = attrs.evolve(engine, cache_dir=local_cache_dir(engine))  # Olive's cache_config
    for key in ("output_dir", "cache_dir"):
        problem = _folder_problem(getattr(engine, key))
        if problem is not None:
            where = f"engine.{key}" if key in block else key
            if key == "cache_dir" and key not in raw and key not in block:
                where = f"{key} (from ${CACHE_DIR_ENV})"
            problems.add(where, problem)
    strategy_cfg = engine.search_strategy
    if isinstance(strategy_cfg, SearchStrategy) and strategy_cfg.sampler == "exhaustive":
        strategy_cfg = attrs.evolve(strategy_cfg, sampler="sequential")
        engine = attrs.evolve(engine, search_strategy=strategy_cfg)
    if engine.search_strategy is True:
        engine = attrs.evolve(engine, search_strategy=SearchStrategy())
    return engine


def _check_chain(model: InputModel | None, passes: list[PassEntry], host: PluginHost,
                 problems: Problems) -> None:
    if model is None:
        return
    kind, source = model.handle.kind, "input_model"
    for entry in passes:
        cls = host.passes.get(entry.type)
        if cls is None:
            return
        if kind == "composite" and kind not in cls.accepts:  # runs once per component
            source = f"passes.{entry.name}"
            continue
        if kind not in cls.accepts:
            problems.add(f"passes.{entry.name}",
                         f"pass {entry.type} takes {' or '.join(cls.accepts)} models, but gets an "
                         f"{kind} model from {source}")
            return
        kind, source = cls.produces_for.get(kind, cls.produces), f"passes.{entry.name}"


def validate_workflow(raw: Mapping[str, Any], host: PluginHost, source: str | None = None,
                      base_dir: Path | None = None) -> WorkflowConfig:
    """Validate ``raw`` (a parsed workflow file); raise ConfigError listing every problem."""
    check_depth(raw, source or "workflow config")
    problems = Problems()
    base = base_dir or Path.cwd()
    for key in raw:
        if key not in TOP_KEYS and key not in ENGINE_KEYS:
            problems.add(str(key), f"unknown key{did_you_mean(str(key), [*TOP_KEYS, *ENGINE_KEYS])}")
    model = input_model(raw.get("input_model"), base, problems)
    systems = _systems(_section(raw, "systems", problems), host, problems)
    data = _data_configs(raw.get("data_configs") or [], problems) \
        if isinstance(raw.get("data_configs") or [], list | dict) else {}
    # relative data files resolve from the working directory, then from the config's folder
    data = {n: d if d.script_dir else attrs.evolve(d, script_dir=str(base)) for n, d in data.items()}
    if not isinstance(raw.get("data_configs") or [], list | dict):
        problems.add("data_configs", f"expected a list, got {show(raw.get('data_configs'))}")
    metrics = metrics_section(raw.get("metrics"), host, data, problems)
    evaluators = evaluators_section(_section(raw, "evaluators", problems), host, data, problems,
                                    metrics)
    declared = dict(systems)
    engine = _engine(_inline_systems(raw, systems, host, problems), problems)
    searching = isinstance(engine.search_strategy, SearchStrategy)
    passes = _passes(_section(raw, "passes", problems), host, data, problems, searching, base)
    eprefix = "engine." if isinstance(raw.get("engine"), Mapping) else ""
    if len(declared) == 1 and DEFAULT_SYSTEM not in declared:
        only = next(iter(declared))  # one system defined: it is the host and the target
        engine = attrs.evolve(engine, host=engine.host or only, target=engine.target or only)
    elif declared and DEFAULT_SYSTEM not in declared and not (engine.host and engine.target):
        problems.add(f"{eprefix}target", f"several systems are defined ({', '.join(systems)}); "
                     "name the host and the target")
    for key in ("host", "target"):
        ref = getattr(engine, key)
        if ref is not None and ref not in systems and not any(
                p.startswith(f"systems.{ref}") for p in problems.items):
            problems.add(f"{eprefix}{key}", _undefined("system", ref, systems))
    if engine.evaluator is not None and engine.evaluator not in evaluators and not any(
            p.startswith(f"evaluators.{engine.evaluator}") for p in problems.items):
        problems.add(f"{eprefix}evaluator", _undefined("evaluator", engine.evaluator, evaluators))
    _check_chain(model, passes, host, problems)
    if any(p.search for p in passes) and engine.evaluator is None:
        problems.add(f"{eprefix}evaluator", "a search needs an evaluator to rank its candidates; "
                     "name one of evaluators here")
    workflow_id = raw.get("workflow_id", "default_workflow")
    if not isinstance(workflow_id, str):
        problems.add("workflow_id", f"expected string, got {show(workflow_id)}")
    if not problems and systems:
        target = systems[engine.target or engine.host or DEFAULT_SYSTEM]
        accels = target.config.accelerators
        if len(accels) > 1:
            problems.add(f"systems.{target.name}.accelerators",
                         f"one accelerator per run is supported, got {len(accels)}; "
                         "write one workflow per device")
        needs = any(getattr(host.passes.get(e.type), "needs_execution_provider", True)
                    for e in passes) or bool(engine.evaluator and model is not None
                                             and model.handle.kind == "onnx"
                                             and engine.evaluate_input_model)
        try:
            accel = (accels[0] if accels else AcceleratorConfig()).resolved(needs)
        except ValueError as exc:
            problems.add(f"systems.{target.name}.accelerators[0].device",
                         str(exc).removeprefix("device: "))
            accel = Accelerator()
        for i, entry in enumerate(passes):
            cls = host.passes.get(entry.type)
            if cls is None:
                continue
            known = model.handle if (i == 0 and model is not None) else None
            if known is not None and "model" in inspect.signature(cls.check).parameters:
                found = cls.check(entry.config, accel, model=known)
            else:
                found = cls.check(entry.config, accel)
            for msg in found:
                problems.add(f"passes.{entry.name}", msg)
    if problems or model is None:
        raise ConfigError(problems.items, source)
    return WorkflowConfig(model, systems, data, evaluators, passes, engine,
                          str(workflow_id), source, str(base), dict(raw))
