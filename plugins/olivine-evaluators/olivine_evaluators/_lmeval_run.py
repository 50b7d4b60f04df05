"""Running LMEvaluator: task loading (checked before any pass runs) and lm-eval's evaluation.

Imports lm-eval; import this module lazily.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from olivine import EvalContext, HfModel, MetricConfig, ModelHandle, OnnxModel, UsageError, did_you_mean
from olivine_evaluators.lmeval import task_name

_TASK_MANAGERS: dict[bool, Any] = {}
#: Loaded scorers by (model kind, path, runtime options): a workflow's tasks share one.
_LMS: dict[str, Any] = {}


def _needs_index(tasks: list[Any] | None) -> bool:
    """Whether ``tasks`` name lm-eval's own tasks (inline configs without ``include`` do not)."""
    return tasks is None or any(not isinstance(t, Mapping) or "include" in t for t in tasks)


def task_manager(tasks: list[Any] | None = None) -> Any:
    """lm-eval's task index, built once per process. Reading the index of every task lm-eval
    ships takes a minute on a slow machine; inline task configs do without it."""
    full = _needs_index(tasks)
    if full not in _TASK_MANAGERS:
        from lm_eval.tasks import TaskManager
        from lm_eval.utils import setup_logging

        setup_logging("ERROR")
        _TASK_MANAGERS[full] = TaskManager() if full else TaskManager(include_defaults=False)
    return _TASK_MANAGERS[full]


def _dataset_of(task: Any, manager: Any) -> str:
    if isinstance(task, Mapping):
        return str(task.get("dataset_path") or "?")
    entry = getattr(manager, "_index", {}).get(task)  # the task's YAML (a group has no dataset)
    cfg = getattr(entry, "cfg", None) or {}
    return str(cfg.get("dataset_path") or f"the datasets of {task!r}'s tasks")


