"""OnnxConversion's Olive options on tiny local models: each option's effect on the output,
ONNX Runtime against torch, and bad values as config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import olivine
from olivine.testing import cli_main as main


def _feeds(folder: Path, texts: list[str], length: int | None = None) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    padding: Any = "max_length" if length else True
    return {k: v.astype(np.int64) for k, v in tok(texts, padding=padding, truncation=bool(length),
                                                   max_length=length, return_tensors="np").items()}


def _bert_hidden(folder: Path, feeds: dict[str, np.ndarray], dtype: Any = None) -> np.ndarray:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager",
                                      **({"dtype": dtype} if dtype else {})).eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
    return out.float().numpy()


def _attributes(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "run.json").read_text())["output_model"]["attributes"])


def test_olive_nested_options_external_data_and_fixed_shapes(tiny_bert: Path, workflow: Any,
                                                             ort_session: Any) -> None:
    """The sam-vit-base recipes' form (options under ``config``), ``dynamic: false``, and the
    external-data options: one data file of the given name holding every tensor."""
    import onnx

    result = olivine.run(workflow(
        {"type": "HfModel", "model_path": str(tiny_bert), "task": "feature-extraction"},
        {"convert": {"type": "OnnxConversion", "config": {
            "target_opset": 20, "optimize": True, "dynamic": False, "device": "cpu",
            "save_as_external_data": True, "all_tensors_to_one_file": True,
            "external_data_name": "weights.bin", "size_threshold": 0}}}))
    out = result.output_dir
    assert out is not None
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".onnx", ".bin", ".data")) == \
        ["model.onnx", "weights.bin"]
    proto = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert proto.opset_import[0].version == 20 or \
        {o.domain: o.version for o in proto.opset_import}[""] == 20
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    # dynamic: false -> every input axis is the export sample's size (batch 2, 7 tokens)
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["input_ids"] == [2, 7] and all(d.dim_param == "" for i in proto.graph.input
                                                for d in i.type.tensor_type.shape.dim)
    feeds = _feeds(tiny_bert, ["the quick brown fox jumps over", "a cat"], length=7)
    got = ort_session(out).run(["last_hidden_state"], feeds)[0]
    # float32 export of a 2-layer BERT: measured max abs diff ~1e-6 (tolerance 1e-4)
    np.testing.assert_allclose(got, _bert_hidden(tiny_bert, feeds), atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_optimize_false_keeps_foldable_nodes(tiny_bert: Path, workflow: Any,
                                             ort_session: Any) -> None:
    """``optimize: false`` turns off constant folding: more nodes, the same outputs."""
    import onnx

    counts = {}
    feeds = _feeds(tiny_bert, ["the museum opens at nine", "children were playing outside"])
    for optimize in (True, False):
        result = olivine.run(workflow(
            {"type": "HfModel", "model_path": str(tiny_bert), "task": "feature-extraction"},
            {"convert": {"type": "OnnxConversion", "optimize": optimize}},
            output_dir=str(Path(workflow({}, {})["output_dir"]) / str(optimize))))
        out = result.output_dir
        assert out is not None
        counts[optimize] = len(onnx.load(str(out / "model.onnx")).graph.node)
        got = ort_session(out).run(["last_hidden_state"], feeds)[0]
        np.testing.assert_allclose(got, _bert_hidden(tiny_bert, feeds), atol=1e-4, rtol=1e-3)
    assert counts[False] > counts[True], counts


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_save_metadata_for_token_generation(tiny_gpt2: Path, workflow: Any,
                                            ort_session: Any) -> None:
    """The generation metadata Olive writes: config, generation config and a tokenizer with
    a pad token, consistent with each other and listed in ``additional_files``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = olivine.run(workflow(
        {"type": "HfModel", "model_path": str(tiny_gpt2), "task": "text-generation"},
        {"c": {"type": "OnnxConversion", "save_metadata_for_token_generation": True,
               "torch_dtype": "float32", "target_opset": 17}}))
    out = result.output_dir
    assert out is not None
    for name in ("config.json", "generation_config.json", "tokenizer_config.json",
                 "tokenizer.json"):
        assert (out / name).is_file(), name
    attrs = _attributes(out)
    listed = {Path(f).name for f in attrs["additional_files"]}
    assert {"config.json", "generation_config.json", "tokenizer_config.json"} <= listed
    assert attrs["hf_task"] == "text-generation" and attrs["type"] == "gpt2"
    cfg = json.loads((out / "config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(out))
    assert cfg["model_type"] == "gpt2" and cfg["n_layer"] == 2
    assert gen.get("eos_token_id") == cfg.get("eos_token_id")
    assert tok.pad_token is not None  # Olive pads with the end-of-sequence token if none
    # the model runs and matches torch
    ids = np.array([[5, 9, 12, 7]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    session = ort_session(out)
    got = session.run(["logits"], {k: v for k, v in feeds.items()
                                   if k in {i.name for i in session.get_inputs()}})[0]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2), attn_implementation="eager")
    with torch.no_grad():
        want = model.eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_torch_dtype_float16(tiny_bert: Path, workflow: Any, ort_session: Any,
                             tmp_path: Path) -> None:
    """``torch_dtype: float16`` exports a half model whose outputs follow torch's float16;
    ``user_script`` is imported before the export (with ``script_dir`` on sys.path)."""
    import onnx
    import torch

    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "marker_lib.py").write_text("def mark(path):\n    open(path, 'w').write('x')\n")
    script = tmp_path / "user_script.py"
    marker = tmp_path / "imported.txt"
    script.write_text(f"import marker_lib\nmarker_lib.mark({str(marker)!r})\n")
    result = olivine.run(workflow(
        {"type": "HfModel", "model_path": str(tiny_bert), "task": "feature-extraction"},
        {"c": {"type": "OnnxConversion", "torch_dtype": "torch.float16",
               "user_script": str(script), "script_dir": str(helpers)}}))
    out = result.output_dir
    assert out is not None and marker.is_file()
    proto = onnx.load(str(out / "model.onnx"))
    halves = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > len(proto.graph.initializer) // 2
    feeds = _feeds(tiny_bert, ["how do i reset it ?", "stocks fell"])
    got = ort_session(out).run(["last_hidden_state"], feeds)[0]
    assert got.dtype == np.float16
    # float16 on both sides: measured max abs diff ~2e-3 on unit-scale outputs (tolerance 1e-2)
    np.testing.assert_allclose(got.astype(np.float32), _bert_hidden(tiny_bert, feeds,
                                                                     torch.float16),
                               atol=1e-2, rtol=1e-2)
    assert _attributes(out)["torch_dtype"] == "float16"


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_image_classification_hf_model(tmp_path: Path, workflow: Any, ort_session: Any) -> None:
    """The microsoft-resnet-50 recipes' input: an image-classification HfModel with
    io_config input_shapes and no dynamic_axes, exported at those fixed shapes (as Olive)."""
    import onnx
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    folder = tmp_path / "tiny-resnet"
    torch.manual_seed(0)
    ResNetForImageClassification(ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
        num_labels=5)).eval().save_pretrained(str(folder))
    result = olivine.run(workflow(
        {"type": "HfModel", "model_path": str(folder), "task": "image-classification",
         "io_config": {"input_names": ["pixel_values"], "input_shapes": [[1, 3, 32, 32]],
                       "output_names": ["logits"]}},
        {"conversion": {"device": "cpu", "type": "OnnxConversion", "target_opset": 17,
                        "save_as_external_data": True, "all_tensors_to_one_file": True,
                        "use_dynamo_exporter": False}}))
    out = result.output_dir
    assert out is not None and (out / "model.onnx.data").is_file()
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    pixels = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = ort_session(out).run(["logits"], {"pixel_values": pixels})[0]
    model = ResNetForImageClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        want = model(pixel_values=torch.from_numpy(pixels)).logits.numpy()
    assert got.shape == (1, 5)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("options, key", [
    ({"device": "gpu0"}, "device"),
    ({"torch_dtype": "int8"}, "torch_dtype"),
    ({"parallel_jobs": 2}, "parallel_jobs"),
    ({"target_opset": 30}, "target_opset"),
    ({"past_key_value_name": "past key"}, "past_key_value_name"),
    ({"optimise": True}, "optimise"),
    ({"config": {"dynamic": "no"}}, "dynamic"),
    ({"script_dir": "."}, "script_dir"),
])
def test_bad_values_are_config_errors(options: dict[str, Any], key: str, tiny_bert: Path,
                                      workflow: Any, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = workflow({"type": "HfModel", "model_path": str(tiny_bert), "task": "feature-extraction"},
                   {"convert": {"type": "OnnxConversion", **options}})
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", "--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_missing_device_fails_at_run_not_at_dry_run(tiny_bert: Path, workflow: Any,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    cfg = workflow({"type": "HfModel", "model_path": str(tiny_bert), "task": "feature-extraction"},
                   {"convert": {"type": "OnnxConversion", "device": "cuda"}})
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", "--config", str(path), "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda'" in err and "Traceback" not in err


@pytest.mark.slow
def test_merge_adapter_weights_both_ways(tiny_bert: Path, workflow: Any, tmp_path: Path,
                                         ort_session: Any) -> None:
    """An HfModel with a LoRA adapter: merged (``merge_adapter_weights: true``) or exported
    with the LoRA MatMuls (Olive's default); both match the adapted torch model."""
    import onnx
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(3)
    base = AutoModel.from_pretrained(str(tiny_bert), attn_implementation="eager")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                           init_lora_weights=False))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(str(adapter))
    feeds = _feeds(tiny_bert, ["the quick brown fox", "stocks fell sharply today"])
    adapted = PeftModel.from_pretrained(
        AutoModel.from_pretrained(str(tiny_bert), attn_implementation="eager"), str(adapter)).eval()
    with torch.no_grad():
        want = adapted(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
    assert float((want - torch.from_numpy(_bert_hidden(tiny_bert, feeds))).abs().max()) > 1e-2
    matmuls = {}
    for merge in (False, True):
        result = olivine.run(workflow(
            {"type": "HfModel", "model_path": str(tiny_bert), "task": "feature-extraction",
             "adapter_path": str(adapter)},
            {"c": {"type": "OnnxConversion", "merge_adapter_weights": merge}},
            output_dir=str(tmp_path / f"out-{merge}")))
        out = result.output_dir
        assert out is not None
        graph = onnx.load(str(out / "model.onnx")).graph
        matmuls[merge] = sum(n.op_type == "MatMul" for n in graph.node)
        got = ort_session(out).run(["last_hidden_state"], feeds)[0]
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-3)
    # unmerged: lora_A and lora_B MatMuls beside query and value of both layers (2 x 2 x 2)
    assert matmuls[False] == matmuls[True] + 8, matmuls


