"""The low-memory quantizer writes exactly what the builder's own quantizer writes.

olivine swaps the builder's whole-graph ``to_nbits`` for one that quantizes one weight at
a time (see ``olivine_modelbuilder.lowmem``). These tests build the same model both ways
with the builder called directly and compare every node and every tensor.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from olivine_modelbuilder.lowmem import low_memory_quantization


def _build(source: Path, out: Path, precision: str, options: dict[str, str], low_memory: bool,
           must_stream: bool = True, provider: str = "cpu") -> None:
    from onnxruntime_genai.models import builder

    from olivine_modelbuilder.lowmem import _builder_model_classes

    pairs = [f"{key}={value}" for key, value in options.items()]
    cache = tempfile.mkdtemp(prefix="olivine-lowmem-test-")
    prepared = builder.parse_extra_options(None, str(source), str(out), precision, provider, cache, pairs)
    if not low_memory or not must_stream:
        with low_memory_quantization() if low_memory else contextlib.nullcontext():
            builder.create_model(None, str(source), str(out), precision, provider, cache, **prepared)
        return
    classes = _builder_model_classes()
    originals = [cls.__dict__["to_nbits"] for cls in classes]

    def refuse(self: Any) -> Any:
        raise AssertionError("the builder's whole-graph quantizer ran")

    for cls in classes:
        cls.to_nbits = refuse  # the fallback would call this
    try:
        with low_memory_quantization():
            builder.create_model(None, str(source), str(out), precision, provider, cache, **prepared)
    finally:
        for cls, original in zip(classes, originals, strict=True):
            cls.to_nbits = original


def _contents(folder: Path) -> tuple[list[Any], dict[str, np.ndarray], dict[str, int]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"))
    nodes = [(n.op_type, n.domain, n.name, list(n.input), list(n.output),
              sorted((a.name, repr(onnx.helper.get_attribute_value(a))) for a in n.attribute))
             for n in model.graph.node]
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    opsets = {o.domain: o.version for o in model.opset_import}
    return nodes, tensors, opsets


@pytest.fixture(scope="module")
def tied_model(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Qwen2 like the trained one but with tied embeddings (as Qwen2.5-0.5B has)."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tied")
    config = AutoConfig.from_pretrained(trained_model)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for item in trained_model.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
            shutil.copy(item, folder / item.name)
    return folder


@pytest.mark.parametrize("precision,options", [
    ("int4", {}),
    ("int4", {"is_symmetric": "false", "block_size": "16"}),
    ("int4", {"accuracy_level": "4", "exclude_lm_head": "true"}),
    ("int8", {}),
])
def test_same_model_as_the_builders_quantizer(trained_model: Path, tmp_path: Path, precision: str,
                                              options: dict[str, str]) -> None:
    _same(trained_model, tmp_path, precision, options)


def test_same_model_for_cuda_fp16_weights(trained_model: Path, tmp_path: Path) -> None:
    """An int4 build for CUDA keeps float16 weights and scales (built here, no GPU needed)."""
    _same(trained_model, tmp_path, "int4", {}, provider="cuda")
    tensors = _contents(tmp_path / "olivine")[1]
    assert tensors["model.layers.0.attn.o_proj.MatMul.weight_scales"].dtype == np.float16


@pytest.mark.parametrize("columns", [8192, 48])
def test_same_model_with_tied_embeddings(tied_model: Path, tmp_path: Path, columns: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Tied int4: the embedding reads the quantized lm_head through GatherBlockQuantized.

    With 48 columns per chunk every weight is quantized in pieces (the last one short).
    """
    from olivine_modelbuilder import lowmem

    monkeypatch.setattr(lowmem, "COLUMNS_PER_CHUNK", columns)
    _same(tied_model, tmp_path, "int4", {})
    assert any(node[0] == "GatherBlockQuantized" for node in _contents(tmp_path / "olivine")[0])


def test_settings_it_does_not_handle_fall_back(tied_model: Path, tmp_path: Path) -> None:
    """k_quant, and an embedding table to quantize (tied, asymmetric), take the builder's path."""
    _same(tied_model, tmp_path / "k", "int4", {"algo_config": "k_quant"}, must_stream=False)
    _same(tied_model, tmp_path / "asym", "int4", {"is_symmetric": "false"}, must_stream=False)


def _same(model: Path, tmp_path: Path, precision: str, options: dict[str, str],
          must_stream: bool = True, provider: str = "cpu") -> None:
    _build(model, tmp_path / "builder", precision, options, low_memory=False, provider=provider)
    _build(model, tmp_path / "olivine", precision, options, low_memory=True,
           must_stream=must_stream, provider=provider)
    nodes_b, tensors_b, opsets_b = _contents(tmp_path / "builder")
    nodes_o, tensors_o, opsets_o = _contents(tmp_path / "olivine")
    assert any(node[0] == "MatMulNBits" for node in nodes_o)
    assert nodes_o == nodes_b
    assert opsets_o == opsets_b
    assert tensors_o.keys() == tensors_b.keys()
    for name, value in tensors_b.items():
        assert tensors_o[name].dtype == value.dtype, name
        np.testing.assert_array_equal(tensors_o[name], value, err_msg=name)
