"""Running MTEBEvaluator: the ONNX encoder mteb calls, task loading and result naming.

Imports numpy at module level and mteb in the functions; import this module lazily.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from olivine import EvalContext, HfModel, MetricConfig, ModelHandle, OnnxModel, UsageError, did_you_mean


def load_task(name: str) -> Any:
    """The MTEB task ``name`` with its data loaded (a UsageError names what is missing)."""
    import mteb

    try:
        task = mteb.get_task(name)
    except KeyError:
        names = [t.metadata.name for t in mteb.get_tasks()]
        raise UsageError(f"MTEBEvaluator: mteb knows no task {name!r}"
                         f"{did_you_mean(name, names)}") from None
    try:
        task.load_data()
    except Exception as exc:  # datasets raises many types when the hub cannot be reached
        dataset = getattr(task.metadata, "dataset", {}) or {}
        raise UsageError(f"MTEBEvaluator task {name!r} needs dataset {dataset.get('path', '?')!r}"
                         f", which could not be loaded (offline, or not in the local cache): "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                         ) from None
    return task


def _pooling(*folders: Path) -> str:
    """sentence-transformers' pooling mode saved beside the model (or its source model), else
    Olive's last token."""
    for cfg_file in [f for d in folders for f in sorted(d.glob("*Pooling/config.json"))]:
        cfg = json.loads(cfg_file.read_text())
        for mode in ("mean_tokens", "cls_token", "lasttoken"):
            if cfg.get(f"pooling_mode_{mode}"):
                return mode
    return "lasttoken"


class OnnxEncoder:
    """An ONNX embedding model as mteb's encoder: tokenize, run, pool, L2-normalize."""

    def __init__(self, model: OnnxModel, tokenizer_dir: Path, batch_size: int,
                 max_length: int | None, provider: str | None, provider_options: dict[str, Any],
                 source: Path | None = None, default_provider: str | None = None) -> None:
        from transformers import AutoTokenizer

        from olivine_evaluators.runtime import OnnxRunner

        self.runner = OnnxRunner(model, provider=provider, provider_options=provider_options,
                                 default_provider=default_provider)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.batch_size = batch_size
        limit = getattr(self.tokenizer, "model_max_length", 512)
        self.max_length = max_length or (limit if limit < 1_000_000 else 512)
        self.pooling = _pooling(*[p for p in (self.runner.path.parent, source) if p])

    @property
    def mteb_model_meta(self) -> Any:
        """An empty model description (mteb asks for one)."""
        from mteb.models.model_meta import ModelMeta

        return ModelMeta.create_empty()

    def encode(self, inputs: Any, **kwargs: Any) -> np.ndarray:
        """Embeddings of the sentences in ``inputs`` (mteb's batches of ``{"text": [...]}``)."""
        sentences: list[str] = []
        for batch in ([inputs] if isinstance(inputs, str) else inputs):
            if isinstance(batch, dict):
                sentences.extend(batch["text"])
            elif isinstance(batch, str):
                sentences.append(batch)
            else:
                sentences.extend(batch)
        out = []
        for start in range(0, len(sentences), self.batch_size):
            enc = self.tokenizer(sentences[start:start + self.batch_size], padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="np")
            feeds = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
            outputs = self.runner.run(feeds)
            # a pooled output when the model has one (not BERT's pooler_output: a classifier head)
            pooled = next((v for k, v in outputs.items() if "sentence" in k or "embedding" in k),
                          None)
            if pooled is None:
                out.append(self._pool(next(iter(outputs.values())), feeds["attention_mask"]))
            else:
                out.append(np.asarray(pooled, dtype=np.float32))
        emb = np.concatenate(out).astype(np.float32)
        return emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9, None)

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hidden = hidden.astype(np.float32)
        if self.pooling == "mean_tokens":
            m = mask[..., None].astype(np.float32)
            return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if self.pooling == "cls_token":
            return hidden[:, 0]
        last = np.clip(mask.sum(axis=1).astype(int) - 1, 0, None)
        return hidden[np.arange(hidden.shape[0]), last]

    @staticmethod
    def similarity(a: Any, b: Any) -> Any:
        """Cosine similarity of every pair (mteb's default)."""
        a, b = (np.asarray(x, dtype=np.float32) for x in (a, b))
        a = a / np.clip(np.linalg.norm(a, axis=-1, keepdims=True), 1e-9, None)
        b = b / np.clip(np.linalg.norm(b, axis=-1, keepdims=True), 1e-9, None)
        return a @ b.T

    @staticmethod
    def similarity_pairwise(a: Any, b: Any) -> Any:
        """Cosine similarity of matching rows."""
        a, b = (np.asarray(x, dtype=np.float32) for x in (a, b))
        a = a / np.clip(np.linalg.norm(a, axis=-1, keepdims=True), 1e-9, None)
        b = b / np.clip(np.linalg.norm(b, axis=-1, keepdims=True), 1e-9, None)
        return (a * b).sum(axis=-1)


def make_encoder(model: ModelHandle, cfg: Mapping[str, Any], context: EvalContext) -> Any:
    """mteb's encoder for ``model``: sentence-transformers (``hf``) or :class:`OnnxEncoder`."""
    kind = cfg.get("model_class") or ("hf" if isinstance(model, HfModel) else "ort")
    if kind == "hf" and isinstance(model, HfModel):
        from sentence_transformers import SentenceTransformer

        device = context.accelerator.device
        return SentenceTransformer(str(model.path), device="cuda" if device == "gpu" else device)
    if kind == "ort" and isinstance(model, OnnxModel):
        folder = Path(model.model_file()).parent
        tokenizer_dir = folder if (folder / "tokenizer_config.json").is_file() or not (
            context.reference) else Path(context.reference.path)
        # the model's inference_settings apply unless the options name a provider
        return OnnxEncoder(model, tokenizer_dir, int(cfg.get("batch_size", 32)),
                           cfg.get("max_length"), cfg.get("execution_provider"),
                           dict(cfg.get("provider_options") or {}),
                           Path(context.reference.path) if context.reference else None,
                           default_provider=context.accelerator.execution_provider)
    raise UsageError(f"MTEBEvaluator model_class {kind!r} cannot score a {model.kind} model")


def run_task(encoder: Any, task: Any, cfg: Mapping[str, Any]) -> dict[str, float]:
    """mteb's scores of ``task`` (a loaded mteb task) named as Olive names them:
    ``main_score``, and each split's (``test``, or ``test_SUBSET``) main score."""
    import mteb

    kwargs = {k: cfg[k] for k in ("eval_splits", "eval_subsets") if cfg.get(k)}
    results = mteb.MTEB(tasks=[task]).run(encoder, output_folder=cfg.get("output_folder"),
                                          overwrite_results=True, verbosity=0, **kwargs)
    out: dict[str, float] = {}
    for result in results:
        out["main_score"] = float(result.get_score())
        for split, scores in result.scores.items():
            for score in scores:
                subset = score.get("hf_subset", "")
                out[f"{split}_{subset}" if subset else split] = float(score.get("main_score", 0.0))
    return out


def evaluate_task(model: ModelHandle, metric: MetricConfig, context: EvalContext) -> dict[str, float]:
    """The metric's task on ``model``."""
    cfg = metric.user_config
    return run_task(make_encoder(model, cfg, context), load_task(str(cfg["tasks"][0])), cfg)
