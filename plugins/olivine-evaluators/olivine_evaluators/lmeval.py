"""``LMEvaluator``: language-model benchmarks through EleutherAI's lm-evaluation-harness.

Written as Olive writes it, an evaluator entry with ``type: LMEvaluator`` and its options
beside the type::

    "evaluators": {"lm": {"type": "LMEvaluator", "tasks": ["hellaswag"], "batch_size": 1,
                          "limit": 4, "max_length": 128}}

Each task becomes one metric named after the task; its sub-metrics are lm-eval's metrics
for it (``acc``, ``acc_norm``, ``bleu``, ...; the filter suffix and the ``_stderr`` entries
dropped, as Olive does), so reports show ``hellaswag-acc`` as Olive's do. An inline task's
``metric_list`` declares its sub-metrics (with their ``higher_is_better``), so a search can
rank by them; for a named task, write the metric form to rank by it::

    {"metrics": [{"name": "hellaswag", "type": "LMEvaluator", "user_config": {"tasks":
     ["hellaswag"], "limit": 100}, "sub_types": [{"name": "acc_norm", "priority": 1}]}]} The task
``size_on_disk`` is Olive's shortcut for the model's size (``size_on_disk-bytes``).
This module is light; lm-eval, torch and onnxruntime are imported when a model is scored.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from typing import Any

from olivine import EvalContext, Evaluator, MetricConfig, ModelHandle, UsageError, did_you_mean

INSTALL = "pip install 'olivine-evaluators[lmeval]'"
MODEL_CLASSES = ("hf", "ort", "ortgenai")

#: Olive 0.13's LMEvaluator options (and three of lm-eval's own that newer Olive recipes pass).
OPTIONS: dict[str, str] = {
    "tasks": "lm-eval task names, or inline task configs (objects with 'task')",
    "batch_size": "requests scored together (1)",
    "max_length": "context window in tokens (default: the model's)",
    "limit": "samples per task: a count, or a fraction below 1 (default: all)",
    "bootstrap_iters": "bootstrap resamples for the stderr (100000; 0 skips them)",
    "model_class": "hf, ort or ortgenai (default: hf for Hugging Face models, ort for ONNX)",
    "device": "where the model runs: cpu, gpu/cuda[:N] (torch device; for ONNX models it picks "
              "the CUDA execution provider unless execution_provider is given)",
    "execution_provider": "ONNX Runtime execution provider (default: the workflow's)",
    "provider_options": "options of that execution provider",
    "num_fewshot": "few-shot examples per prompt (default: the task's)",
    "apply_chat_template": "format prompts with the tokenizer's chat template",
    "fewshot_as_multiturn": "few-shot examples as chat turns (with apply_chat_template)",
}


def lmeval_missing() -> str | None:
    """Why LMEvaluator cannot run here (lm-eval absent), found without importing it."""
    if importlib.util.find_spec("lm_eval") is None:
        return f"LMEvaluator needs lm-eval (the lm-evaluation-harness): {INSTALL}"
    return None


def task_name(task: Any) -> str:
    """The name a task is reported under: the name itself, or an inline config's ``task``."""
    return str(task["task"]) if isinstance(task, Mapping) else str(task)


