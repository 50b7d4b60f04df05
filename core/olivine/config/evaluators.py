"""The ``evaluators`` section and Olive's top-level ``metrics`` list, validated.

A metric is written inline in an evaluator's ``metrics`` list, or once in the top-level
``metrics`` list and named from any evaluator (``"metrics": ["speech_accuracy"]``), the form
of Olive's speech recipes. A name that no top-level metric defines is a config error; a
defined metric that no evaluator names is only validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from olivine.config.sections import DataConfig
from olivine.config.typed import Problems, is_missing, show, structure
from olivine.errors import did_you_mean
from olivine.evaluation import EvaluatorConfig, MetricConfig
from olivine.plugins import PluginHost

__all__ = ["METRIC_BACKENDS", "evaluators_section", "metrics_section", "undefined"]

def metrics_section(raw: Any, host: PluginHost, data: Mapping[str, DataConfig],
                    problems: Problems) -> dict[str, MetricConfig | None]:
    """The top-level ``metrics`` list: each entry a complete metric with a unique ``name``
    (``None`` for a named entry with problems, so that naming it adds none)."""
    out: dict[str, MetricConfig | None] = {}
    if raw is None:
        return out
    if not isinstance(raw, list):
        problems.add("metrics", f"expected a list of metrics, got {show(raw)}")
        return out
    for i, entry in enumerate(raw):
        path = f"metrics[{i}]"
        if not isinstance(entry, Mapping):
            problems.add(path, f"expected a metric object with 'name' and 'type', got {show(entry)}")
            continue
        metric = structure(entry, MetricConfig, path, problems)
        if is_missing(metric):
            if isinstance(entry.get("name"), str):
                out.setdefault(entry["name"], None)
            continue
        if metric.name in out:
            problems.add(f"{path}.name", f"metric {metric.name!r} is defined twice; names must "
                         "be unique")
            continue
        check_metric(metric, path, host, data, problems)
        out[metric.name] = metric
    return out


def evaluators_section(raw: Mapping[str, Any], host: PluginHost, data: Mapping[str, DataConfig],
                       problems: Problems,
                       defined: Mapping[str, MetricConfig | None] | None = None,
                       ) -> dict[str, EvaluatorConfig]:
    """The ``evaluators`` section; a metric given as a string names one of ``defined`` (the
    top-level ``metrics``)."""
    defined = defined or {}
    out: dict[str, EvaluatorConfig] = {}
    for name, entry in raw.items():
        path = f"evaluators.{name}"
        if not isinstance(entry, Mapping):
            problems.add(path, f"expected an object with 'metrics', got {show(entry)}")
            continue
        if entry.get("type") is not None:  # Olive's form: type: LMEvaluator, its options beside
            entry = _typed_evaluator(name, entry, host, path, problems)
            if entry is None:
                continue
        listed = entry.get("metrics")
        named: dict[int, MetricConfig] = {}
        if isinstance(listed, list) and any(isinstance(m, str) for m in listed):
            bad = False
            for i, ref in enumerate(listed):
                if not isinstance(ref, str):
                    continue
                found = defined.get(ref)
                if found is not None:
                    named[i] = found
                elif ref in defined:  # defined with problems, reported where it is
                    bad = True
                else:
                    bad = True
                    problems.add(f"{path}.metrics[{i}]", undefined("metric", ref, defined)
                                 + " (the top-level 'metrics' list)")
            if bad:
                continue
            entry = {**entry, "metrics": [m for m in listed if not isinstance(m, str)]}
        ev = structure(entry, EvaluatorConfig, path, problems)
        if is_missing(ev):
            continue
        inline = iter(ev.metrics)
        metrics = [named[i] if i in named else next(inline)
                   for i in range(len(ev.metrics) + len(named))]
        for i, metric in enumerate(metrics):
            if i not in named:  # a named one was checked where it is defined
                check_metric(metric, f"{path}.metrics[{i}]", host, data, problems)
        names = [m.name for m in metrics]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.add(f"{path}.metrics", f"metric name {dup!r} is used twice; names must be unique")
        out[name] = EvaluatorConfig(metrics=metrics)
    return out


#: Olive's metric backends (the names of the sub-metrics of accuracy depend on it).
METRIC_BACKENDS = ("torch_metrics", "huggingface_metrics")
#: Keys of an Olive evaluator entry that are not its type's options.
_EVALUATOR_FIELDS = ("name", "type", "type_args", "metrics")


def _typed_evaluator(name: str, entry: Mapping[str, Any], host: PluginHost, path: str,
                     problems: Problems) -> dict[str, Any] | None:
    """``{"metrics": [...]}`` for an entry written as ``type: X`` with X's options beside it (or
    under ``type_args``), as Olive's LMEvaluator and MTEBEvaluator are."""
    kind = entry["type"]
    cls = host.evaluators.get(kind) if isinstance(kind, str) else None
    if cls is None or not getattr(cls, "evaluator_type", False):
        types = sorted(n for n, c, _ in host.evaluators.items()
                       if getattr(c, "evaluator_type", False) and getattr(c, "name", "") == n)
        problems.add(f"{path}.type", (f"{kind!r} is not an evaluator type" if cls is not None
                                      else host.evaluators.unknown(str(kind)))
                     + f"; evaluator types: {', '.join(types) or 'none installed'} (or drop "
                     "'type' and list 'metrics')" if isinstance(kind, str)
                     else f"expected a string, got {show(kind)}")
        return None
    if entry.get("metrics"):
        problems.add(f"{path}.metrics", f"an evaluator of type {kind} computes its own metrics; "
                     "drop 'metrics' (or drop 'type' and list the metrics)")
        return None
    if entry.get("name") not in (None, name):
        problems.add(f"{path}.name", f"differs from the evaluator's key {name!r}; drop it")
    options = {k: v for k, v in entry.items() if k not in _EVALUATOR_FIELDS}
    type_args = entry.get("type_args") or {}
    if not isinstance(type_args, Mapping):
        problems.add(f"{path}.type_args", f"expected an object, got {show(type_args)}")
        return None
    for key in set(options) & set(type_args):
        problems.add(f"{path}.{key}", "given both beside type and in type_args; keep one")
    options.update(type_args)
    found = cls.check_options(options)
    for key, msg in found:
        problems.add(f"{path}.{key}" if key else path, msg)
    if found:
        return None
    return {"metrics": cls.expand(name, options)}


