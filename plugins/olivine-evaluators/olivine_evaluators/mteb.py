"""``MTEBEvaluator``: embedding benchmarks through the ``mteb`` package (Olive's options).

Written as Olive writes it: ``{"type": "MTEBEvaluator", "tasks": ["STS17"], "batch_size": 32}``.
Each task becomes one metric named after it, with ``main_score`` and one number per split
(``test``, or ``test_en-en`` for a split's subset), as Olive reports them. Needs
``olivine-evaluators[mteb]``; mteb is imported only when a model is measured.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from olivine import EvalContext, Evaluator, MetricConfig, ModelHandle, UsageError, did_you_mean

INSTALL = "pip install 'olivine-evaluators[mteb]'"

#: Olive 0.13's MTEBEvaluator options.
OPTIONS: dict[str, str] = {
    "tasks": "MTEB task names",
    "batch_size": "sentences encoded together (32)",
    "max_length": "tokens per sentence (default: the tokenizer's, at most 512)",
    "model_class": "hf (sentence-transformers), ort or ortgenai (default: from the model)",
    "execution_provider": "ONNX Runtime execution provider (default: the workflow's)",
    "provider_options": "options of that execution provider",
    "eval_splits": "the dataset splits to score (default: the task's)",
    "eval_subsets": "the subsets (languages) to score (default: all)",
    "output_folder": "where mteb writes its result files (default: none written)",
}


def mteb_missing() -> str | None:
    """Why MTEBEvaluator cannot run here (mteb absent), found without importing it."""
    if importlib.util.find_spec("mteb") is None:
        return f"MTEBEvaluator needs mteb (and sentence-transformers): {INSTALL}"
    return None


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def option_problems(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, problem)`` for each wrong MTEBEvaluator option."""
    out: list[tuple[str, str]] = []
    for key in options:
        if key not in OPTIONS:
            out.append((key, f"unknown MTEBEvaluator option{did_you_mean(key, list(OPTIONS))}; "
                        f"known: {', '.join(OPTIONS)}"))
    if not _strings(options.get("tasks")):
        out.append(("tasks", "MTEBEvaluator needs tasks: a non-empty list of MTEB task names"))

    def positive(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    checks = {
        "batch_size": (positive, "expected an integer >= 1"),
        "max_length": (lambda v: v is None or positive(v), "expected an integer >= 1"),
        "model_class": (lambda v: v is None or v in ("hf", "ort"),
                        "expected hf or ort (Olive's ortgenai embedding models are not run by "
                        "olivine yet)"),
        "execution_provider": (lambda v: v is None or isinstance(v, str), "expected a string"),
        "provider_options": (lambda v: v is None or isinstance(v, Mapping), "expected an object"),
        "eval_splits": (lambda v: v is None or _strings(v), "expected a list of split names"),
        "eval_subsets": (lambda v: v is None or _strings(v), "expected a list of subset names"),
        "output_folder": (lambda v: v is None or isinstance(v, str), "expected a folder path"),
    }
    for key, (ok, msg) in checks.items():
        if key in options and not ok(options[key]):
            out.append((key, f"{msg}, got {options[key]!r}"))
    missing = mteb_missing()
    if missing and not out:
        out.append(("type", missing))
    return out


class MTEBEvaluator(Evaluator):
    """Scores an embedding model on MTEB tasks, run with sentence-transformers (``hf``), ONNX
    Runtime (``ort``, mean pooling of ``last_hidden_state`` or the model's
    ``sentence_embedding``) or onnxruntime-genai (``ortgenai``). Needs
    ``olivine-evaluators[mteb]``."""

    name = "MTEBEvaluator"
    metric_types = ("MTEBEvaluator",)
    sub_types = {}  # main_score and one per split
    accepts = ("onnx", "hf")
    evaluator_type = True
    libraries = ("mteb", "sentence_transformers", "onnxruntime", "transformers")

    @classmethod
    def expand(cls, name: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One metric per task."""
        return [{"name": task, "type": cls.name, "user_config": {**options, "tasks": [task]}}
                for task in options.get("tasks") or []]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Unknown or mistyped options, and mteb not installed."""
        return option_problems(options)

    def prepare(self, metric: MetricConfig, context: EvalContext) -> None:
        """Resolve the task and load its data now (a real run, before any pass)."""
        from olivine_evaluators._mteb_run import load_task

        load_task(metric.user_config["tasks"][0])

    def evaluate(self, model: ModelHandle, metric: MetricConfig,
                 context: EvalContext) -> dict[str, float]:
        """Run the task on the model; ``main_score`` and one score per split (and subset)."""
        if mteb_missing():
            raise UsageError(str(mteb_missing()))
        from olivine_evaluators._mteb_run import evaluate_task

        return evaluate_task(model, metric, context)
