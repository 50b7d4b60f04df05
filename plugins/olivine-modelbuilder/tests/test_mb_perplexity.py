"""A workflow reports the perplexity of the int4 model next to the torch model's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from olivine.testing import record_quality

pytest.importorskip("olivine_evaluators")


def held_back_text(folder: Path) -> Path:
    """Text the model never saw in training: the Python docs' own prose (pydoc_data)."""
    from pydoc_data.topics import topics

    lines = [line.strip() for text in list(topics.values())[:40] for line in text.splitlines()
             if len(line.split()) >= 8]
    path = folder / "held_back.txt"
    path.write_text("\n".join(lines[:64]) + "\n")
    return path


@pytest.mark.quality
def test_run_reports_int4_perplexity(trained_model: Path, tmp_path: Path, cli: Any) -> None:
    data = held_back_text(tmp_path)
    config = tmp_path / "wf.json"
    config.write_text(json.dumps({
        "input_model": {"type": "HfModel", "model_path": str(trained_model)},
        "data_configs": [{"name": "held_back", "load_dataset_config": {"data_files": str(data)},
                          "pre_process_data_config": {"max_length": 64}}],
        "evaluators": {"quality": {"metrics": [{
            "name": "ppl", "type": "perplexity", "data_config": "held_back",
            "sub_types": [{"name": "perplexity", "priority": 1,
                           "goal": {"type": "percent-max-degradation", "value": 25}}]}]}},
        "passes": {"builder": {"type": "ModelBuilder", "precision": "int4"}},
        "evaluator": "quality", "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"), "log_severity_level": 3}))
    code, out, err = cli("run", "--config", str(config))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    fp32 = report["metrics"]["input_model"]["ppl"]["perplexity"]
    int4 = report["metrics"]["output_model"]["ppl"]["perplexity"]
    # a trained model is far better than uniform guessing (vocab 1024) even on unseen prose,
    # and int4 costs it a little, not a lot
    assert 1 < fp32 < 1024 and 1 < int4 < 1024
    record_quality("modelbuilder_int4_vs_fp32_ppl", ratio=int4 / fp32)
    assert fp32 <= int4 * 1.02 and int4 < fp32 * 1.25  # int4/fp32 measured 1.004 .. 1.022
    assert "output model: ppl-perplexity=" in out
    assert report["goals"][0]["met"] is True
