"""Evaluators, Olive-style metric configs and goals.

Evaluators come from plugins (``register_evaluators``); this module defines what
they implement, the metric config they receive and how goals are judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import attrs

from olivine.accelerator import Accelerator
from olivine.models import ModelHandle

GoalType = Literal[
    "threshold",
    "max-degradation",
    "min-improvement",
    "percent-max-degradation",
    "percent-min-improvement",
]


@attrs.frozen
class Goal:
    """What a sub-metric must reach: an absolute threshold or a change against the input model."""

    type: GoalType = attrs.field(metadata={"help": "how value is read"})
    value: float = attrs.field(metadata={"help": "the threshold or allowed change"})


@attrs.frozen
class SubMetric:
    """One number a metric produces (``avg``, ``p90``, ``accuracy``, ...)."""

    name: str
    priority: int = attrs.field(default=-1, metadata={"help": "rank for the Pareto order; 1 first"})
    higher_is_better: bool | None = attrs.field(
        default=None, metadata={"help": "default: the evaluator's choice for this sub-metric"})
    goal: Goal | None = None
    metric_config: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class MetricConfig:
    """One metric of an evaluator, as in Olive's ``metrics`` list."""

    name: str
    type: str = attrs.field(metadata={"help": "latency, throughput, accuracy, ..."})
    sub_types: list[SubMetric] = attrs.field(factory=list)
    user_config: dict[str, Any] = attrs.field(factory=dict)
    data_config: str | None = attrs.field(default=None, metadata={"data_config": True})
    backend: str | None = None


@attrs.frozen
class EvaluatorConfig:
    """A named set of metrics (``evaluators.NAME``)."""

    metrics: list[MetricConfig] = attrs.field(factory=list)


@attrs.define
class EvalContext:
    """What an evaluator may use besides the model and the metric."""

    accelerator: Accelerator
    data_configs: Mapping[str, Any] = attrs.field(factory=dict)
    reference: ModelHandle | None = None


class Evaluator:
    """Measures models for one or more metric types.

    ``sub_types`` maps each metric type to the sub-metrics it can compute and
    whether higher is better for each.
    """

    name: ClassVar[str] = ""
    metric_types: ClassVar[tuple[str, ...]] = ()
    sub_types: ClassVar[dict[str, dict[str, bool]]] = {}
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    libraries: ClassVar[tuple[str, ...]] = ()
    #: True for Olive's evaluator types (``type: LMEvaluator`` with options beside the type),
    #: which :meth:`expand` turns into metrics; False for metric types.
    evaluator_type: ClassVar[bool] = False

    def evaluate(self, model: ModelHandle, metric: MetricConfig, context: EvalContext) -> dict[str, float]:
        """Return ``{sub_metric_name: value}`` for every sub-metric ``metric`` asks for."""
        raise NotImplementedError

    @classmethod
    def expand(cls, name: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The metrics (raw ``metrics`` entries) of an evaluator written as ``type: NAME`` with
        ``options`` beside it, as Olive's LMEvaluator is; one metric named ``name`` by default."""
        return [{"name": name, "type": cls.name, "user_config": dict(options)}]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(key, problem)`` for each wrong ``user_config`` option (config time, no I/O)."""
        return []

    @classmethod
    def check_metric(cls, metric: MetricConfig) -> list[tuple[str, str]]:
        """``(key path within the metric, problem)`` for each wrong setting of ``metric``
        (config time, no I/O); by default :meth:`check_options` on its ``user_config``."""
        return [(f"user_config.{k}" if k else "user_config", m)
                for k, m in cls.check_options(metric.user_config)]

    def prepare(self, metric: MetricConfig, context: EvalContext) -> None:
        """Check, before any pass runs, what the measurement will need (data, libraries);
        raise :class:`~olivine.errors.UsageError` naming what is missing."""


def prepare_metrics(metrics: list[MetricConfig], evaluators: Any, context: EvalContext) -> None:
    """Call :meth:`Evaluator.prepare` for each metric (``evaluators``: the host's registry)."""
    for metric in metrics:
        cls = evaluators.get(metric.type)
        if cls is not None:
            cls().prepare(metric, context)


def goal_met(goal: Goal, value: float, baseline: float | None, higher_is_better: bool) -> bool:
    """Whether ``value`` meets ``goal``; relative goals compare with ``baseline``."""
    if goal.type == "threshold":
        return value >= goal.value if higher_is_better else value <= goal.value
    if baseline is None:
        return False
    sign = 1.0 if higher_is_better else -1.0
    change = sign * (value - baseline)
    if goal.type.startswith("percent-"):
        change = 100.0 * change / abs(baseline) if baseline else float("inf") * (change or 0)
    if goal.type.endswith("max-degradation"):
        return change >= -goal.value
    return change >= goal.value
