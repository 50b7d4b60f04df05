"""``HfModel.io_config`` (Olive's IoConfig on the input model) drives ``OnnxConversion``:
input and output names, fixed sample shapes and types, dynamic axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import olivine


def test_hf_model_io_config_names_shapes_and_axes(tiny_bert: Path, workflow: Any) -> None:
    import onnxruntime as ort
    import torch
    from transformers import BertModel

    io = {"input_names": ["input_ids", "attention_mask"], "output_names": ["last_hidden_state"],
          "input_shapes": [[1, 12], [1, 12]], "input_types": ["int64", "int64"],
          "output_shapes": [[1, 12, 32]], "output_types": ["float32"],
          "dynamic_axes": {"input_ids": {"0": "batch", "1": "seq"},
                           "attention_mask": {"0": "batch", "1": "seq"},
                           "last_hidden_state": {"0": "batch", "1": "seq"}}}
    cfg = workflow({"type": "HfModel", "model_path": str(tiny_bert),
                    "task": "feature-extraction", "io_config": io},
                   {"convert": {"type": "OnnxConversion"}},
                   systems={"local": {"type": "LocalSystem", "isolation": "never"}})
    result = olivine.run(cfg)
    assert result.output_model is not None
    session = ort.InferenceSession(str(result.output_model.model_file()),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]
    assert session.get_inputs()[0].shape == ["batch", "seq"]
    ids = np.random.default_rng(0).integers(5, 50, (2, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    (got,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    model = BertModel.from_pretrained(str(tiny_bert), attn_implementation="eager").eval()
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    np.testing.assert_allclose(got, want.last_hidden_state.numpy(), atol=1e-4)
