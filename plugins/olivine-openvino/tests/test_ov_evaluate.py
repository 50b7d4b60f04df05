"""Metrics of an OpenVINO IR run on the OpenVINO runtime: latency and accuracy of an IR given
as Olive's ``OpenVINOModel`` input (the plugin's model kind read from input_model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")


def test_ir_input_model_latency_and_accuracy(tmp_path: Path) -> None:
    import openvino as ov
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import olivine
    from olivine_testutil import tiny_bert_classifier, write_sentence_pairs

    model_dir = tiny_bert_classifier(tmp_path / "bert")
    net = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    example = {k: torch.ones(1, 32, dtype=torch.int64) for k in ("input_ids", "attention_mask")}
    ir = ov.convert_model(torch.export.export(net, (), kwargs=example),
                          input=[("input_ids", [-1, -1]), ("attention_mask", [-1, -1])])
    (tmp_path / "ir").mkdir()
    ov.save_model(ir, str(tmp_path / "ir" / "model.xml"))
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp_path / "ir")
    pairs = write_sentence_pairs(tmp_path / "pairs.jsonl", 24)
    # labels: what torch predicts, so the IR's accuracy is its agreement with torch
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    for row in rows:
        enc = tok(row["sentence1"], row["sentence2"], return_tensors="pt", truncation=True,
                  max_length=32, padding="max_length", return_token_type_ids=False)
        with torch.no_grad():
            row["label"] = int(net(**enc).logits.argmax(-1))
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    wf = {"input_model": {"type": "OpenVINOModel", "model_path": str(tmp_path / "ir")},
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