@pytest.mark.slow
def test_past_key_value_name_that_misses_the_cache_is_an_error(
        tiny_gpt2: Path, workflow: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A past passed under a name the model ignores would export a graph without its past:
    the pass refuses it, naming the option."""
    cfg = workflow({"type": "HfModel", "model_path": str(tiny_gpt2),
                    "task": "text-generation-with-past"},
                   {"c": {"type": "OnnxConversion", "past_key_value_name": "past"}})
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(cfg))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "past_key_value_name" in err and "'past'" in err and "Traceback" not in err


@pytest.mark.slow
def test_dynamo_qlora_recipe_conversion(tiny_gpt2: Path, workflow: Any, ort_session: Any) -> None:
    """The conversion of meta-llama-Llama-3.2-1B-Instruct/olive/qlora.json (dynamo exporter,
    float16, generation metadata) on a tiny GPT-2: dynamic axes named as asked."""
    pytest.importorskip("onnxscript")
    import torch
    from transformers import AutoModelForCausalLM

    result = olivine.run(workflow(
        {"type": "HfModel", "model_path": str(tiny_gpt2), "task": "text-generation"},
        {"c": {"type": "OnnxConversion", "use_dynamo_exporter": True,
               "save_metadata_for_token_generation": True, "torch_dtype": "float16"}}))
    out = result.output_dir
    assert out is not None and (out / "generation_config.json").is_file()
    session = ort_session(out)
    assert session.get_inputs()[0].shape == ["batch_size", "sequence_length"]
    ids = np.array([[5, 9, 12, 7, 3], [8, 8, 1, 2, 4], [6, 7, 8, 9, 10]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    got = session.run(["logits"], feeds)[0]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2), attn_implementation="eager",
                                                 dtype=torch.float16).eval()
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.float().numpy()
    # float16 on both sides (measured max abs diff ~5e-4); tolerance 1e-2
    np.testing.assert_allclose(got.astype(np.float32), want, atol=1e-2, rtol=1e-2)