def _int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def option_problems(options: Mapping[str, Any], require_tasks: bool = True) -> list[tuple[str, str]]:
    """``(key, problem)`` for each wrong LMEvaluator option."""
    out: list[tuple[str, str]] = []

    for key in options:
        if key not in OPTIONS:
            out.append((key, f"unknown LMEvaluator option{did_you_mean(key, list(OPTIONS))}; "
                        f"known: {', '.join(OPTIONS)}"))
    tasks = options.get("tasks")
    if tasks is None and require_tasks:
        out.append(("tasks", "LMEvaluator needs tasks: a list of lm-eval task names or configs"))
    elif tasks is not None:
        if not isinstance(tasks, list) or not tasks:
            out.append(("tasks", "expected a non-empty list of task names or task configs"))
        else:
            for i, task in enumerate(tasks):
                if isinstance(task, Mapping):
                    if not isinstance(task.get("task"), str) or not task["task"]:
                        out.append((f"tasks[{i}]", "an inline task config needs 'task' (its name)"))
                elif not isinstance(task, str) or not task:
                    out.append((f"tasks[{i}]", "expected a task name or a task config object"))
            names = [task_name(t) for t in tasks if isinstance(t, str | Mapping)]
            for dup in sorted({n for n in names if names.count(n) > 1}):
                out.append(("tasks", f"task {dup!r} is listed twice"))
    checks = {
        "batch_size": (lambda v: _int(v, 1), "expected an integer >= 1"),
        "max_length": (lambda v: v is None or _int(v, 1), "expected an integer >= 1"),
        "bootstrap_iters": (lambda v: _int(v, 0), "expected an integer >= 0"),
        "num_fewshot": (lambda v: v is None or _int(v, 0), "expected an integer >= 0"),
        "limit": (lambda v: v is None or _int(v, 1) or (
            isinstance(v, float) and math.isfinite(v) and 0 < v <= 1),
            "expected a sample count (integer >= 1) or a fraction in (0, 1]"),
        "model_class": (lambda v: v is None or v in MODEL_CLASSES,
                        f"expected one of {', '.join(MODEL_CLASSES)}"),
        "device": (lambda v: v is None or (isinstance(v, str) and v.split(":")[0].lower() in
                                          ("cpu", "gpu", "cuda", "mps", "npu")),
                   "expected cpu, gpu or cuda (optionally with :N)"),
        "execution_provider": (lambda v: v is None or isinstance(v, str), "expected a string"),
        "provider_options": (lambda v: v is None or isinstance(v, Mapping), "expected an object"),
        "apply_chat_template": (lambda v: isinstance(v, bool), "expected true or false"),
        "fewshot_as_multiturn": (lambda v: isinstance(v, bool), "expected true or false"),
    }
    for key, (ok, msg) in checks.items():
        if key in options and not ok(options[key]):
            out.append((key, f"{msg}, got {options[key]!r}"))
    missing = lmeval_missing()
    if missing and not out:
        out.append(("type", missing))
    return out


class LMEvaluator(Evaluator):
    """Scores a causal language model on lm-eval tasks (loglikelihood, rolling loglikelihood
    and generation requests), run with torch (``hf``), ONNX Runtime (``ort``) or
    onnxruntime-genai (``ortgenai``). Needs ``olivine-evaluators[lmeval]``."""

    name = "LMEvaluator"
    metric_types = ("LMEvaluator",)
    sub_types = {}  # lm-eval names them per task
    accepts = ("onnx", "hf")
    evaluator_type = True
    libraries = ("lm_eval", "onnxruntime", "onnxruntime_genai", "torch", "transformers")

    @classmethod
    def expand(cls, name: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One metric per task (``size_on_disk``: the size metric, as Olive does)."""
        out: list[dict[str, Any]] = []
        for task in options.get("tasks") or []:
            if task == "size_on_disk":
                out.append({"name": "size_on_disk", "type": "size_on_disk",
                            "sub_types": [{"name": "bytes"}]})
                continue
            metric: dict[str, Any] = {"name": task_name(task), "type": cls.name,
                                      "user_config": {**options, "tasks": [task]}}
            if isinstance(task, Mapping) and isinstance(task.get("metric_list"), list):
                # an inline task names its metrics: they rank search candidates (unprioritized)
                metric["sub_types"] = [
                    {"name": str(m["metric"]), "higher_is_better": bool(m.get("higher_is_better",
                                                                              True))}
                    for m in task["metric_list"] if isinstance(m, Mapping) and "metric" in m]
            out.append(metric)
        return out

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Unknown or mistyped options, and lm-eval not installed."""
        return option_problems(options)

    @classmethod
    def check_metric(cls, metric: MetricConfig) -> list[tuple[str, str]]:
        """The options, and one task per metric."""
        out = [(f"user_config.{k}", m) for k, m in option_problems(metric.user_config)]
        tasks = metric.user_config.get("tasks")
        if not out and isinstance(tasks, list) and len(tasks) != 1:
            out.append(("user_config.tasks", "a metric scores one task; write one metric per "
                        "task (or the evaluator form: type LMEvaluator with tasks)"))
        return out

    def prepare(self, metric: MetricConfig, context: EvalContext) -> None:
        """Resolve the task and load its dataset now, so a task lm-eval does not know or a
        dataset the hub cannot give fails before any pass runs."""
        from olivine_evaluators._lmeval_run import load_tasks

        load_tasks(metric.user_config["tasks"], metric.name)

    def evaluate(self, model: ModelHandle, metric: MetricConfig,
                 context: EvalContext) -> dict[str, float]:
        """Run lm-eval's ``simple_evaluate`` on the model for the metric's task."""
        from olivine_evaluators._lmeval_run import evaluate_task

        if lmeval_missing():
            raise UsageError(str(lmeval_missing()))
        return evaluate_task(model, metric, context)
