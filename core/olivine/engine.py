"""The engine: runs a validated workflow's pass chain, caches each step, evaluates, publishes."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

from olivine import __version__
from olivine.accelerator import Accelerator, AcceleratorConfig
from olivine.cache import DEFAULT_LIBRARIES, Cache, library_versions
from olivine.config.sections import SearchStrategy
from olivine.config.typed import unstructure
from olivine.config.workflow import PassEntry, WorkflowConfig
from olivine.errors import GoalsNotMetError, OlivineError, PassError
from olivine.evaluation import EvalContext, prepare_metrics
from olivine.events import RunInfo, StepInfo
from olivine.inputs import InputDescriber
from olivine.models import CompositeModel, ModelHandle, handle_from_dict
from olivine.output import check_apart, check_output_dir, publish
from olivine.passes import Pass
from olivine.plugins import PluginHost
from olivine.prefetch import Prefetch
from olivine.report import render_summary
from olivine.search.rank import judge, objectives
from olivine.systems.base import StepRequest, System

log = logging.getLogger("olivine.engine")


@attrs.define
class RunResult:
    """What :func:`olivine.run` returns."""

    status: str
    output_dir: Path | None
    output_model: ModelHandle | None
    metrics: dict[str, Any]
    report: dict[str, Any]
    report_path: Path

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status == "succeeded"


@attrs.frozen
class PlannedStep:
    """One step of the plan (``olivine run --dry-run``)."""

    index: int
    name: str
    pass_name: str
    plugin: str
    config: dict[str, Any]
    accepts: tuple[str, ...]
    produces: str
    isolate: bool


class Engine:
    """Runs one workflow on the plugins of ``host``."""

    def __init__(self, workflow: WorkflowConfig, host: PluginHost, system: System | None = None) -> None:
        self.wf = workflow
        self.host = host
        target = workflow.target_system()
        accels = target.config.accelerators
        self.accelerator: Accelerator = (accels[0] if accels else AcceleratorConfig()).resolved(
            needs_provider=False)  # validation refused an unclear device where it matters
        host_entry = workflow.host_system()
        if system is None:
            system_cls = host.systems.get(host_entry.type)
            assert system_cls is not None
            system = system_cls(host_entry.config)
        #: where steps run (the workflow's host system, unless the caller gives one)
        self.system: System = system
        self.log_level = workflow.engine.log_severity_level
        self.cleaned: dict[str, int] | None = None
        #: the steps after the running one in :meth:`run_chain` (what :class:`Prefetch` reads)
        self._ahead: list[PassEntry] = []
        #: (step name, run folder) whose process the system was asked to start ahead
        self._prepared: tuple[str, str] | None = None

    def plan(self) -> list[PlannedStep]:
        """The steps this workflow will run, in order."""
        out = []
        for i, entry in enumerate(self.wf.passes):
            cls = self.host.passes.get(entry.type)
            assert cls is not None
            out.append(PlannedStep(i + 1, entry.name, cls.name, self.host.passes.owner(entry.type) or "",
                                   unstructure(entry.config), cls.accepts, cls.produces, cls.isolate))
        return out

    # -- running ------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run every step; publish the output; return the result (raise on failure)."""
        engine = self.wf.engine
        # relative folders are taken from the working directory, as Olive does
        output_dir = Path(engine.output_dir).expanduser().resolve()
        cache = Cache(engine.cache_dir)  # --cache_dir, else the config, else $OLIVINE_CACHE_DIR
        check_apart(output_dir, cache.root)
        check_output_dir(output_dir, cache.file_hash if cache.exists() else None)
        cache.ensure()
        self.cleaned = _clean_first(engine, cache)
        from olivine.sharedcache import for_engine

        self.shared = for_engine(engine)  # a shared cache for teams, when the config names one
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        run_dir = cache.begin_run(run_id)  # steps this run uses are safe from `olivine cache clean`
        try:
            return self._run(cache, run_id, run_dir, output_dir)
        finally:
            cache.end_run()

    def _run(self, cache: Cache, run_id: str, run_dir: Path, output_dir: Path) -> RunResult:
        info = RunInfo(run_id, tuple(p.name for p in self.wf.passes), output_dir, cache.root,
                       self.log_level)
        started = time.time()
        report: dict[str, Any] = {
            "olivine_version": __version__, "run_id": run_id, "workflow_id": self.wf.workflow_id,
            "status": "running", "started_at": _iso(started), "config_source": self.wf.source,
            "config": self.wf.to_dict(),
            "accelerator": {"device": self.accelerator.device,
                            "execution_provider": self.accelerator.execution_provider},
            "host_system": self.wf.host_system().name, "target_system": self.wf.target_system().name,
            "steps": [], "metrics": {}, "environment": _environment(self.host),
        }
        if self.cleaned is not None:
            report["clean_cache"] = self.cleaned
        self.host.events.run_started(run=info)
        error: OlivineError | None = None
        model: ModelHandle | None = None
        try:
            if self.wf.engine.evaluator is not None:  # the evaluator's data and libraries, first
                prepare_metrics(self.wf.evaluators[self.wf.engine.evaluator].metrics,
                                self.host.evaluators, self.eval_context())
            model = self.wf.input_model.handle
            if not self.wf.dimensions() and self.wf.passes:  # its child imports while we hash
                self._prepare(self.wf.passes[0], run_dir)
            model_id = cache.model_identity(model)
            report["input_model"] = {**model.to_dict(), "id": model_id}
            if self.wf.dimensions():
                from olivine.search.driver import run_search

                model = run_search(self, cache, run_dir, model, model_id, report)
            else:
                model, model_id = self.run_chain(cache, run_dir, self.wf.passes, model, model_id,
                                                 report["steps"])
                self._evaluate(model, report)
        except OlivineError as exc:
            error = exc
        except KeyboardInterrupt:
            error = OlivineError("interrupted")
            error.exit_code = 130
        finally:
            self.system.cancel_prepared()
            self._prepared = None
        finished = time.time()
        report["finished_at"] = _iso(finished)
        report["duration_s"] = round(finished - started, 3)
        result_model: ModelHandle | None = None
        if error is None:
            report["status"] = "succeeded"
            assert model is not None
            size = sum(f.stat().st_size for f in model.files())
            summary = render_summary(report, output_dir, size)
            extras = [p for p in (run_dir / "frontier.png", run_dir / "frontier.html") if p.exists()]
            try:
                result_model = publish(output_dir, model, report, summary, extras, memo=cache)
                report["output_model"] = result_model.to_dict(relative_to=output_dir)
                report["output_dir"] = str(output_dir)
            except OlivineError as exc:  # a full disk, or files added to the output meanwhile
                error = exc
        if error is not None:
            report["status"] = "goals_not_met" if isinstance(error, GoalsNotMetError) else "failed"
            report["error"] = {"type": type(error).__name__, "message": str(error),
                               "exit_code": error.exit_code}
            summary = render_summary(report, None)
        report_path = run_dir / "run.json"
        report_path.write_text(json.dumps(report, indent=2, default=str))
        (run_dir / "summary.txt").write_text(summary)
        self.host.events.run_finished(run=info, report=report)
        if error is not None:
            error.report_path = report_path  # type: ignore[attr-defined]
            error.summary = summary  # type: ignore[attr-defined]
            raise error
        return RunResult("succeeded", output_dir, result_model, report["metrics"], report,
                         output_dir / "run.json")

    def run_chain(self, cache: Cache, run_dir: Path, entries: list[PassEntry], model: ModelHandle,
                  model_id: str, steps: list[dict[str, Any]]) -> tuple[ModelHandle, str]:
        """Run ``entries`` in order from ``model``; append each step's record to ``steps``."""
        try:
            for i, entry in enumerate(entries):
                self._ahead = entries[i + 1:]
                model, model_id = self._step(cache, run_dir, i, entry, model, model_id, steps)
        finally:
            self._ahead = []
        return model, model_id

    def _prepare(self, entry: PassEntry, run_dir: Path) -> None:
        """Let the system start the step's process now (see :meth:`System.prepare_step`)."""
        if self._prepared == (entry.name, str(run_dir)):
            return
        cls = self.host.passes.get(entry.type)
        if cls is None:
            return
        self._prepared = (entry.name, str(run_dir))
        self.system.prepare_step(entry.name, str(run_dir), bool(cls.isolate), tuple(cls.preload))

    def _prefetch(self, isolate: bool) -> Prefetch | None:
        """Start importing the ``preload`` modules of the later steps that run in this process,
        when this step runs elsewhere (``OLIVINE_PREFETCH=0`` turns it off)."""
        if os.environ.get("OLIVINE_PREFETCH", "1") == "0" or self.system.runs_here(isolate):
            return None  # a step of this process: imports beside it could race its own
        modules: list[str] = []
        for later in self._ahead:
            cls = self.host.passes.get(later.type)
            if cls is not None and self.system.runs_here(bool(cls.isolate)):
                modules.extend(cls.preload)
        return Prefetch(modules).start() if modules else None

    def key_parts(self, cache: Cache, entry: PassEntry, model_id: str) -> dict[str, Any]:
        """Everything that determines the step ``entry`` on the model ``model_id``: its key's parts.

        Files the step reads (path-valued options, the data configs it names, the entry's
        ``input_files``) enter by content under portable names (:mod:`olivine.inputs`).
        """
        cls = self.host.passes.get(entry.type)
        assert cls is not None
        plugin = self.host.passes.owner(entry.type) or ""
        reads = InputDescriber(cache.file_hash, self.wf.base_dir)
        key_config, data_configs = reads.config(entry.config, self.wf.data_configs)
        return {
            "format": 2, "input_id": model_id, "pass": cls.name, "pass_version": cls.version,
            "plugin": plugin, "plugin_version": self.host.plugin_version(plugin),
            "config": key_config, "data_configs": data_configs,
            "input_files": reads.files(entry.input_files),
            "device": self.accelerator.device, "execution_provider": self.accelerator.execution_provider,
            "libraries": library_versions(tuple(cls.libraries) or DEFAULT_LIBRARIES),
        }

    def _step(self, cache: Cache, run_dir: Path, index: int, entry: PassEntry, model: ModelHandle,
              model_id: str, steps: list[dict[str, Any]]) -> tuple[ModelHandle, str]:
        cls = self.host.passes.get(entry.type)
        assert cls is not None
        try:
            self._prepare(entry, run_dir)
            return self._step_prepared(cache, run_dir, index, entry, cls, model, model_id, steps)
        finally:
            self._prepared = None
            self.system.cancel_prepared()

    def _step_prepared(self, cache: Cache, run_dir: Path, index: int, entry: PassEntry, cls: type[Pass],
                       model: ModelHandle, model_id: str,
                       steps: list[dict[str, Any]]) -> tuple[ModelHandle, str]:
        plugin = self.host.passes.owner(entry.type) or ""
        config = unstructure(entry.config)
        parts = self.key_parts(cache, entry, model_id)
        libraries = parts["libraries"]
        key = cache.step_key(parts)
        step = StepInfo(index + 1, len(self.wf.passes), entry.name, cls.name, key, model_id)
        record: dict[str, Any] = {
            "name": entry.name, "pass": cls.name, "plugin": plugin,
            "plugin_version": parts["plugin_version"], "pass_version": cls.version,
            "config": config, "key": key, "input_id": model_id, "libraries": libraries,
            "system": self.wf.host_system().name,
        }
        steps.append(record)
        self.host.events.step_started(step=step)
        t0 = time.perf_counter()
        hit = cache.lookup(key)
        if hit is None:
            def waiting() -> None:
                self.host.events.step_progress(step=step, done=0, total=None,
                                               message="waiting for another run computing this step")

            with cache.lock(key, on_wait=waiting):
                hit = cache.lookup(key)
                shared = getattr(self, "shared", None)
                if hit is None and shared is not None:
                    hit = shared.fetch(cache, key)
                    record["shared_cache"] = "hit" if hit is not None else "miss"
                if hit is None:
                    hit = self._compute(cache, run_dir, step, entry, cls, config, model, key,
                                        parts, record)
                    record["status"] = "ran"
                    if shared is not None and shared.upload(cache, hit):
                        record["shared_cache"] = "uploaded"
                else:
                    record["status"] = "cached"
        else:
            record["status"] = "cached"
        record["duration_s"] = round(time.perf_counter() - t0, 3)
        record.setdefault("peak_rss_mb", hit.meta.get("peak_rss_mb"))
        if record["status"] == "cached":
            record["computed_duration_s"] = hit.meta.get("duration_s")
        record["output_id"] = hit.output_id
        record["output_model"] = hit.model.to_dict()
        self.host.events.step_finished(step=step, record=record)
        return hit.model, hit.output_id

    def _compute(self, cache: Cache, run_dir: Path, step: StepInfo, entry: PassEntry, cls: type[Pass],
                 config: dict[str, Any], model: ModelHandle, key: str, parts: dict[str, Any],
                 record: dict[str, Any]) -> Any:
        work = cache.new_work_dir(key)
        request = StepRequest(
            pass_name=cls.name, config=config, model=model.to_dict(), work_dir=str(work),
            step_name=entry.name, device=self.accelerator.device,
            execution_provider=self.accelerator.execution_provider,
            data_configs={n: unstructure(d) for n, d in self.wf.data_configs.items()},
            log_level=self.log_level, state_dir=str(cache.state_dir(key)), log_dir=str(run_dir))

        def progress(done: float, total: float | None, message: str) -> None:
            self.host.events.step_progress(step=step, done=done, total=total, message=message)

        t0 = time.perf_counter()
        isolate = bool(getattr(cls, "isolate", False))
        prefetch = self._prefetch(isolate)
        try:
            outcome = self.system.run_step(request, progress, isolate)
        finally:
            if prefetch is not None:  # joined before this process does anything else
                record["prefetched_imports"] = prefetch.join()
        duration = round(time.perf_counter() - t0, 3)
        record["duration_s"] = duration
        record["peak_rss_mb"] = outcome.peak_rss_mb
        if outcome.python:
            record["python"] = outcome.python
        if outcome.log_file:
            record["log_file"] = outcome.log_file
        if outcome.error is not None or outcome.model is None:
            cache.discard(work)
            record["status"] = "failed"
            record["error"] = {"type": outcome.error_type, "message": outcome.error,
                               "traceback": outcome.traceback}
            self.host.events.step_finished(step=step, record=record)
            plain = (None, "OlivineError", "UsageError", "ConfigError", "ChildProcessError")
            cause = str(outcome.error) if outcome.error_type in plain \
                else f"{outcome.error_type}: {outcome.error}"
            detail = outcome.traceback if self.log_level == 0 else None
            if outcome.log_file:
                cause += f" (log: {outcome.log_file})"
            error = PassError(entry.name, cls.name, cause, detail)
            error.exit_code = outcome.error_exit_code or 1
            raise error
        output = handle_from_dict(outcome.model)
        if output.kind != cls.produces and output.kind not in cls.produces_for.values() \
                and not _composite_of(output, cls.produces):
            cache.discard(work)
            raise PassError(entry.name, cls.name, f"returned an {output.kind} model, but declares "
                            f"that it produces {cls.produces} models")
        meta = {"pass": cls.name, "step": entry.name, "key_parts": parts, "duration_s": duration,
                "peak_rss_mb": outcome.peak_rss_mb}
        return cache.commit(key, work, output, meta)

    # -- evaluation ---------------------------------------------------------------------
    def _evaluate(self, model: ModelHandle, report: dict[str, Any]) -> None:
        name = self.wf.engine.evaluator
        if name is None:
            return
        evaluator = self.wf.evaluators[name]
        baseline = self.baseline(report)
        measured = self.measure(model, evaluator.metrics)
        report["metrics"]["output_model"] = measured
        goals, missed = judge(objectives(evaluator, self.host), measured, baseline)
        report["goals"] = goals
        if not goals:
            return
        report["goals_met"] = not missed
        if not missed:
            return
        if isinstance(self.wf.engine.search_strategy, SearchStrategy):
            # Olive's search mode (a search_strategy, searched options or not) outputs only
            # candidates that meet the goals: this one is the only candidate
            raise GoalsNotMetError(
                "the output model does not meet the evaluator's goals: " + "; ".join(missed)
                + " (with a search_strategy only a model that meets them is published, as in "
                "Olive; without one the model is published and the missed goals reported)")
        # Olive's no-search mode publishes the output model whatever the goals say
        report["missed_goals"] = list(missed)
        log.warning("the output model does not meet the evaluator's goals: %s; published anyway "
                    "(no search_strategy: as Olive, goals only rank candidates of a search)",
                    "; ".join(missed))

    def baseline(self, report: dict[str, Any]) -> dict[str, Any]:
        """The input model's metrics (measured once, kept in the report), if asked for."""
        name = self.wf.engine.evaluator
        if name is None or not self.wf.engine.evaluate_input_model:
            return {}
        if "input_model" not in report["metrics"]:
            metrics = self.wf.evaluators[name].metrics
            report["metrics"]["input_model"] = self.measure(self.wf.input_model.handle, metrics)
        return dict(report["metrics"]["input_model"])

    def eval_context(self) -> EvalContext:
        """The context evaluators get: target accelerator, data configs, the input model."""
        return EvalContext(self.accelerator, self.wf.data_configs, self.wf.input_model.handle)

    def measure(self, model: ModelHandle, metrics: list[Any]) -> dict[str, Any]:
        """Every metric of ``metrics`` on ``model``: ``{metric: {sub: value}}``."""
        return self._measure(model, metrics, self.eval_context())

    def _measure(self, model: ModelHandle, metrics: list[Any], context: EvalContext) -> dict[str, Any]:
        out: dict[str, dict[str, float]] = {}
        for metric in metrics:
            cls = self.host.evaluators.get(metric.type)
            assert cls is not None
            if model.kind not in cls.accepts:
                raise OlivineError(f"metric {metric.name!r} ({metric.type}) cannot measure "
                                   f"{model.kind} models; it takes {', '.join(cls.accepts)}")
            out[metric.name] = cls().evaluate(model, metric, context)
        return out


