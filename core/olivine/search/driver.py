"""Run a search: propose candidates, run their pass chains (sharing cached steps), rank them."""

from __future__ import annotations

import inspect
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from olivine.cache import Cache
from olivine.config.sections import SearchStrategy
from olivine.config.workflow import PassEntry
from olivine.errors import GoalsNotMetError, OlivineError
from olivine.models import ModelHandle, handle_from_dict
from olivine.search.rank import Objective, best_of, judge, objectives, pareto_front
from olivine.search.samplers import SAMPLERS, Choice
from olivine.search.space import Dimension
from olivine.systems.base import CandidateRequest, System

if TYPE_CHECKING:
    from olivine.engine import Engine


def entries_for(passes: list[PassEntry], choice: Choice) -> list[PassEntry]:
    """The pass entries with ``choice``'s values put into their configs."""
    out = []
    for entry in passes:
        picked = {opt: choice[f"{entry.name}.{opt}"] for opt in entry.search
                  if f"{entry.name}.{opt}" in choice}
        config = attrs.evolve(entry.config, **picked) if picked else entry.config
        out.append(attrs.evolve(entry, config=config))
    return out


def run_candidate(request: CandidateRequest | dict[str, Any],
                  system: System | None = None) -> dict[str, Any]:
    """Run one search candidate (its pass chain, then its metrics) and return its record.

    This is what a :class:`~olivine.System` calls where the candidate runs (another
    process, a Ray worker): it validates the workflow again with the plugins installed
    there. ``system`` runs the candidate's steps (default: the workflow's host system).
    A failure is recorded (``status: failed``), not raised.
    """
    from olivine.config.workflow import validate_workflow
    from olivine.engine import Engine
    from olivine.plugins import get_plugin_host

    if not isinstance(request, CandidateRequest):
        request = CandidateRequest(**request)
    host = get_plugin_host()
    wf = validate_workflow(request.workflow, host, source=request.source,
                           base_dir=Path(request.base_dir))
    engine = Engine(wf, host, system)
    return run_choice(engine, Cache(request.cache_dir), Path(request.run_dir),
                      handle_from_dict(request.model), request.model_id, request.choice)


def run_choice(engine: Engine, cache: Cache, run_dir: Path, model: ModelHandle, model_id: str,
               choice: Choice) -> dict[str, Any]:
    """Run one candidate's chain with ``engine`` and measure it; a failure is recorded, not raised."""
    steps: list[dict[str, Any]] = []
    record: dict[str, Any] = {"choice": {k: v for k, v in choice.items() if not k.startswith("__")},
                              "steps": steps}
    t0 = time.perf_counter()
    try:
        entries = entries_for(engine.wf.passes, choice)
        out, out_id = engine.run_chain(cache, run_dir, entries, model, model_id, steps)
        evaluator = engine.wf.evaluators[engine.wf.engine.evaluator or ""]
        record["metrics"] = engine.measure(out, evaluator.metrics)
        record["output_model"] = out.to_dict()
        record["output_id"] = out_id
        record["status"] = "succeeded"
    except OlivineError as exc:
        record["status"] = "failed"
        record["error"] = str(exc)
    record["duration_s"] = round(time.perf_counter() - t0, 3)
    return record


def _run_candidates(engine: Engine, cache: Cache, run_dir: Path, model: ModelHandle, model_id: str,
                    choices: list[Choice]) -> list[dict[str, Any]]:
    """Hand the system the candidates as requests; it runs them and returns their records."""
    system = engine.system
    if _legacy_run_candidates(system):  # API 1.0: run_candidates(engine, cache, ...)
        warnings.warn(f"{type(system).__qualname__}.run_candidates(engine, cache, run_dir, model, "
                      "model_id, choices) is the API 1.0 form; take (requests, run_here) instead",
                      DeprecationWarning, stacklevel=2)
        legacy: Any = system.run_candidates
        return list(legacy(engine, cache, run_dir, model, model_id, choices))
    wf = engine.wf
    requests = [CandidateRequest(workflow=wf.raw, source=wf.source, base_dir=str(wf.base_dir),
                                 cache_dir=str(cache.root), run_dir=str(run_dir),
                                 model=model.to_dict(), model_id=model_id, choice=dict(c))
                for c in choices]

    def run_here(request: CandidateRequest) -> dict[str, Any]:
        return run_choice(engine, cache, run_dir, model, model_id, request.choice)

    return system.run_candidates(requests, run_here)


