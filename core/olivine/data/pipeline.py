"""A data config, resolved into its four components and run: Olive's data container semantics.

``load_dataset`` -> ``pre_process_data`` -> ``dataloader`` gives the batches a pass
or a metric reads; ``post_process_data`` turns model outputs into predictions.

Each section (``load_dataset_config``, ...) names its component in ``type`` (the
container's default when absent) and its parameters in ``params`` or, as Olive also
accepts, flat beside ``type``. Parameters are checked against the component's
signature: an unknown one (for a component without ``**kwargs``) or a missing required
one is an error naming the key. ``HuggingfaceContainer`` fills ``model_name``, ``task``
and ``trust_remote_code`` from the input model when the config leaves them empty, and
picks its pre- and post-processing by ``task``, as Olive does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from olivine.data.registry import (
    DATA_CONTAINER,
    DATALOADER,
    KINDS,
    LOAD_DATASET,
    POST_PROCESS_DATA,
    PRE_PROCESS_DATA,
    SECTIONS,
    DataContainerSpec,
    Registry,
)
from olivine.errors import UsageError, did_you_mean

#: the plugin that provides a component olivine's core does not, for "pip install ..." hints
PROVIDERS = {
    "huggingface_pre_process": "olivine-transformers",
    "tokenizer_pre_process": "olivine-transformers",
    "ner_huggingface_preprocess": "olivine-transformers",
    "text_generation_huggingface_pre_process": "olivine-transformers",
    "text_classification_post_process": "olivine-transformers",
    "ner_post_process": "olivine-transformers",
    "text_generation_post_process": "olivine-transformers",
    "speech_transcription_pre_process": "olivine-transformers",
    "audio_classification_pre_process": "olivine-transformers",
    "vision_vqa_pre_process": "olivine-transformers",
    "vision_vqa_dataloader": "olivine-transformers",
    "transformers_dummy_dataset": "olivine-transformers",
    "transformers_prompt_dummy_dataset": "olivine-transformers",
    "transformers_token_dummy_dataset": "olivine-transformers",
    "transformersdummydatacontainer": "olivine-transformers",
    "transformerspromptdummydatacontainer": "olivine-transformers",
    "transformerstokendummydatacontainer": "olivine-transformers",
}
#: parameters olivine passes itself to components that declare them (not user options)
INJECTED = ("script_dir",)


@attrs.frozen
class Component:
    """One resolved component: its kind, name, function and parameters."""

    kind: str
    name: str
    function: Callable[..., Any]
    params: dict[str, Any]

    def __call__(self, *args: Any) -> Any:
        """Call the function with ``args`` (the dataset or output) and the parameters."""
        return self.function(*args, **self.params)


@attrs.frozen
class ResolvedData:
    """A data config with every component resolved: what a pass or a metric runs."""

    name: str
    container: str
    components: dict[str, Component]

    def load_dataset(self) -> Any:
        """The dataset ``load_dataset`` gives."""
        return self._call(LOAD_DATASET)

    def pre_process(self, dataset: Any) -> Any:
        """The dataset after ``pre_process_data``."""
        return self._call(PRE_PROCESS_DATA, dataset)

    def dataloader(self, dataset: Any) -> Any:
        """The batches of ``dataset``."""
        return self._call(DATALOADER, dataset)

    def post_process(self, output: Any) -> Any:
        """Model outputs turned into predictions."""
        return self._call(POST_PROCESS_DATA, output)

    def create_dataloader(self) -> Any:
        """load_dataset -> pre_process -> dataloader."""
        return self.dataloader(self.pre_process(self.load_dataset()))

    def is_default(self, kind: str) -> bool:
        """True when ``kind`` is Olive's pass-through default (nothing happens in that step)."""
        from olivine.data import builtin

        return self.components[kind].function in (builtin.pre_process, builtin.post_process)

    def _call(self, kind: str, *args: Any) -> Any:
        comp = self.components[kind]
        try:
            return comp(*args)
        except UsageError as exc:
            text = str(exc)
            if text.startswith("data config "):
                raise
            sep = " " if text.startswith("yields ") else ": "
            raise UsageError(f"data config {self.name!r}{sep}{text}") from None
        except Exception as exc:
            raise UsageError(f"data config {self.name!r}: {kind} component {comp.name!r} "
                             f"failed: {type(exc).__name__}: {exc}") from exc


