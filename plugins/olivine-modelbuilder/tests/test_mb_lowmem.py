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
from mb_helpers import genai_greedy

from olivine_modelbuilder.lowmem import low_memory_quantization


def _build(source: Path, out: Path, precision: str, options: dict[str, str], low_memory: bool,
           must_stream: bool = True, provider: str = "cpu", spill: bool = False) -> None:
    from onnxruntime_genai.models import builder

    from olivine_modelbuilder.lowmem import _builder_model_classes

    pairs = [f"{key}={value}" for key, value in options.items()]
    cache = tempfile.mkdtemp(prefix="olivine-lowmem-test-")
    prepared = builder.parse_extra_options(None, str(source), str(out), precision, provider, cache, pairs)
    if not low_memory or not must_stream:
        with low_memory_quantization(out if spill else None) if low_memory \
                else contextlib.nullcontext():
            builder.create_model(None, str(source), str(out), precision, provider, cache, **prepared)
        return
    classes = _builder_model_classes()
    originals = [cls.__dict__["to_nbits"] for cls in classes]

    def refuse(self: Any) -> Any:
        raise AssertionError("the builder's whole-graph quantizer ran")

    for cls in classes:
        cls.to_nbits = refuse  # the fallback would call this
    try:
        with low_memory_quantization(out if spill else None):
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

    With 48 columns per chunk every weight is quantized in pieces (the last one short), cut
    from the cast float32 array instead of from the builder's torch source, and the
    quantized tensors past the first 4 kB wait in a spill file until the model is saved.
    """
    from olivine_modelbuilder import lowmem

    monkeypatch.setattr(lowmem, "COLUMNS_PER_CHUNK", columns)
    if columns == 48:
        monkeypatch.setattr(lowmem, "_source", lambda tensor: None)
        spilled = _spilling(monkeypatch)
    _same(tied_model, tmp_path, "int4", {}, spill=columns == 48)
    if columns == 48:
        assert spilled and spilled[0] > 0
    assert any(node[0] == "GatherBlockQuantized" for node in _contents(tmp_path / "olivine")[0])


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("options", [
    {"algo_config": "rtn_last"},
    {"algo_config": "rtn_last", "block_size": "128"},
    {"algo_config": "rtn", "is_symmetric": "false", "block_size": "16"},
    {"algo_config": "rtn_last", "is_symmetric": "false", "accuracy_level": "0"},
])
def test_same_model_as_the_builders_rtn(trained_model: Path, tied_model: Path, tmp_path: Path,
                                        options: dict[str, str], tied: bool, tokenizer: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """rtn and rtn_last (8-bit LM head; tied: the shared table 8-bit too), streamed; the
    default options' model generates in onnxruntime-genai.

    Block 128 on these 64-wide layers pads every row to one block; at most 40 columns and
    1000 elements per chunk quantize every weight in pieces (the last one short), and the
    float initializers (the untied embedding table) are written 15 rows at a time. The
    chunks are quantized on three threads, several in flight, and joined in order. The
    quantized tensors past the first 4 kB wait in a spill file until the model is saved.
    """
    from olivine_modelbuilder import lowmem

    spilled = _spilling(monkeypatch)

    monkeypatch.setenv("OLIVINE_QUANT_THREADS", "3")
    monkeypatch.setattr(lowmem, "COLUMNS_PER_CHUNK", 40)
    monkeypatch.setattr(lowmem, "ELEMENTS_PER_CHUNK", 1000)
    monkeypatch.setattr(lowmem, "SAVE_IN_ROWS_BYTES", 0)
    _same(tied_model if tied else trained_model, tmp_path, "int4", options, ordered=False,
          spill=True)
    assert spilled and spilled[0] > 0
    nodes = _contents(tmp_path / "olivine")[0]
    bits = {node[2]: dict(node[5])["bits"] for node in nodes if node[0] in
            ("MatMulNBits", "GatherBlockQuantized")}
    last = "8" if options["algo_config"] == "rtn_last" else "4"
    assert bits.pop("/lm_head/MatMul_Q" + last) == last
    if tied:
        assert bits.pop("/model/embed_tokens/GatherBlockQuantized") == last
    assert set(bits.values()) == {"4"}
    if options == {"algo_config": "rtn_last"}:  # it loads and generates in onnxruntime-genai
        prompt = [int(i) for i in tokenizer.encode("Shall I compare thee")]
        tokens = genai_greedy(tmp_path / "olivine", prompt, 8, suppress_eos=True)
        assert len(tokens) == 8
        assert tokens == genai_greedy(tmp_path / "builder", prompt, 8, suppress_eos=True)


def test_same_model_for_rtn_with_mixed_layers(trained_model: Path, tmp_path: Path) -> None:
    """Per-node bits in general: the builder's k-quant-style layer selection, 8-bit, with rtn."""
    _same(trained_model, tmp_path, "int4", {"algo_config": "rtn",
                                            "matmul_mixed_precision": "mixed_layers:int8"},
          ordered=False)
    nodes = _contents(tmp_path / "olivine")[0]
    assert {dict(node[5])["bits"] for node in nodes if node[0] == "MatMulNBits"} == {"4", "8"}