def _legacy_run_candidates(system: System) -> bool:
    try:
        params = list(inspect.signature(system.run_candidates).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "engine"


def _score(objs: list[Objective], metrics: dict[str, Any]) -> float:
    first = objs[0]
    return first.value(metrics) * (1 if first.higher_is_better else -1)


def run_search(engine: Engine, cache: Cache, run_dir: Path, model: ModelHandle, model_id: str,
               report: dict[str, Any]) -> ModelHandle:
    """Search the workflow's space; return the best candidate's model; fill ``report``."""
    wf = engine.wf
    strategy = wf.engine.search_strategy
    assert isinstance(strategy, SearchStrategy)
    evaluator = wf.evaluators[wf.engine.evaluator or ""]
    objs = objectives(evaluator, engine.host)
    if not objs:
        raise OlivineError(f"evaluator {wf.engine.evaluator!r} has no sub-metrics to rank "
                           "candidates by; add sub_types to its metrics")
    baseline = engine.baseline(report)
    dims = wf.dimensions()
    candidates: list[dict[str, Any]] = []
    report["search"] = {"sampler": strategy.sampler, "execution_order": strategy.execution_order,
                        "seed": strategy.seed,
                        "space": {d.label: list(d.values) for d in dims}, "candidates": candidates}
    started = time.monotonic()
    parallel = max(1, int(getattr(engine.system, "parallelism", 1)))
    limit = strategy.max_samples or strategy.max_iter or 0

    def budget_left() -> int:
        if strategy.max_time is not None and time.monotonic() - started > strategy.max_time:
            return 0
        return parallel if not limit else min(parallel, limit - len(candidates))

    def search(space: list[Dimension], fixed: Choice) -> None:
        sampler = SAMPLERS[strategy.sampler](space, strategy.seed)
        while (n := budget_left()) > 0:
            batch = sampler.ask(n)
            if not batch:
                return
            choices = [{**fixed, **c} for c in batch]
            results = _run_candidates(engine, cache, run_dir, model, model_id, choices)
            for asked, result in zip(batch, results):
                result["id"] = f"c{len(candidates) + 1}"
                candidates.append(result)
                score = None
                if result["status"] == "succeeded":
                    goals, missed = judge(objs, result["metrics"], baseline)
                    result["goals"], result["meets_goals"] = goals, not missed
                    score = _score(objs, result["metrics"])
                sampler.tell(asked, score)
                if strategy.stop_when_goals_met and result.get("meets_goals"):
                    return

    if strategy.execution_order == "pass-by-pass":
        fixed: Choice = {}
        for entry in wf.passes:
            space = [d for d in dims if d.step == entry.name]
            if not space:
                continue
            first = len(candidates)
            search(space, fixed)
            done = {c["id"]: c["metrics"] for c in candidates[first:] if c.get("meets_goals")}
            if done:
                best = next(c for c in candidates if c["id"] == best_of(objs, done))
                fixed.update({k: v for k, v in best["choice"].items() if k.startswith(entry.name + ".")})
    else:
        search(dims, {})

    feasible = {c["id"]: c["metrics"] for c in candidates if c.get("meets_goals")}
    front = pareto_front(objs, feasible) if feasible else []
    for c in candidates:
        c["on_frontier"] = c["id"] in front
    failed = sum(c["status"] == "failed" for c in candidates)
    report["search"]["failed"] = failed
    if not feasible:
        report["steps"] = candidates[-1]["steps"] if candidates else []
        why = "every candidate failed" if failed == len(candidates) else \
            "no candidate meets the evaluator's goals"
        raise GoalsNotMetError(f"{why} ({len(candidates)} tried, {failed} failed); "
                               f"see the candidates in run.json")
    best_id = best_of(objs, {cid: feasible[cid] for cid in front})
    best = next(c for c in candidates if c["id"] == best_id)
    report["search"]["best"] = best_id
    report["search"]["frontier"] = front
    report["steps"] = best["steps"]
    report["metrics"]["output_model"] = best["metrics"]
    report["goals"] = best.get("goals", [])
    from olivine.search.plot import write_frontier

    write_frontier(run_dir, objs, candidates, report["search"].get("best"))
    return handle_from_dict(best["output_model"])