def section_options(dc: Any, kind: str) -> tuple[str | None, dict[str, Any]]:
    """``(type, params)`` of one section: ``params`` given nested or flat (Olive's two forms)."""
    raw = getattr(dc, SECTIONS[kind], None) or {}
    if not isinstance(raw, Mapping):
        raise UsageError(f"data config {dc.name!r}: {SECTIONS[kind]} must be an object")
    ctype = raw.get("type")
    flat = {k: v for k, v in raw.items() if k not in ("type", "params")}
    nested = raw.get("params")
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise UsageError(f"data config {dc.name!r}: {SECTIONS[kind]}.params must be an object")
        if flat:
            raise UsageError(f"data config {dc.name!r}: {SECTIONS[kind]} gives "
                             f"{', '.join(sorted(flat))} beside params; put every option in one "
                             "place")
        flat = dict(nested)
    return (str(ctype) if ctype else None), flat


def container_spec(dc: Any) -> DataContainerSpec:
    """The container a data config names; :class:`UsageError` listing the known ones."""
    spec = Registry.get_container(getattr(dc, "type", None))
    if spec is None:
        name = str(dc.type)
        names = Registry.names(DATA_CONTAINER)
        hint = PROVIDERS.get(name.lower())
        raise UsageError(f"data config {dc.name!r}: unknown type {name!r}"
                         f"{did_you_mean(name, names)}; known: {', '.join(names)}"
                         + (f" (the {hint} plugin provides it: pip install {hint})" if hint else ""))
    return spec


def model_info(model: Any) -> dict[str, Any]:
    """What Olive fills into data configs from the input model: model_name, task, trust_remote_code."""
    if model is None:
        return {}
    attrs_ = model.attrs_dict() if hasattr(model, "attrs_dict") else {}
    info: dict[str, Any] = {}
    if getattr(model, "kind", None) == "hf":
        info["model_name"] = model.path
        info["task"] = model.task
        info["trust_remote_code"] = model.load_options().get("trust_remote_code")
    else:
        folder = Path(model.path)
        folder = folder.parent if folder.is_file() else folder
        tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")
        if any((folder / n).exists() for n in tokenizer_files):
            info["model_name"] = str(folder)
        elif attrs_.get("hf_model_path"):
            info["model_name"] = attrs_["hf_model_path"]
        if attrs_.get("task"):
            info["task"] = attrs_["task"]
    return info


def _accepts(function: Callable[..., Any]) -> tuple[set[str], set[str], bool]:
    """(parameter names, required names, takes **kwargs) of a component, first argument kept."""
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return set(), set(), True
    names, required, var_kw = set(), set(), False
    for p in params.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is not p.VAR_POSITIONAL:
            names.add(p.name)
            if p.default is p.empty:
                required.add(p.name)
    return names, required, var_kw


def check_params(dc_name: str, kind: str, name: str, function: Callable[..., Any],
                 params: dict[str, Any]) -> list[str]:
    """Problems of ``params`` against ``function``'s signature (each names the key)."""
    names, required, var_kw = _accepts(function)
    if kind != LOAD_DATASET:  # the first argument is the dataset or the model output
        first = next(iter(inspect.signature(function).parameters), None)
        names.discard(first or "")
        required.discard(first or "")
    where = f"data_configs.{dc_name}.{SECTIONS[kind]}"
    problems = []
    if not var_kw:
        allowed = sorted(names - set(INJECTED))
        for key in params:
            if key not in names or key in INJECTED:
                problems.append(f"{where}.{key}: {kind} component {name!r} takes no option {key!r}"
                                f"{did_you_mean(key, allowed)}; it takes "
                                f"{', '.join(allowed) or 'no options'}")
    for key in sorted(required - set(params) - set(INJECTED)):
        problems.append(f"{where}: {kind} component {name!r} needs {key!r}")
    return problems


