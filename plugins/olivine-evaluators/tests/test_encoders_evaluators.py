"""olivine-evaluators: metrics through workflows, and the ``olivine benchmark`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import olivine
from olivine.testing import cli_main as main

SENTENCES = Path(__file__).resolve().parents[3] / "examples" / "minilm" / "sentences.jsonl"


def _data(name: str, path: Path, **pre: Any) -> dict[str, Any]:
    return {"name": name, "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_files": str(path)},
            "pre_process_data_config": {"max_length": 24, **pre},
            "dataloader_config": {"batch_size": 4}}


def test_latency_size_and_similarity(tiny_bert: Path, workflow: Any) -> None:
    cfg = workflow(
        {"type": "HfModel", "model_path": str(tiny_bert), "task": "feature-extraction"},
        {"export": {"type": "OnnxConversion"},
         "q": {"type": "OnnxDynamicQuantization"}},
        data_configs=[_data("sents", SENTENCES, max_samples=16)],
        evaluators={"e": {"metrics": [
            {"name": "lat", "type": "latency", "sub_types": [{"name": "p50"}, {"name": "p90"},
                                                              {"name": "max"}],
             "user_config": {"warmup_num": 2, "repeat_test_num": 8, "seq_len": 16,
                             "intra_op_num_threads": 1}},
            {"name": "tp", "type": "throughput", "sub_types": [{"name": "avg"}],
             "user_config": {"warmup_num": 1, "repeat_test_num": 4, "batch_size": 2,
                             "seq_len": 8}},
            {"name": "size", "type": "size_on_disk"},
            {"name": "sim", "type": "similarity", "data_config": "sents",
             "sub_types": [{"name": "cosine", "goal": {"type": "threshold", "value": 0.9}},
                           {"name": "min_cosine"}, {"name": "max_abs_diff"}]}]}},
        evaluator="e")
    result = olivine.run(cfg)
    m_in, m_out = result.metrics["input_model"], result.metrics["output_model"]
    assert set(m_out["lat"]) == {"p50", "p90", "max"}
    assert 0 < m_out["lat"]["p50"] <= m_out["lat"]["p90"] <= m_out["lat"]["max"]
    assert m_in["lat"]["p50"] > 0  # the HF input model is timed with torch
    assert m_out["tp"]["avg"] > 0
    assert m_out["size"]["bytes"] < m_in["size"]["bytes"]  # int8 ONNX vs float safetensors
    assert m_in["sim"] == {"cosine": 1.0, "min_cosine": 1.0, "max_abs_diff": 0.0}
    assert 0.9 <= m_out["sim"]["min_cosine"] <= m_out["sim"]["cosine"] < 1.0
    assert m_out["sim"]["max_abs_diff"] > 0
    assert result.report["goals"][0]["met"] is True


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_unreachable_goal_exits_3(exported_tiny_bert: Path, tiny_bert: Path, workflow: Any,
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = workflow(
        {"type": "HfModel", "model_path": str(tiny_bert), "task": "feature-extraction"},
        {"q": {"type": "OnnxConversion"}},
        evaluators={"e": {"metrics": [
            {"name": "lat", "type": "latency", "sub_types": [
                {"name": "p50", "goal": {"type": "threshold", "value": 1e-6}}],
             "user_config": {"warmup_num": 0, "repeat_test_num": 2, "seq_len": 8}}]}},
        evaluator="e", evaluate_input_model=False)
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", "--config", str(path)]) == 3
    assert "lat-p50" in capsys.readouterr().err


def test_accuracy_and_top1_agreement(tiny_classifier: Path, workflow: Any, tmp_path: Path) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = [json.loads(line)["text"] for line in SENTENCES.read_text().splitlines()[:12]]
    tok = AutoTokenizer.from_pretrained(str(tiny_classifier))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_classifier)).eval()
    enc = tok(texts, padding="max_length", max_length=24, truncation=True, return_tensors="pt")
    with torch.no_grad():
        torch_pred = model(**enc).logits.argmax(-1).numpy()
    labels = torch_pred.copy()
    labels[:3] = (labels[:3] + 1) % 3  # three wrong labels: accuracy 9/12
    data = tmp_path / "labelled.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": int(lbl)})
                              for t, lbl in zip(texts, labels)))
    cfg = workflow(
        {"type": "HfModel", "model_path": str(tiny_classifier), "task": "text-classification"},
        {"export": {"type": "OnnxConversion"}},
        data_configs=[_data("labelled", data, label_col="label")],
        evaluators={"e": {"metrics": [
            {"name": "acc", "type": "accuracy", "data_config": "labelled",
             "sub_types": [{"name": "accuracy_score"}, {"name": "f1_score"}]},
            {"name": "agree", "type": "similarity", "data_config": "labelled",
             "sub_types": [{"name": "top1_agreement"}]},
            # Olive's names under both backends, as the intel-bert and CLIP recipes write them
            {"name": "olive", "type": "accuracy", "data_config": "labelled", "sub_types": [
                {"name": "accuracy_score", "priority": 1,
                 "goal": {"type": "max-degradation", "value": 0.05}},
                {"name": "auroc", "metric_config": {"task": "multiclass", "num_classes": 3}},
                {"name": "f1_score", "metric_config": {"task": "multiclass",
                                                       "average": "weighted"}}]},
            {"name": "hf", "type": "accuracy", "backend": "huggingface_metrics",
             "data_config": "labelled", "sub_types": [
                 {"name": "accuracy"}, {"name": "f1", "metric_config": {
                     "compute_params": {"average": "macro"}}}]}]}},
        evaluator="e")
    result = olivine.run(cfg)
    out = result.metrics["output_model"]
    assert out["acc"]["accuracy_score"] == pytest.approx(9 / 12)
    assert result.metrics["input_model"]["acc"]["accuracy_score"] == pytest.approx(9 / 12)
    # Olive's default task is binary (class 1's F1) when the labels are 0/1; macro otherwise
    f1_score = pytest.importorskip("sklearn.metrics").f1_score

    binary = set(labels) | set(torch_pred) <= {0, 1}
    assert out["acc"]["f1_score"] == pytest.approx(
        f1_score(labels, torch_pred, average="binary" if binary else "macro", zero_division=0))
    assert out["agree"]["top1_agreement"] == 1.0
    assert np.all(labels[3:] == torch_pred[3:])
    assert out["olive"]["accuracy_score"] == out["hf"]["accuracy"] == pytest.approx(9 / 12)
    assert out["olive"]["f1_score"] == pytest.approx(
        f1_score(labels, torch_pred, average="weighted", zero_division=0))
    assert out["hf"]["f1"] == pytest.approx(
        f1_score(labels, torch_pred, average="macro", zero_division=0))
    assert 0 <= out["olive"]["auroc"] <= 1  # the formula: test_binary_scores_match_scikit_learn
    assert result.report["goals"][0]["metric"] == "olive-accuracy_score"


USER_METRIC = '''
import numpy as np

def mean_norm(model, data, scale=1.0):
    norms = [np.linalg.norm(model.run(b)["last_hidden_state"], axis=-1).mean()
             for b in data.batches]
    return {"norm": float(np.mean(norms)) * scale, "batches": len(data.batches)}
'''


def test_custom_user_function(exported_tiny_bert: Path, workflow: Any, tmp_path: Path) -> None:
    script = tmp_path / "metric.py"
    script.write_text(USER_METRIC)
    cfg = workflow(
        {"type": "ONNXModel", "model_path": str(exported_tiny_bert)},
        {"q": {"type": "OnnxDynamicQuantization"}},
        data_configs=[_data("sents", SENTENCES, max_samples=8)],
        evaluators={"e": {"metrics": [
            {"name": "mine", "type": "custom", "data_config": "sents",
             "sub_types": [{"name": "norm", "higher_is_better": True}, {"name": "batches"}],
             "user_config": {"user_script": str(script), "evaluate_func": "mean_norm",
                             "evaluate_func_kwargs": {"scale": 2.0}}}]}},
        evaluator="e")
    out = olivine.run(cfg).metrics["output_model"]["mine"]
    assert out["batches"] == 2 and out["norm"] > 0


def test_perplexity_onnx_matches_torch(tiny_gpt2: Path, workflow: Any) -> None:
    cfg = workflow(
        {"type": "HfModel", "model_path": str(tiny_gpt2), "task": "text-generation"},
        {"export": {"type": "OnnxConversion"}},
        data_configs=[_data("sents", SENTENCES, max_samples=8, padding="longest")],
        evaluators={"e": {"metrics": [{"name": "ppl", "type": "perplexity",
                                       "data_config": "sents"}]}},
        evaluator="e")
    result = olivine.run(cfg)
    ppl_in = result.metrics["input_model"]["ppl"]["perplexity"]
    ppl_out = result.metrics["output_model"]["ppl"]["perplexity"]
    assert ppl_out == pytest.approx(ppl_in, rel=1e-3)
    assert ppl_out > 10  # random weights over a few hundred words: far from confident


def test_benchmark_command(exported_tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "-m", str(exported_tiny_bert), "--json", "--runs", "5",
                 "--seq_len", "16", "--batch_size", "2", "--threads", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "onnx" and data["batch_size"] == 2 and data["seq_len"] == 16
    lat = data["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]
    assert data["throughput_samples_per_s"] > 0
    assert main(["benchmark", "-m", str(exported_tiny_bert / "model.onnx"), "--runs", "2"]) == 0
    assert "latency ms: avg" in capsys.readouterr().out


def test_benchmark_bad_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "-m", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_binary_scores_match_scikit_learn() -> None:
    """Olive's torch_metrics defaults (task binary): class 1's precision, recall and F1; auroc
    on the softmax of two logits (ties between scores count half)."""
    import numpy as np

    from olivine_evaluators.classify import score

    sk = pytest.importorskip("sklearn.metrics")  # lm-eval brings it
    f1_score, precision_score, recall_score = sk.f1_score, sk.precision_score, sk.recall_score
    roc_auc_score = sk.roc_auc_score

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((40, 2))
    true = rng.integers(0, 2, 40)
    pred = logits.argmax(-1)
    p1 = np.exp(logits[:, 1]) / np.exp(logits).sum(-1)
    assert score("auroc", "torch_metrics", pred, true, logits, {}) == pytest.approx(
        roc_auc_score(true, p1))
    tied = np.round(logits[:, :1], 1)  # one score column, used as given: tied scores
    assert score("auroc", "torch_metrics", pred, true, tied, {}) == pytest.approx(
        roc_auc_score(true, tied[:, 0]))
    for name, fn in (("f1_score", f1_score), ("precision", precision_score),
                     ("recall", recall_score)):
        assert score(name, "torch_metrics", pred, true, logits, {}) == pytest.approx(
            fn(true, pred))
    assert score("f1", "huggingface_metrics", pred, true, None, {}) == pytest.approx(
        f1_score(true, pred))
    three = rng.standard_normal((60, 3))
    labels3 = rng.integers(0, 3, 60)
    probs = np.exp(three) / np.exp(three).sum(-1, keepdims=True)
    for average in ("macro", "weighted"):
        assert score("auroc", "torch_metrics", three.argmax(-1), labels3, three,
                     {"task": "multiclass", "average": average}) == pytest.approx(
            roc_auc_score(labels3, probs, multi_class="ovr", average=average))


def test_accuracy_names_checked_per_backend(tiny_classifier: Path, workflow: Any, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = workflow(
        {"type": "HfModel", "model_path": str(tiny_classifier), "task": "text-classification"},
        {"export": {"type": "OnnxConversion"}},
        data_configs=[_data("labelled", SENTENCES)],
        evaluators={"e": {"metrics": [
            {"name": "a", "type": "accuracy", "data_config": "labelled",
             "sub_types": [{"name": "f1"}, {"name": "auroc", "metric_config": {"top_k": 2}}]},
            {"name": "b", "type": "accuracy", "backend": "huggingface_metrics",
             "data_config": "labelled", "sub_types": [{"name": "accuracy_score"}]},
            {"name": "c", "type": "latency", "backend": "sklearn"}]}},
        evaluator="e")
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", "--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "evaluators.e.metrics[0].sub_types[0].name: 'f1' is not a torch_metrics" in err
    assert "evaluators.e.metrics[0].sub_types[1].metric_config.top_k: not supported" in err
    assert "metrics[1].sub_types[0].name: 'accuracy_score' is not a huggingface_metrics" in err
    assert "evaluators.e.metrics[2].backend: expected torch_metrics or huggingface_metrics" in err
