"""Objectives, goals and the Pareto frontier of measured candidates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from olivine.config.typed import unstructure
from olivine.evaluation import EvaluatorConfig, Goal, goal_met
from olivine.plugins import PluginHost


@attrs.frozen
class Objective:
    """One sub-metric that ranks candidates."""

    metric: str
    sub: str
    priority: int
    higher_is_better: bool
    goal: Goal | None

    @property
    def key(self) -> str:
        """``metric-sub``, as in reports."""
        return f"{self.metric}-{self.sub}"

    def value(self, metrics: Mapping[str, Mapping[str, float]]) -> float:
        """This objective's value in ``metrics``."""
        return float(metrics[self.metric][self.sub])


def objectives(evaluator: EvaluatorConfig, host: PluginHost) -> list[Objective]:
    """Every sub-metric, ordered by priority (1 first; unprioritized last, in config order)."""
    out = []
    for metric in evaluator.metrics:
        cls = host.evaluators.get(metric.type)
        defaults = getattr(cls, "sub_types", {}).get(metric.type.lower(), {})
        subs = metric.sub_types or []
        for sub in subs:
            hib = sub.higher_is_better
            if hib is None:
                hib = bool(defaults.get(sub.name, True))
            out.append(Objective(metric.name, sub.name, sub.priority, hib, sub.goal))
    return sorted(out, key=lambda o: (o.priority <= 0, o.priority if o.priority > 0 else 0))


def judge(objs: Sequence[Objective], measured: Mapping[str, Mapping[str, float]],
          baseline: Mapping[str, Mapping[str, float]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Goal records for ``run.json`` and a message per missed goal."""
    goals, missed = [], []
    for obj in objs:
        if obj.goal is None:
            continue
        value = obj.value(measured)
        base = baseline.get(obj.metric, {}).get(obj.sub)
        ok = goal_met(obj.goal, value, base, obj.higher_is_better)
        goals.append({"metric": obj.key, "goal": unstructure(obj.goal), "value": value,
                      "baseline": base, "met": ok})
        if not ok:
            against = f", input model {base:g}" if base is not None else ""
            missed.append(f"{obj.key} = {value:g} (goal {obj.goal.type} {obj.goal.value:g}{against})")
    return goals, missed


def _signed(objs: Sequence[Objective], metrics: Mapping[str, Mapping[str, float]]) -> list[float]:
    return [obj.value(metrics) * (1 if obj.higher_is_better else -1) for obj in objs]


def pareto_front(objs: Sequence[Objective], candidates: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Ids of the candidates no other candidate beats on every objective."""
    points = {cid: _signed(objs, m) for cid, m in candidates.items()}
    front = []
    for cid, p in points.items():
        dominated = any(all(a >= b for a, b in zip(q, p)) and any(a > b for a, b in zip(q, p))
                        for other, q in points.items() if other != cid)
        if not dominated:
            front.append(cid)
    return front


def best_of(objs: Sequence[Objective], candidates: Mapping[str, Mapping[str, Any]]) -> str:
    """The candidate first by priority order (ties broken by the next objective)."""
    return max(candidates, key=lambda cid: _signed(objs, candidates[cid]))