def check_metric(metric: MetricConfig, path: str, host: PluginHost,
                 data: Mapping[str, DataConfig], problems: Problems) -> None:
    """Add ``metric``'s problems (its type, its evaluator's own checks, its sub-metrics, its
    backend and data config) under ``path``."""
    cls = host.evaluators.get(metric.type)
    if cls is None:
        hint = ("; the olivine-evaluators plugin provides latency, throughput, accuracy, "
                "size_on_disk, similarity and perplexity" if not host.evaluators.names() else "")
        problems.add(f"{path}.type", host.evaluators.unknown(metric.type) + hint)
    else:
        reported = set()
        for key, msg in getattr(cls, "check_metric", lambda _: [])(metric):
            problems.add(f"{path}.{key}", msg)
            reported.add(key)
        known = getattr(cls, "sub_types", {}).get(metric.type.lower(), {})
        for j, sub in enumerate(metric.sub_types):
            if known and sub.name not in known and f"sub_types[{j}].name" not in reported:
                problems.add(f"{path}.sub_types[{j}].name",
                             f"unknown sub-metric {sub.name!r} for {metric.type}"
                             f"{did_you_mean(sub.name, known)}; expected one of {', '.join(known)}")
    settings = metric.user_config.get("inference_settings")
    if settings is not None:
        _check_metric_settings(settings, f"{path}.user_config.inference_settings", problems)
    if metric.backend not in (None, *METRIC_BACKENDS) and metric.type.lower() != "custom":
        problems.add(f"{path}.backend", f"expected {' or '.join(METRIC_BACKENDS)}, got "
                     f"{metric.backend!r}")
    if metric.data_config is not None and metric.data_config not in data:
        problems.add(f"{path}.data_config", undefined("data config", metric.data_config, data))


def _check_metric_settings(value: Any, path: str, problems: Problems) -> None:
    """A metric's ``user_config.inference_settings``: Olive's ``{framework: settings}`` form,
    of which ONNX Runtime's (``onnx``) is the one that applies."""
    from olivine.ortsession import settings_problems

    if not isinstance(value, Mapping):
        problems.add(path, f"expected an object keyed by framework (onnx), got {show(value)}")
        return
    for framework, settings in value.items():
        if framework != "onnx":
            problems.add(f"{path}.{framework}", "only 'onnx' settings apply (the ONNX Runtime "
                         "sessions of the evaluators); other frameworks take none")
            continue
        for key, msg in settings_problems(settings):
            problems.add(f"{path}.onnx" + (f".{key}" if key else ""), msg)


def undefined(what: str, name: str, defined: Mapping[str, Any]) -> str:
    """``WHAT 'NAME' is not defined``, a close name, and the defined ones."""
    names = ", ".join(sorted(defined)) or "none"
    return f"{what} {name!r} is not defined{did_you_mean(name, list(defined))}; defined: {names}"


