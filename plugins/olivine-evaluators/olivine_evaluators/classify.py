"""Classification scores under Olive's sub-metric names (numpy only, light).

Olive's accuracy metric has two backends. ``torch_metrics`` (the default) names its
sub-metrics ``accuracy_score``, ``f1_score``, ``precision``, ``recall``, ``auroc`` and
takes torchmetrics' ``task`` (``binary`` by default), ``num_classes`` and ``average`` in each
sub-metric's ``metric_config``. ``huggingface_metrics`` names them as the ``evaluate``
library does (``accuracy``, ``f1``, ``precision``, ``recall``), with ``compute_params``
(``average``, ``pos_label``) and ``result_key``. Where Olive would fail because labels have
more than two classes and no task is given, the scores are macro averages (accuracy: the
share correct).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

TORCH_NAMES = ("accuracy_score", "f1_score", "precision", "recall", "auroc")
HF_NAMES = ("accuracy", "f1", "precision", "recall")
BACKENDS = ("torch_metrics", "huggingface_metrics")
AVERAGES = ("micro", "macro", "weighted")


def _typed(value: Any, kind: type | tuple[type, ...]) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def config_problems(name: str, backend: str, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, problem)`` for a sub-metric's ``metric_config`` under ``backend``."""
    out: list[tuple[str, str]] = []
    if backend == "huggingface_metrics":
        for key in cfg:
            if key not in ("load_params", "compute_params", "result_key"):
                out.append((key, "unknown key; huggingface_metrics takes load_params, "
                            "compute_params, result_key"))
        if cfg.get("load_params"):
            out.append(("load_params", "not supported: olivine computes the evaluate metrics "
                        "itself, without loading them"))
        params = cfg.get("compute_params") or {}
        if not isinstance(params, Mapping):
            out.append(("compute_params", "expected an object"))
            params = {}
        for key, value in params.items():
            if key == "average" and value not in ("binary", *AVERAGES):
                out.append(("compute_params.average", "expected binary, micro, macro or "
                            f"weighted, got {value!r}"))
            elif key == "pos_label" and not _typed(value, int):
                out.append(("compute_params.pos_label", f"expected a class id, got {value!r}"))
            elif key not in ("average", "pos_label"):
                out.append((f"compute_params.{key}", "not supported here (average, pos_label)"))
        if cfg.get("result_key") not in (None, name):
            out.append(("result_key", f"the result of {name!r} is one number; drop result_key"))
        return out
    for key, value in cfg.items():
        if key == "task" and value not in ("binary", "multiclass"):
            out.append((key, f"expected binary or multiclass, got {value!r}"))
        elif key == "num_classes" and not (value is None or (_typed(value, int) and value >= 2)):
            out.append((key, f"expected an integer >= 2, got {value!r}"))
        elif key == "average" and value not in (*AVERAGES, None):
            out.append((key, f"expected micro, macro or weighted, got {value!r}"))
        elif key not in ("task", "num_classes", "average"):
            out.append((key, "not supported here (task, num_classes, average)"))
    return out


def _per_class(pred: np.ndarray, true: np.ndarray, c: Any) -> tuple[float, float, float, int]:
    tp = float(np.sum((pred == c) & (true == c)))
    fp = float(np.sum((pred == c) & (true != c)))
    fn = float(np.sum((pred != c) & (true == c)))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0), int(np.sum(true == c))


def _prf(kind: str, pred: np.ndarray, true: np.ndarray, average: str, pos_label: int) -> float:
    index = {"precision": 0, "recall": 1, "f1": 2}[kind]
    if average == "binary":
        return _per_class(pred, true, pos_label)[index]
    if average == "micro":
        return float(np.mean(pred == true))
    classes = np.union1d(pred, true)
    rows = [_per_class(pred, true, c) for c in classes]
    if average == "weighted":
        support = np.asarray([r[3] for r in rows], dtype=np.float64)
        return float(np.dot([r[index] for r in rows], support) / max(support.sum(), 1.0))
    return float(np.mean([r[index] for r in rows]))


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def binary_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive scores above a negative (ties half)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.0  # undefined; torchmetrics also returns 0 with a warning
    ranks = _ranks(scores.astype(np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def auroc(logits: np.ndarray, true: np.ndarray, task: str, average: str) -> float:
    """Olive's ``auroc``: binary on the positive class's probability (softmax of two logits,
    or the single score as given); multiclass one-vs-rest on softmax probabilities."""
    logits = logits.reshape(len(true), -1)
    if task == "binary":
        scores = _softmax(logits)[:, 1] if logits.shape[1] == 2 else logits[:, -1]
        return binary_auroc(scores, true == 1)
    probs = _softmax(logits)
    classes = [c for c in range(probs.shape[1]) if np.any(true == c)]
    values = np.asarray([binary_auroc(probs[:, c], true == c) for c in classes])
    if average == "weighted":
        support = np.asarray([np.sum(true == c) for c in classes], dtype=np.float64)
        return float(np.dot(values, support) / support.sum())
    return float(values.mean()) if len(values) else 0.0


def score(name: str, backend: str, pred: np.ndarray, true: np.ndarray, logits: np.ndarray | None,
          cfg: Mapping[str, Any]) -> float:
    """One sub-metric's value for predictions ``pred`` against labels ``true``."""
    binary_labels = bool(np.isin(np.union1d(pred, true), (0, 1)).all())
    if backend == "huggingface_metrics":
        params = dict(cfg.get("compute_params") or {})
        if name == "accuracy":
            return float(np.mean(pred == true))
        average = params.get("average", "binary" if binary_labels else "macro")
        return _prf(name, pred, true, average, int(params.get("pos_label", 1)))
    task = cfg.get("task") or ("binary" if binary_labels else "multiclass")
    if name == "accuracy_score":
        if task == "multiclass" and cfg.get("average") in ("macro", "weighted"):
            return _prf("recall", pred, true, str(cfg["average"]), 1)
        return float(np.mean(pred == true))
    if name == "auroc":
        if logits is None:
            raise ValueError("auroc needs the model's scores")
        return auroc(logits, true, task, str(cfg.get("average") or "macro"))
    kind = {"f1_score": "f1", "precision": "precision", "recall": "recall"}[name]
    average = "binary" if task == "binary" else str(cfg.get("average") or "macro")
    return _prf(kind, pred, true, average, 1)
