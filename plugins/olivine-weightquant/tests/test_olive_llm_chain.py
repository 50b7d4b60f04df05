"""Olive's CPU int4 LLM chain, as the recipes write it: gptq -> rtn (8-bit LM head and
embeddings) -> ModelBuilder int4. A tiny tied Qwen2 in; onnxruntime-genai runs the output.

The rtn step's output, loaded dequantized in torch, is the reference: ONNX Runtime computes the
same ``(q - zero) * scale`` weights, so last-token logits agree within 2e-3 of their range
(fp32 compute: accuracy_level 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("olivine_modelbuilder")


# in tox -e slow (and benchmarks/quality_spread.py): on this project's CI machine (an AMD EPYC)
# the default run took 19 minutes with these, over its 15
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tied_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 with tied embeddings, briefly trained (a few seconds)."""
    from olivine_modelbuilder.tinymodel import TinySpec, cached_model

    spec = TinySpec(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                    tie_word_embeddings=True, steps=40, seconds=None, batch_size=8, seq_len=32)
    return cached_model(spec, tmp_path_factory.mktemp("tied"))


def _workflow(tmp_path: Path, model: Path, calib: Path) -> dict[str, Any]:
    return {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "passes": {
            "g": {"type": "gptq", "bits": 4, "sym": False, "group_size": 32,
                  "data_files": [str(calib)], "max_samples": 8, "max_seq_len": 32},
            "r": {"type": "rtn", "bits": 8, "sym": False, "group_size": 32, "lm_head": True,
                  "embeds": True, "overrides": {"lm_head": {"bits": 8}, "model.embed_tokens": {"bits": 8}}},
            "m": {"type": "ModelBuilder", "precision": "int4", "int4_accuracy_level": 1},
        },
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 3,
    }


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_gptq_rtn_modelbuilder_chain_runs_in_genai(tmp_path: Path, tied_model: Path) -> None:
    import onnx
    import onnxruntime_genai as og
    import torch

    import olivine
    from olivine_modelbuilder.tinymodel import corpus_text
    from olivine_weightquant.hf_checkpoint import load_dequantized

    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text()[:20000], encoding="utf-8")
    result = olivine.run(_workflow(tmp_path, tied_model, calib))
    out = Path(result.output_dir)
    onnx_file = next(out.rglob("model.onnx"))
    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    ops = [n for n in graph.node]
    gathers = [n for n in ops if n.op_type == "GatherBlockQuantized"]
    assert len(gathers) == 1 and not any(n.op_type == "Gather" and "embed" in n.name for n in ops)
    assert {a.name: a.i for a in gathers[0].attribute}["bits"] == 8
    bits = sorted({a.i for n in ops if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"})
    assert bits == [4, 8]  # decoder layers 4, LM head 8

    rtn_model = result.report["steps"][1]["output_model"]
    rtn_folder = Path(rtn_model["path"])
    ids = [5, 17, 42, 7, 99, 3]
    model = og.Model(str(onnx_file.parent))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=32)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    onnx_logits = np.asarray(gen.get_output("logits"))[0, -1]
    torch_model = load_dequantized(rtn_folder)
    with torch.no_grad():
        ref = torch_model(torch.tensor([ids])).logits[0, -1].numpy()
    spread = float(ref.max() - ref.min())
    assert float(np.abs(onnx_logits - ref).max()) < 2e-3 * spread


def test_gptqmodel_with_olives_defaults_runs_in_genai(tmp_path: Path, tied_model: Path) -> None:
    """Olive's ``GptqModel`` with its defaults: one block per row (group_size -1),
    true_sequential, act-order, symmetric (and ``lm_head``, so that the reference holds every
    quantized weight). Every linear of this model has a
    power-of-two input size, so MatMulNBits runs blocks as long as the row; ONNX Runtime then
    computes the dequantized checkpoint's logits (within 2e-3 of their range, as above)."""
    import onnx
    import onnxruntime_genai as og
    import torch

    import olivine
    from olivine_modelbuilder.tinymodel import corpus_text
    from olivine_weightquant.hf_checkpoint import load_dequantized, quant_config_of, read_config

    calib = tmp_path / "calib.txt"
    calib.write_text(corpus_text()[:20000], encoding="utf-8")
    result = olivine.run({
        "input_model": {"type": "HfModel", "model_path": str(tied_model)},
        "passes": {"g": {"type": "GptqModel", "lm_head": True, "data_files": [str(calib)],
                         "max_samples": 8, "max_seq_len": 32},
                   "m": {"type": "ModelBuilder", "precision": "int4", "int4_accuracy_level": 1}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 3})
    gptq_folder = Path(result.report["steps"][0]["output_model"]["path"])
    qc = quant_config_of(read_config(gptq_folder))
    assert qc is not None and qc["group_size"] == -1 and qc["true_sequential"] and qc["sym"]
    onnx_file = next(Path(result.output_dir).rglob("model.onnx"))
    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    blocks = {(a.i, b.i) for n in graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "K" for b in n.attribute if b.name == "block_size"}
    assert blocks == {(64, 64), (128, 128)}, blocks  # one block per row: block_size == K

    ids = [5, 17, 42, 7, 99, 3]
    model = og.Model(str(onnx_file.parent))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=32)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    onnx_logits = np.asarray(gen.get_output("logits"))[0, -1]
    with torch.no_grad():
        ref = load_dequantized(gptq_folder)(torch.tensor([ids])).logits[0, -1].numpy()
    spread = float(ref.max() - ref.min())
    assert float(np.abs(onnx_logits - ref).max()) < 2e-3 * spread


def test_one_block_per_row_needs_a_power_of_two_row(tmp_path: Path, tiny_model: Any) -> None:
    """group_size -1 on a linear whose input size is no power of two (this model's MLP: 384):
    MatMulNBits cannot run it, so the run stops before quantizing anything, naming the linear
    and the block sizes that fit."""
    import olivine
    from olivine import PassError

    expected = r"down_proj: group_size -1 .*MatMulNBits.*\(16, 32, 64, 128\)"
    with pytest.raises(PassError, match=expected) as err:
        olivine.run({"input_model": {"type": "HfModel", "model_path": str(tiny_model.path)},
                     "passes": {"r": {"type": "Rtn", "group_size": -1}},
                     "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
                     "log_severity_level": 3})
    assert err.value.exit_code == 2  # a user's setting, not a crash
    assert not (tmp_path / "out").exists()