def load_tasks(tasks: list[Any], metric: str) -> dict[str, Any]:
    """lm-eval's task objects for ``tasks``, their data loaded (from the hub, or its cache);
    a task lm-eval does not know, or data it cannot load, is a UsageError naming both."""
    manager = task_manager(tasks)
    known = set(manager.all_tasks)
    for task in tasks:
        if isinstance(task, str) and task not in known:
            raise UsageError(f"LMEvaluator metric {metric!r}: lm-eval knows no task {task!r}"
                             f"{did_you_mean(task, known)}")
    try:
        loaded = manager.load(list(tasks)) if hasattr(manager, "load") else None
        if loaded is None:
            from lm_eval.tasks import get_task_dict

            loaded = get_task_dict(list(tasks), manager)
        return dict(loaded)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError...)
        task = tasks[0]
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
            "HF_DATASETS_OFFLINE", "") not in ("", "0")
        why = ("the Hugging Face Hub is switched off here (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) "
               "and the dataset is not in the local cache" if offline else
               "it could not be loaded")
        raise UsageError(f"LMEvaluator task {task_name(task)!r} needs dataset "
                         f"{_dataset_of(task, manager)}; {why}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def resolve_model_class(model: ModelHandle, cfg: Mapping[str, Any]) -> str:
    """Olive's choice: the option, else ``hf`` for Hugging Face models and ``ort`` for ONNX."""
    chosen = cfg.get("model_class")
    if chosen:
        if chosen == "hf" and not isinstance(model, HfModel):
            raise UsageError(f"LMEvaluator model_class 'hf' needs a Hugging Face model, got an "
                             f"{model.kind} model")
        if chosen in ("ort", "ortgenai") and not isinstance(model, OnnxModel):
            raise UsageError(f"LMEvaluator model_class {chosen!r} needs an ONNX model, got an "
                             f"{model.kind} model (use model_class 'hf', or leave it out)")
        if chosen == "ortgenai":
            folder = Path(model.model_file()).parent  # type: ignore[attr-defined]
            if not (folder / "genai_config.json").is_file():
                raise UsageError(f"LMEvaluator model_class 'ortgenai' needs an onnxruntime-genai "
                                 f"model (genai_config.json beside the ONNX file in {folder})")
        return str(chosen)
    if isinstance(model, HfModel):
        return "hf"
    if isinstance(model, OnnxModel):
        return "ort"
    raise UsageError(f"LMEvaluator cannot score a {model.kind} model; set model_class")


def _explicit_provider(cfg: Mapping[str, Any]) -> str | None:
    """The provider the options name (``execution_provider``, or ``device`` gpu), if any."""
    if cfg.get("execution_provider"):
        return str(cfg["execution_provider"])
    device = str(cfg.get("device") or "").lower()
    if device.startswith(("gpu", "cuda")):
        return "CUDAExecutionProvider"
    return None


def _provider(cfg: Mapping[str, Any], context: EvalContext) -> str:
    return _explicit_provider(cfg) or str(context.accelerator.execution_provider
                                          or "CPUExecutionProvider")


def _torch_device(cfg: Mapping[str, Any], context: EvalContext) -> str:
    device = str(cfg.get("device") or context.accelerator.device or "cpu").lower()
    if device.startswith("gpu"):
        return "cuda" + device[3:]
    return device


def make_lm(model: ModelHandle, cfg: Mapping[str, Any], context: EvalContext) -> Any:
    """olivine's lm-eval model for ``model`` (cached for the process: tasks share it)."""
    from olivine_evaluators import _lmeval_lm as adapter

    kind = resolve_model_class(model, cfg)
    runtime = {k: cfg.get(k) for k in ("batch_size", "max_length", "device", "execution_provider",
                                        "provider_options")}
    key = json.dumps([kind, str(model.path), runtime, model.attrs_dict()], sort_keys=True,
                     default=str)
    if key not in _LMS:
        batch = int(cfg.get("batch_size") or 1)
        max_length = cfg.get("max_length")
        if kind == "hf":
            assert isinstance(model, HfModel)
            scorer: Any = adapter.TorchScorer(model, _torch_device(cfg, context))
        elif kind == "ort":
            assert isinstance(model, OnnxModel)
            # the model's inference_settings apply unless the options name a provider
            scorer = adapter.OrtScorer(model, _explicit_provider(cfg),
                                       dict(cfg.get("provider_options") or {}),
                                       context.accelerator.execution_provider)
        else:
            assert isinstance(model, OnnxModel)
            # as Olive: the option, else the workflow's execution provider (not genai_config's)
            scorer = adapter.GenaiScorer(Path(model.model_file()).parent, _provider(cfg, context),
                                         dict(cfg.get("provider_options") or {}))
        from olivine_evaluators.runtime import _has_tokenizer

        tokenizer_dir = None
        if not _has_tokenizer(OnnxModel(path=str(scorer.folder))) and context.reference:
            tokenizer_dir = context.reference.path  # an export without its tokenizer
        _LMS.clear()  # one model in memory at a time
        _LMS[key] = adapter.OlivineLM(scorer, batch_size=batch, max_length=max_length,
                                      tokenizer_dir=tokenizer_dir)
    return _LMS[key]


def task_metrics(results: Mapping[str, Any], name: str) -> dict[str, float]:
    """One task's numbers from lm-eval's results, named as Olive names them: ``acc,none`` is
    ``acc``; ``*_stderr`` and text entries are dropped."""
    per_task = results.get("results", {}).get(name)
    if per_task is None:
        raise UsageError(f"lm-eval returned no results for task {name!r} (it returned "
                         f"{', '.join(results.get('results', {})) or 'none'})")
    out: dict[str, float] = {}
    for key, value in sorted(per_task.items()):
        if key == "alias" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        metric = key.split(",", 1)[0]
        if not metric.endswith("_stderr"):
            out[metric] = float(value)
    return out


def evaluate_task(model: ModelHandle, metric: MetricConfig, context: EvalContext) -> dict[str, float]:
    """lm-eval's ``simple_evaluate`` of the metric's task on ``model``."""
    from lm_eval import simple_evaluate

    cfg = metric.user_config
    lm = make_lm(model, cfg, context)
    extra = {k: cfg[k] for k in ("num_fewshot", "apply_chat_template", "fewshot_as_multiturn")
             if k in cfg}
    results = simple_evaluate(model=lm, tasks=list(cfg["tasks"]),
                              task_manager=task_manager(list(cfg["tasks"])),
                              batch_size=int(cfg.get("batch_size") or 1), limit=cfg.get("limit"),
                              bootstrap_iters=int(cfg.get("bootstrap_iters", 100000)),
                              log_samples=False, **extra)
    values = task_metrics(results or {}, task_name(cfg["tasks"][0]))
    wanted = [s.name for s in metric.sub_types]
    missing = [w for w in wanted if w not in values]
    if missing:
        raise UsageError(f"metric {metric.name!r}: lm-eval task {task_name(cfg['tasks'][0])!r} "
                         f"has no metric {', '.join(missing)} (it has "
                         f"{', '.join(values)})")
    return {w: values[w] for w in wanted} if wanted else values