def component_names(dc: Any, spec: DataContainerSpec,
                    fill: Mapping[str, Any] | None = None) -> dict[str, tuple[str, dict[str, Any]]]:
    """kind -> (component name, params) after the container's defaults and the model's fill."""
    chosen = {kind: section_options(dc, kind) for kind in KINDS}
    if fill:
        for kind in KINDS:
            keys = spec.fill.get(SECTIONS[kind], ())
            params = chosen[kind][1]
            for key in keys:
                if not params.get(key) and fill.get(key) is not None:
                    params[key] = fill[key]
    task = next((p.get("task") for _, p in chosen.values() if p.get("task")), None)
    defaults = spec.defaults_for(str(task) if task else None)
    return {kind: (ctype or defaults[kind], params) for kind, (ctype, params) in chosen.items()}


def _unknown(dc_name: str, kind: str, name: str) -> str:
    hint = PROVIDERS.get(name.lower())
    names = Registry.names(kind)
    return (f"data_configs.{dc_name}.{SECTIONS[kind]}.type: unknown {kind} component {name!r}"
            f"{did_you_mean(name, names)}"
            + (f"; the {hint} plugin provides it (pip install {hint})" if hint
               else f"; known: {', '.join(names)} (or register it in the user_script)"))


def validate(dc: Any) -> list[str]:
    """Problems of a data config found without running anything (user scripts are not loaded).

    Component names a user script may define, and their options, are checked at run time.
    """
    try:
        spec = container_spec(dc)
        chosen = component_names(dc, spec)
    except UsageError as exc:
        return [str(exc)]
    problems = []
    for kind, (name, params) in chosen.items():
        function = Registry.get_component(kind, name)
        if function is None:
            # a user script may define it; a plugin's component is needed only by the passes
            # and metrics that run this step (they report it then, with the plugin to install)
            if not dc.user_script and name.lower() not in PROVIDERS:
                problems.append(_unknown(dc.name, kind, name))
            continue
        filled = set(spec.fill.get(SECTIONS[kind], ()))
        problems += [p for p in check_params(dc.name, kind, name, function, params)
                     if not any(f"component {name!r} needs {k!r}" in p for k in filled)]
    return problems


def resolve(dc: Any, model: Any = None, kinds: tuple[str, ...] = KINDS) -> ResolvedData:
    """Load the user script, pick and check each component; :class:`UsageError` on problems.

    ``kinds`` limits the resolution to some components (a consumer that pre-processes
    rows itself resolves only ``load_dataset``).
    """
    if dc.user_script:
        from olivine.userscript import load_module

        load_module(str(dc.user_script), dc.script_dir, f"data_configs.{dc.name}.user_script")
    spec = container_spec(dc)
    chosen = component_names(dc, spec, model_info(model))
    components: dict[str, Component] = {}
    problems: list[str] = []
    for kind, (name, params) in chosen.items():
        if kind not in kinds:
            continue
        function = Registry.get_component(kind, name)
        if function is None:
            problems.append(_unknown(dc.name, kind, name))
            continue
        names, _, var_kw = _accepts(function)
        params = {k: v for k, v in params.items()
                  if var_kw or k in names or k not in spec.fill.get(SECTIONS[kind], ())}
        problems += check_params(dc.name, kind, name, function, params)
        for key in INJECTED:
            if key in names and key not in params and getattr(dc, key, None):
                params[key] = getattr(dc, key)
        components[kind] = Component(kind, name, function, params)
    if problems:
        raise UsageError("; ".join(problems))
    return ResolvedData(dc.name, spec.name, components)
