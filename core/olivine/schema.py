"""JSON schemas of the workflow file and of every installed pass's config."""

from __future__ import annotations

from typing import Any

from olivine.config.sections import (
           DataConfig,
           EngineConfig,
           HfModelSpec,
           OnnxModelSpec,
           PyTorchModelSpec,
)
from olivine.config.typed import json_schema
from olivine.evaluation import EvaluatorConfig, MetricConfig
from olivine.passes import Pass
from olivine.plugins import PluginHost


def pass_schema(cls: type[Pass]) -> dict[str, Any]:
    """The schema of one pass entry (``type`` plus its config fields, flat)."""
    schema = json_schema(cls.Config)
    props = {"type": {"const": cls.name}, "disable_search": {"type": "boolean"},
             "input_files": {"type": "array", "items": {"type": "string"},
                             "description": "files the step reads that no option names "
                                            "(part of its cache key)"},
             **schema.get("properties", {})}
    return {"type": "object", "properties": props, "required": ["type"],
            "additionalProperties": False, "description": (cls.__doc__ or "").strip().split("\n")[0]}


def input_model_schemas(host: PluginHost) -> list[dict[str, Any]]:
    """The forms of ``input_model``: the host's (HfModel, ONNXModel, PyTorchModel), then each
    plugin model kind's ``input_types`` (its ``input_spec`` attrs class when it has one)."""
    forms = [json_schema(spec) for spec in (HfModelSpec, OnnxModelSpec, PyTorchModelSpec)]
    for _kind, (cls, owner) in sorted(host.model_kinds.items()):
        names = list(getattr(cls, "input_types", ()))
        if not names:
            continue
        spec = getattr(cls, "input_spec", None)
        schema: dict[str, Any] = json_schema(spec) if spec is not None else {"type": "object"}
        schema.setdefault("properties", {})["type"] = {"enum": names}
        schema["required"] = sorted({"type", *schema.get("required", [])})
        schema["description"] = ((cls.__doc__ or "").strip().split("\n")[0]
                                 + f" (plugin {owner})").strip()
        forms.append(schema)
    return forms


def workflow_schema(host: PluginHost) -> dict[str, Any]:
    """The schema of a workflow file in olivine's (current Olive) form."""
    passes = {name: pass_schema(cls) for name, cls, _ in host.passes.items()
              if getattr(cls, "name", name) == name}
    systems = {}
    for name, cls, _ in host.systems.items():
        sch = json_schema(cls.Config)
        sch["properties"] = {"type": {"const": name}, **sch.get("properties", {})}
        systems[name] = sch
    engine = json_schema(EngineConfig)
    metric = json_schema(MetricConfig)
    evaluator = json_schema(EvaluatorConfig)
    # a metric inline, or the name of one in the top-level metrics list
    evaluator["properties"]["metrics"]["items"] = {"anyOf": [metric, {"type": "string"}]}
    # Olive's evaluator types (LMEvaluator, ...): the type and its options beside it
    typed_evaluators = [{"type": "object", "required": ["type"],
                         "properties": {"type": {"const": name}},
                         "description": (cls.__doc__ or "").strip().split("\n")[0]}
                        for name, cls, _ in host.evaluators.items()
                        if getattr(cls, "name", "") == name and getattr(cls, "evaluator_type", False)]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "olivine workflow",
        "type": "object",
        "properties": {
            "workflow_id": {"type": "string"},
            "input_model": {"anyOf": input_model_schemas(host)},
            "systems": {"type": "object", "additionalProperties": {"anyOf": list(systems.values())}},
            "data_configs": {"type": "array", "items": json_schema(DataConfig)},
            "metrics": {"type": "array", "items": metric},
            "evaluators": {"type": "object", "additionalProperties": {"anyOf": [
                evaluator, *typed_evaluators]}},
            "passes": {"type": "object", "additionalProperties": {"anyOf": list(passes.values())}},
            "engine": engine,
            **engine["properties"],
        },
        "required": ["input_model"],
        "additionalProperties": False,
        "$defs": {"passes": passes, "systems": systems},
    }