def _composite_of(model: ModelHandle, kind: str) -> bool:
    """True for a composite whose components are all ``kind`` models: what a pass declaring
    ``kind`` returns for a composite input (run per component) or for a model it makes in
    parts (ModelBuilder's Whisper encoder and decoder)."""
    return isinstance(model, CompositeModel) and bool(model.components) and all(
        part.kind == kind for _, part in model.components)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def _environment(host: PluginHost) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0], "executable": sys.executable,
        "platform": platform.platform(), "machine": platform.machine(),
        "libraries": library_versions(("olivine", *DEFAULT_LIBRARIES)),
        "plugins": {p.name: f"{p.distribution} {p.version}" for p in host.plugins},
    }


def _clean_first(engine: Any, cache: Cache) -> dict[str, int] | None:
    """Olive's ``clean_cache`` (in the engine block or its ``cache_config``): empty the step cache
    before the run, as ``olivine cache clean`` does; steps another running workflow uses stay."""
    olive = getattr(engine, "cache_config", None)
    if not (engine.clean_cache or (olive is not None and olive.clean_cache)):
        return None
    from olivine.cacheclean import clean

    report = clean(cache)
    log.warning("clean_cache: removed %d cached steps (%.1f MB) from %s before the run%s",
                report.removed, report.freed / 1e6, cache.root,
                f"; {report.in_use} in use by another run kept" if report.in_use else "")
    return {"removed": report.removed, "freed_bytes": report.freed, "in_use": report.in_use}
