"""Quality metrics: similarity to the reference model, accuracy, perplexity, user functions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from olivine import EvalContext, MetricConfig, ModelHandle, SubMetric, UsageError
from olivine_evaluators.runtime import Runner, data_batches, dummy_feeds, make_runner

PREFERRED_OUTPUTS = ("sentence_embedding", "last_hidden_state", "logits")

#: Reference outputs by (reference path, data config, sample cap, output), kept for the process.
_REFERENCE_CACHE: dict[tuple[Any, ...], list[np.ndarray]] = {}


def _batches(model: ModelHandle, metric: MetricConfig, context: EvalContext) -> list[dict[str, Any]]:
    cfg = metric.user_config
    data = data_batches(model, metric, context, max_samples=cfg.get("max_samples"))
    if data is not None:
        return data.batches
    n = int(cfg.get("num_samples", 8))
    runner = make_runner(model)
    return [dummy_feeds(runner, int(cfg.get("batch_size", 1)), int(cfg.get("seq_len", 128)),
                        seed=i) for i in range(n)]


def pick_output(outputs: Mapping[str, np.ndarray], name: str | None, who: str) -> str:
    """The output to compare: ``name``, else a preferred field, else the first output."""
    if name is not None:
        if name not in outputs:
            raise UsageError(f"user_config.output_name: {who} has no output {name!r} "
                             f"(outputs: {', '.join(outputs)})")
        return name
    for candidate in PREFERRED_OUTPUTS:
        if candidate in outputs:
            return candidate
    return next(iter(outputs))


def sample_vectors(output: np.ndarray, mask: np.ndarray | None, pooling: str) -> np.ndarray:
    """One vector per sample: pooled token states, or the output's rows."""
    out = output.astype(np.float64)
    if out.ndim == 3 and pooling == "mean":
        if mask is None:
            return out.mean(axis=1)
        m = mask.astype(np.float64)[..., None]
        return (out * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    if out.ndim == 3 and pooling == "cls":
        return out[:, 0]
    return out.reshape(out.shape[0], -1)


def _run_all(runner: Runner, batches: list[dict[str, Any]], name: str | None,
             who: str) -> tuple[list[np.ndarray], str]:
    results = []
    chosen = name
    for batch in batches:
        outputs = runner.run(batch)
        chosen = pick_output(outputs, chosen, who)
        results.append(outputs[chosen])
    return results, str(chosen)


def similarity_metric(model: ModelHandle, metric: MetricConfig, context: EvalContext,
                      subs: list[str]) -> dict[str, float]:
    """Cosine of pooled outputs, top-1 agreement and max difference against the reference."""
    reference = context.reference
    if reference is None:
        raise UsageError(f"metric {metric.name!r} (similarity) needs a reference model")
    perfect = {"cosine": 1.0, "min_cosine": 1.0, "top1_agreement": 1.0, "max_abs_diff": 0.0}
    if reference.kind == model.kind and Path(reference.path) == Path(model.path):
        return {s: perfect[s] for s in subs}
    cfg = metric.user_config
    pooling = str(cfg.get("pooling", "mean"))
    if pooling not in ("mean", "cls", "none"):
        raise UsageError(f"user_config.pooling: expected mean, cls or none, got {pooling!r}")
    batches = _batches(model, metric, context)
    candidate, name = _run_all(make_runner(model, cfg), batches, cfg.get("output_name"),
                               f"model {model.path}")
    key = (reference.kind, reference.path, metric.data_config, cfg.get("max_samples"),
           cfg.get("num_samples"), cfg.get("seq_len"), name)
    if key not in _REFERENCE_CACHE:
        ref_runner = make_runner(reference)
        _REFERENCE_CACHE[key] = _run_all(ref_runner, batches, name, "the reference model")[0]
    expected = _REFERENCE_CACHE[key]
    cosines, agree, max_diff = [], [], 0.0
    for batch, got, want in zip(batches, candidate, expected, strict=True):
        if got.shape != want.shape:
            raise UsageError(f"output {name!r} has shape {list(got.shape)}, the reference's "
                             f"{list(want.shape)}")
        max_diff = max(max_diff, float(np.max(np.abs(got.astype(np.float64) - want))))
        a = sample_vectors(got, batch.get("attention_mask"), pooling)
        b = sample_vectors(want, batch.get("attention_mask"), pooling)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosines.extend(((a * b).sum(axis=1) / np.clip(norms, 1e-12, None)).tolist())
        agree.extend((a.argmax(axis=-1) == b.argmax(axis=-1)).tolist())
    values = {"cosine": float(np.mean(cosines)), "min_cosine": float(np.min(cosines)),
              "top1_agreement": float(np.mean(agree)), "max_abs_diff": max_diff}
    return {s: values[s] for s in subs}


def _label_ids(labels: list[Any], model: ModelHandle, context: EvalContext) -> np.ndarray:
    try:
        return np.asarray([int(x) for x in labels])
    except (TypeError, ValueError):
        pass
    for handle in (model, context.reference):
        if handle is None:
            continue
        folder = Path(handle.path)
        cfg_file = (folder.parent if folder.is_file() else folder) / "config.json"
        if cfg_file.is_file():
            label2id = json.loads(cfg_file.read_text()).get("label2id") or {}
            if all(str(x) in label2id for x in labels):
                return np.asarray([int(label2id[str(x)]) for x in labels])
    raise UsageError("accuracy: labels are not integers and the model's config.json has no "
                     "label2id that maps them")


def _post_processed(runner: Runner, data: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions from the data config's post_process_data component, called as Olive does:
    with the single output as a torch tensor, or a dict of every output's tensor; and the raw
    single output (the scores ``auroc`` reads), when there is one."""
    import importlib

    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        torch = None
    preds, raw = [], []
    for batch in data.batches:
        outputs = runner.run(batch)
        as_tensor = (lambda a: torch.from_numpy(np.asarray(a))) if torch is not None else np.asarray
        result = as_tensor(next(iter(outputs.values()))) if len(outputs) == 1 else \
            {k: as_tensor(v) for k, v in outputs.items()}
        pred = data.post_process(result)
        preds.append(pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred))
        first = np.asarray(next(iter(outputs.values())))
        raw.append(first.reshape(first.shape[0], -1))
    logits = np.concatenate(raw) if len(outputs) == 1 else None
    return np.concatenate([p.reshape(-1) for p in preds]), logits


def accuracy_metric(model: ModelHandle, metric: MetricConfig,
                    context: EvalContext) -> dict[str, float]:
    """Argmax predictions scored against the data config's labels, under Olive's names
    (every sub-metric of the backend when the metric names none)."""
    from olivine_evaluators.classify import HF_NAMES, TORCH_NAMES, score

    cfg = metric.user_config
    data = data_batches(model, metric, context, max_samples=cfg.get("max_samples"), required=True)
    if data.labels is None:
        raise UsageError(f"metric {metric.name!r} (accuracy): data config "
                         f"{metric.data_config!r} has no labels; set "
                         "pre_process_data_config.label_col")
    runner = make_runner(model, cfg)
    if getattr(data, "post_process", None) is not None:
        pred, logits = _post_processed(runner, data)
    else:
        outputs, _ = _run_all(runner, data.batches, cfg.get("output_name"), f"model {model.path}")
        flat = [o.reshape(o.shape[0], -1) for o in outputs]
        pred, logits = np.concatenate([f.argmax(axis=-1) for f in flat]), np.concatenate(flat)
    true = _label_ids(data.labels, model, context)[:len(pred)]
    backend = metric.backend or "torch_metrics"
    subs = metric.sub_types or [SubMetric(n) for n in (
        HF_NAMES if backend == "huggingface_metrics" else TORCH_NAMES)
        if logits is not None or n != "auroc"]
    try:
        return {s.name: score(s.name, backend, pred, true, logits, s.metric_config) for s in subs}
    except ValueError as exc:
        raise UsageError(f"metric {metric.name!r} (accuracy): {exc}") from None


def load_user_function(script: str, func: str) -> Any:
    """``func`` from the Python file ``script`` (relative paths from the working directory)."""
    from olivine import load_function

    return load_function(script, func, "user_config.user_script", "user_config.evaluate_func")


def custom_metric(model: ModelHandle, metric: MetricConfig, context: EvalContext) -> dict[str, float]:
    """Call the user's ``evaluate_func(model_runner, data, **evaluate_func_kwargs)``."""
    cfg = metric.user_config
    if not cfg.get("user_script") or not cfg.get("evaluate_func"):
        raise UsageError(f"metric {metric.name!r} ({metric.type}): user_config needs "
                         "user_script (a Python file) and evaluate_func (a function in it)")
    fn = load_user_function(str(cfg["user_script"]), str(cfg["evaluate_func"]))
    data = data_batches(model, metric, context, max_samples=cfg.get("max_samples"))
    result = fn(make_runner(model, cfg), data, **dict(cfg.get("evaluate_func_kwargs") or {}))
    names = [s.name for s in metric.sub_types] or [metric.name]
    if isinstance(result, int | float):
        if len(names) != 1:
            raise UsageError(f"evaluate_func returned one number, but metric {metric.name!r} has "
                             f"{len(names)} sub-metrics; return a dict")
        return {names[0]: float(result)}
    if isinstance(result, Mapping):
        missing = [n for n in names if n not in result]
        if missing:
            raise UsageError(f"evaluate_func returned no {', '.join(missing)} (it returned "
                             f"{', '.join(map(str, result))})")
        return {n: float(result[n]) for n in names}
    raise UsageError(f"evaluate_func returned {type(result).__name__}; expected a number or a dict")


def lm_feeds(runner: Runner, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs of a causal LM: ids, mask, position ids and empty past tensors as the model takes."""
    ids, mask = batch["input_ids"], batch.get("attention_mask", np.ones_like(batch["input_ids"]))
    feeds = {"input_ids": ids, "attention_mask": mask}
    names = runner.input_names
    if "position_ids" in names:
        feeds["position_ids"] = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int64)
    if any("past" in n for n in names):
        spec = runner.input_spec(ids.shape[0], ids.shape[1])
        for name in names:
            if "past" in name:
                shape, typ = spec[name]
                shape[2] = 0
                feeds[name] = np.zeros(shape, np.float16 if "float16" in typ else np.float32)
    return {k: v for k, v in feeds.items() if k in names}


def perplexity_metric(model: ModelHandle, metric: MetricConfig, context: EvalContext,
                      subs: list[str]) -> dict[str, float]:
    """exp(mean next-token cross-entropy) over the non-padding tokens of the data."""
    cfg = metric.user_config
    data = data_batches(model, metric, context, max_samples=cfg.get("max_samples"), required=True)
    runner = make_runner(model, cfg)
    total, count = 0.0, 0
    for batch in data.batches:
        outputs = runner.run(lm_feeds(runner, batch))
        wanted = cfg.get("output_name") or ("logits" if "logits" in outputs else None)
        logits = outputs[pick_output(outputs, wanted, f"model {model.path}")].astype(np.float64)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask", np.ones_like(ids))
        shifted = logits[:, :-1]
        top = shifted.max(axis=-1, keepdims=True)
        logz = np.log(np.exp(shifted - top).sum(axis=-1)) + top[..., 0]
        target = np.take_along_axis(shifted, ids[:, 1:, None], axis=-1)[..., 0]
        valid = (mask[:, 1:] * mask[:, :-1]).astype(bool)
        total += float((logz - target)[valid].sum())
        count += int(valid.sum())
    if count == 0:
        raise UsageError(f"metric {metric.name!r} (perplexity): the data has no text of two or "
                         "more tokens")
    loss = total / count
    values = {"loss": loss, "perplexity": float(np.exp(loss))}
    return {s: values[s] for s in subs}