def test_same_model_for_default_with_per_node_bits(trained_model: Path, tmp_path: Path) -> None:
    """The MLAS quantizer with an 8-bit LM head (untied), as the builder's two passes give."""
    _same(trained_model, tmp_path, "int4", {"matmul_mixed_precision": "last_matmul:int8"})
    nodes = _contents(tmp_path / "olivine")[0]
    assert [node[2] for node in nodes if dict(node[5]).get("bits") == "8"] == ["/lm_head/MatMul_Q8"]


def test_same_model_for_cuda_rtn_last(tied_model: Path, tmp_path: Path) -> None:
    """float16 weights: float16 scales, the same levels."""
    _same(tied_model, tmp_path, "int4", {"algo_config": "rtn_last"}, provider="cuda",
          ordered=False)
    tensors = _contents(tmp_path / "olivine")[1]
    assert tensors["lm_head.MatMul.weight_scale"].dtype == np.float16


def test_settings_it_does_not_handle_fall_back(tied_model: Path, tmp_path: Path) -> None:
    """k_quant, and an embedding table to quantize (tied, asymmetric), take the builder's path."""
    _same(tied_model, tmp_path / "k", "int4", {"algo_config": "k_quant"}, must_stream=False)
    _same(tied_model, tmp_path / "asym", "int4", {"is_symmetric": "false"}, must_stream=False)


def _spilling(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spill past 4 kB, copied back 1000 bytes at a time; the returned list gets the bytes
    spilled when the spill closes."""
    from olivine_modelbuilder import spill

    monkeypatch.setattr(spill, "SPILL_AFTER_BYTES", 4096)
    monkeypatch.setattr(spill, "SPILL_COPY_BYTES", 1000)
    spilled: list[int] = []
    close = spill.Spill.close

    def recording_close(self: Any) -> None:
        spilled.append(self._offset)
        close(self)

    monkeypatch.setattr(spill.Spill, "close", recording_close)
    return spilled


def _same(model: Path, tmp_path: Path, precision: str, options: dict[str, str],
          must_stream: bool = True, provider: str = "cpu", ordered: bool = True,
          spill: bool = False) -> None:
    """Both ways give the same nodes, opsets and tensors (bit for bit).

    ``ordered=False``: the same nodes in another order (onnxruntime's ``rtn`` quantizer
    appends its nodes and re-sorts the graph; olivine replaces each node where it is).
    ``spill``: olivine's build spills quantized tensors into its output folder, which
    holds only the builder's files afterwards.
    """
    _build(model, tmp_path / "builder", precision, options, low_memory=False, provider=provider)
    _build(model, tmp_path / "olivine", precision, options, low_memory=True,
           must_stream=must_stream, provider=provider, spill=spill)
    if spill:
        assert sorted(p.name for p in (tmp_path / "olivine").iterdir()) == \
            sorted(p.name for p in (tmp_path / "builder").iterdir())
    nodes_b, tensors_b, opsets_b = _contents(tmp_path / "builder")
    nodes_o, tensors_o, opsets_o = _contents(tmp_path / "olivine")
    assert any(node[0] == "MatMulNBits" for node in nodes_o)
    if not ordered:
        nodes_b, nodes_o = (sorted(nodes, key=repr) for nodes in (nodes_b, nodes_o))
    assert nodes_o == nodes_b
    assert opsets_o == opsets_b
    assert tensors_o.keys() == tensors_b.keys()
    for name, value in tensors_b.items():
        assert tensors_o[name].dtype == value.dtype, name
        np.testing.assert_array_equal(tensors_o[name], value, err_msg=name)


def test_ordered_map_keeps_order_bounds_memory_and_raises() -> None:
    """Chunks are quantized side by side but joined in order, with at most ``workers`` of them
    pending at once (a 7B model's LM head must not be read whole), and a failing chunk fails
    the weight."""
    import threading
    import time

    from olivine_modelbuilder.lowmem import _ordered_map

    lock = threading.Lock()
    running, most = 0, 0

    def slow(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002 * (i % 3))
        with lock:
            running -= 1
        return i * i

    assert list(_ordered_map(slow, list(range(40)), 3)) == [i * i for i in range(40)]
    assert 1 < most <= 3

    def boom(i: int) -> int:
        if i == 5:
            raise ValueError("chunk 5")
        return i

    with pytest.raises(ValueError, match="chunk 5"):
        list(_ordered_map(boom, list(range(10)), 2))


def test_the_pass_spills_into_its_own_folder_and_writes_the_same_model(
        trained_model: Path, build: Any, built: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ModelBuilder pass with a 4 kB spill budget: the same files, graph and external data
    as without one, and the scratch file gone from the step's output folder."""
    spilled = _spilling(monkeypatch)
    handle = build(trained_model, precision="int4")
    assert spilled and spilled[0] > 0
    reference = built("int4")
    got, want = Path(handle.path), Path(reference.path)
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in want.iterdir())
    assert (got / "model.onnx.data").read_bytes() == (want / "model.onnx.data").read_bytes()
    nodes, tensors, opsets = _contents(got)
    nodes_want, tensors_want, opsets_want = _contents(want)
    assert nodes == nodes_want and opsets == opsets_want
    assert tensors.keys() == tensors_want.keys()
