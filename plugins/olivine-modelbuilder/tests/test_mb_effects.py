"""Each ModelBuilder option changes the output the way it says (pass run in this process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mb_helpers import genai_greedy, graph, node_attrs, op_counts

from olivine import Accelerator


def inputs_of(node_op: str, handle: Any) -> list[list[str]]:
    return [list(n.input) for n in graph(handle).node if n.op_type == node_op]


def initializer(handle: Any, name: str) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(Path(handle.path) / handle.onnx_file_name))
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def genai_config(handle: Any) -> dict[str, Any]:
    return json.loads((Path(handle.path) / "genai_config.json").read_text())


def test_output_folder_holds_what_genai_needs(built: Any) -> None:
    handle = built("int4")
    names = {p.name for p in Path(handle.path).iterdir()}
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja"} <= names
    assert handle.onnx_file_name == "model.onnx"
    assert handle.attrs_dict()["is_generative"] is True
    assert "<|im_start|>assistant" in (Path(handle.path) / "chat_template.jinja").read_text()


@pytest.mark.parametrize("precision,matmul_ops,bits", [("fp32", "MatMul", None),
                                                       ("int8", "MatMulNBits", 8),
                                                       ("int4", "MatMulNBits", 4)])
def test_precision(built: Any, precision: str, matmul_ops: str, bits: int | None) -> None:
    handle = built(precision)
    ops = op_counts(handle)
    assert ops[matmul_ops] == 11  # 2 layers x (qkv, o, gate, up, down) + lm_head
    if bits is None:
        assert ops["MatMulNBits"] == 0
    else:
        assert {a["bits"] for a in node_attrs(handle, "MatMulNBits")} == {bits}
        assert {a["block_size"] for a in node_attrs(handle, "MatMulNBits")} == {32}


@pytest.mark.parametrize("size", [16, 64, 256])
def test_block_size(trained_model: Path, build: Any, size: int) -> None:
    handle = build(trained_model, precision="int4", int4_block_size=size)
    assert {a["block_size"] for a in node_attrs(handle, "MatMulNBits")} == {size}
    assert genai_greedy(handle.path, [5, 6, 7], 3)


def test_block_size_applies_to_int8(trained_model: Path, build: Any) -> None:
    handle = build(trained_model, precision="int8", int4_block_size=64)
    assert {(a["bits"], a["block_size"]) for a in node_attrs(handle, "MatMulNBits")} == {(8, 64)}


def test_symmetric_has_no_zero_points_and_asymmetric_has(built: Any, trained_model: Path,
                                                         build: Any) -> None:
    assert all(len(i) == 3 for i in inputs_of("MatMulNBits", built("int4")))
    handle = build(trained_model, precision="int4", int4_is_symmetric=False)
    assert all(len(i) == 4 and i[3].endswith("zero_points") for i in inputs_of("MatMulNBits", handle))
    assert genai_greedy(handle.path, [5, 6, 7], 3)


def test_accuracy_level(built: Any, trained_model: Path, build: Any) -> None:
    assert {a["accuracy_level"] for a in node_attrs(built("int4"), "MatMulNBits")} == {4}  # cpu
    handle = build(trained_model, precision="int4", int4_accuracy_level=1)
    assert {a["accuracy_level"] for a in node_attrs(handle, "MatMulNBits")} == {1}


def test_algorithm_rtn_and_k_quant(built: Any, trained_model: Path, build: Any) -> None:
    default = built("int4")
    rtn = build(trained_model, precision="int4", int4_algo="rtn")
    k_quant = build(trained_model, precision="int4", int4_algo="k_quant")
    # ORT's default quantizer and the rtn/k_quant one name their weights differently
    assert inputs_of("MatMulNBits", default)[0][1].endswith("weight_Q4")
    assert inputs_of("MatMulNBits", rtn)[0][1].endswith("weight_Q4G32")
    # k_quant searches scales and always stores zero points (is_symmetric does not apply)
    assert all(len(i) == 4 and i[3].endswith("_zp") for i in inputs_of("MatMulNBits", k_quant))
    assert all(len(i) == 3 for i in inputs_of("MatMulNBits", rtn))
    name = inputs_of("MatMulNBits", k_quant)[0][2]
    assert not np.allclose(initializer(rtn, inputs_of("MatMulNBits", rtn)[0][2]),
                           initializer(k_quant, name))
    assert genai_greedy(k_quant.path, [5, 6, 7], 3)


def test_mixed_precision_alias_keeps_lm_head_in_int8(trained_model: Path, build: Any) -> None:
    handle = build(trained_model, precision="int4", int4_algo="k_quant_last")
    bits = {list(n.input)[1].split(".")[0]: a["bits"] for n, a in zip(
        [n for n in graph(handle).node if n.op_type == "MatMulNBits"],
        node_attrs(handle, "MatMulNBits"))}
    assert bits["lm_head"] == 8 and bits["model"] == 4


def test_execution_provider_override_builds_for_cuda(trained_model: Path, build: Any) -> None:
    handle = build(trained_model, accelerator=Accelerator(), precision="fp16",
                   execution_provider="cuda")
    cfg = genai_config(handle)
    assert [list(p) for p in cfg["model"]["decoder"]["session_options"]["provider_options"]] \
        == [["cuda"]]
    io = {i.name: i.type.tensor_type.elem_type for i in graph(handle).output}
    assert io["logits"] == 10  # float16
    assert handle.attrs_dict()["execution_provider"] == "cuda"


def test_execution_provider_defaults_to_the_accelerator(built: Any) -> None:
    cfg = genai_config(built("fp32"))
    assert cfg["model"]["decoder"]["session_options"]["provider_options"] == []  # CPU
    assert built("fp32").attrs_dict()["execution_provider"] == "cpu"


def test_exclude_embeds(trained_model: Path, build: Any) -> None:
    handle = build(trained_model, precision="fp32", exclude_embeds=True)
    names = [i.name for i in graph(handle).input]
    assert "inputs_embeds" in names and "input_ids" not in names


def test_exclude_lm_head(trained_model: Path, build: Any) -> None:
    handle = build(trained_model, precision="fp32", exclude_lm_head=True)
    assert next(o.name for o in graph(handle).output) == "hidden_states"
    assert op_counts(handle)["MatMul"] == 10


# ORT's quantizer divides by a zero scale for the all-zero padding row of the embedding
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_extra_options_pass_through(trained_model: Path, build: Any) -> None:
    handle = build(trained_model, precision="int4", extra_options={
        "op_types_to_quantize": ["MatMul", "Gather"], "filename": "decoder.onnx"})
    assert handle.onnx_file_name == "decoder.onnx"
    assert genai_config(handle)["model"]["decoder"]["filename"] == "decoder.onnx"
    assert op_counts(handle)["GatherBlockQuantized"] == 1  # the embedding, quantized too
    assert genai_greedy(handle.path, [5, 6, 7], 3)


def test_search_goes_into_genai_config(trained_model: Path, build: Any) -> None:
    handle = build(trained_model, precision="fp32", search={"max_length": 77, "top_k": 5,
                                                            "do_sample": True})
    search = genai_config(handle)["search"]
    assert (search["max_length"], search["top_k"], search["do_sample"]) == (77, 5, True)


def test_olive_flags_are_no_ops(built: Any, trained_model: Path, build: Any) -> None:
    handle = build(trained_model, precision="fp32", use_ort_genai=False, use_dynamo_exporter=True)
    assert genai_config(handle) == genai_config(built("fp32"))
    assert op_counts(handle) == op_counts(built("fp32"))
