"""Metrics of an OpenVINO IR run on the OpenVINO runtime: latency and accuracy of an IR given
as Olive's ``OpenVINOModel`` input (the plugin's model kind read from input_model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")


def test_ir_input_model_latency_and_accuracy(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import olivine
    from olivine_testutil import tiny_bert_classifier, write_sentence_pairs

    model_dir = tiny_bert_classifier(tmp_path / "bert")
    net = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    pairs = write_sentence_pairs(tmp_path / "pairs.jsonl", 24)
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    # the feeds the data config below gives (token_type_ids too)
    feeds = [tok(r["sentence1"], r["sentence2"], return_tensors="pt", truncation=True,
                 max_length=32, padding="max_length") for r in rows]
    with torch.no_grad():
        margins = np.sort([float(torch.diff(net(**f).logits[0])) for f in feeds])
        # the head's bias moved to the widest gap between the 8th and 16th margins: torch
        # predicts each class for a third to two thirds of the pairs, so an IR answering one
        # class (or one row) for all scores at most 0.67
        i = 7 + int(np.argmax(np.diff(margins[7:16])))
        gap = float(margins[i + 1] - margins[i])
        net.classifier.bias[1] -= float(margins[i] + margins[i + 1]) / 2
        labels = [int(net(**f).logits.argmax(-1)) for f in feeds]
    assert 8 <= sum(labels) <= 16, labels
    assert gap > 0.01, gap  # each margin 0.005 or more from 0 (the IR's error is about 0.0014)
    net.save_pretrained(model_dir)
    pairs.write_text("".join(json.dumps({**r, "label": y}) + "\n"
                             for r, y in zip(rows, labels, strict=True)))
    # the IR: OpenVINOConversion of the model (one example; dynamic shapes)
    (tmp_path / "example.py").write_text(
        "from transformers import AutoTokenizer\n"
        f"def example():\n    return dict(AutoTokenizer.from_pretrained({str(model_dir)!r})("
        "'an example', 'pair', return_tensors='pt'))\n")
    conv = olivine.run({"input_model": {"type": "HfModel", "model_path": str(model_dir),
                                        "task": "text-classification"},
                        "passes": {"conv": {"type": "OpenVINOConversion", "static": False,
                                            "user_script": str(tmp_path / "example.py"),
                                            "example_input_func": "example"}},
                        "output_dir": str(tmp_path / "ir"), "cache_dir": str(tmp_path / "cache"),
                        "log_severity_level": 3})
    ir_dir = next(Path(conv.output_dir or "").rglob("*.xml")).parent
    tok.save_pretrained(ir_dir)
    wf = {"input_model": {"type": "OpenVINOModel", "model_path": str(ir_dir)},
          "data_configs": [{"name": "pairs", "type": "HuggingfaceContainer",
                            "load_dataset_config": {"data_files": str(pairs)},
                            "pre_process_data_config": {"input_cols": ["sentence1", "sentence2"],
                                                        "label_col": "label", "max_length": 32,
                                                        "padding": "max_length"}}],
          "evaluators": {"e": {"metrics": [
              {"name": "acc", "type": "accuracy", "data_config": "pairs",
               "sub_types": [{"name": "accuracy_score"}]},
              {"name": "lat", "type": "latency", "data_config": "pairs",
               "sub_types": [{"name": "avg"}, {"name": "p90"}],
               "user_config": {"warmup_num": 2, "repeat_test_num": 10}}]}},
          "evaluator": "e", "evaluate_input_model": True, "passes": {},
          "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
          "log_severity_level": 3}
    result = olivine.run(wf)
    measured = result.metrics["input_model"]
    flat = {f"{m}-{sub}": v for m, subs in measured.items() for sub, v in subs.items()}
    acc = next(v for k, v in flat.items() if k.startswith("acc"))
    lat = [v for k, v in flat.items() if k.startswith("lat")]
    assert acc == pytest.approx(1.0)  # the IR predicts what torch predicts on all 24 pairs
    assert all(0 < v < 1000 for v in lat) and len(lat) == 2
    assert np.isfinite(lat).all()
