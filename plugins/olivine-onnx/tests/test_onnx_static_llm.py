"""StaticLLM on a tiny ModelBuilder model, as the QNN GPU recipes chain it: GraphSurgeries
(RemoveRopeMultiCache, AttentionMaskToSequenceLengths) then StaticLLM. ONNX Runtime (CPU)
loads the result; input_ids has the fixed shape [batch_size, context_length], and the logits
equal the dynamic model's on the same inputs (the same graph: 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx_helpers import session

import olivine
from olivine import ConfigError
from olivine.testing import make_workflow

pytest.importorskip("olivine_modelbuilder")

QNN_GPU = {"local": {"type": "LocalSystem", "accelerators": [
    {"device": "gpu", "execution_providers": ["QNNExecutionProvider"]}]}}


SURGERIES = {"type": "GraphSurgeries", "surgeries": [
    {"surgeon": "RemoveRopeMultiCache"}, {"surgeon": "AttentionMaskToSequenceLengths"}],
    "save_as_external_data": True}


def _feeds(sess: Any, ids: np.ndarray) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for inp in sess.get_inputs():
        if inp.name == "input_ids":
            feeds[inp.name] = ids
        elif inp.name == "past_seq_len":
            feeds[inp.name] = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], np.int32)
        elif inp.name == "total_seq_len":
            feeds[inp.name] = np.array(ids.shape[1], np.int32).reshape(
                [d if isinstance(d, int) else 1 for d in inp.shape])
        elif inp.name.startswith("past_key_values"):
            feeds[inp.name] = np.zeros((1, 1, 0, 16), np.float32)
        else:
            raise AssertionError(f"unexpected input {inp.name}")
    return feeds


def test_static_llm_fixes_input_shapes_and_keeps_the_logits(tmp_path: Path, genai_model: Path) -> None:
    wf = make_workflow(tmp_path / "dyn", genai_model.parent, {"gs": SURGERIES})
    dynamic = olivine.run(wf).output_model.model_file()
    wf = make_workflow(tmp_path / "st", genai_model.parent, {
        "gs": SURGERIES, "st": {"type": "StaticLLM", "batch_size": 1, "context_length": 4}},
        systems=QNN_GPU)
    wf["engine"] = {"target": "local"}
    result = olivine.run(wf)
    static = result.output_model.model_file()
    sess = session(static)
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    assert inputs["input_ids"] == [1, 4]
    assert sess.get_outputs()[0].name == "logits"
    assert sess.get_outputs()[0].shape[:2] == [1, 4]
    assert (static.parent / "model.onnx.data").is_file()  # always saved with external data

    ids = np.array([[5, 17, 42, 7]], np.int64)
    got = sess.run(["logits"], _feeds(sess, ids))[0]
    dyn = session(dynamic)
    want = dyn.run(["logits"], _feeds(dyn, ids))[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

    cfg = json.loads((static.parent / "genai_config.json").read_text())
    decoder = cfg["model"]["decoder"]
    assert cfg["model"]["type"] == "decoder-pipeline"
    assert decoder["sliding_window"]["window_size"] == 4
    assert decoder["sliding_window"]["alignment"] == "left"
    assert decoder["inputs"]["past_sequence_length"] == "past_seq_len"
    assert decoder["session_options"]["provider_options"] == [{"qnn": {"backend_type": "gpu"}}]
    pipeline = decoder["pipeline"][0]["model_onnx"]
    assert pipeline["filename"] == "model.onnx"
    graph = onnx.load(str(static), load_external_data=False).graph
    assert pipeline["inputs"] == [i.name for i in graph.input]
    assert (static.parent / "tokenizer.json").is_file()


def test_static_llm_other_targets_are_a_config_error(tmp_path: Path, genai_model: Path) -> None:
    wf = make_workflow(tmp_path, genai_model, {"st": {"type": "StaticLLM"}})
    with pytest.raises(ConfigError) as info:
        olivine.validate(wf)
    assert "gpu target with QNNExecutionProvider; the target is cpu" in str(info.value)
