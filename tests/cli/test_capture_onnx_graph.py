"""``olivine capture-onnx-graph`` as Olive runs it: the torch exporter unless --use_model_builder.

One capture on the torch-exporter path with Olive's extras (``--use_ort_genai`` for the
onnxruntime-genai files, ``--fixed_param_dict``) is run for real: ONNX Runtime's logits match
torch's, onnxruntime-genai generates what torch generates, and the batch dimension is fixed.
The rest is read from ``--dry_run`` (the workflow each flag set makes) and from the refusals
of flags that the chosen path does not read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("olivine_transformers")
pytest.importorskip("olivine_modelbuilder")

PROMPT = [2, 5, 6, 7, 8]


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama whose greedy continuation varies (a wider init than the default)."""
    from olivine.testing import make_hf_model

    return make_hf_model(tmp_path_factory.mktemp("capture") / "hf", initializer_range=0.2)


def _dry_run(cli: Any, tmp_path: Path, model: Path, *flags: str) -> dict[str, Any]:
    code, out, err = cli("capture-onnx-graph", "-m", str(model), "-o", str(tmp_path / "out"),
                         "--cache_dir", str(tmp_path / "cache"), "--dry_run", *flags)
    assert code == 0, err
    return dict(json.loads(out))


def test_the_torch_exporter_is_the_default(cli: Any, tmp_path: Path, hf_model: Path) -> None:
    wf = _dry_run(cli, tmp_path, hf_model)
    assert wf["input_model"]["task"] == "text-generation-with-past"  # Olive's HfModel default
    assert wf["passes"] == {"conversion": {
        "type": "OnnxConversion", "target_opset": 20, "use_dynamo_exporter": False,
        "device": "cpu", "save_metadata_for_token_generation": False}}
    wf = _dry_run(cli, tmp_path, hf_model, "--use_dynamo_exporter", "--target_opset", "18",
                  "--torch_dtype", "float32", "--past_key_value_name", "past", "-t",
                  "text-generation")
    assert wf["input_model"]["task"] == "text-generation"
    assert wf["passes"]["conversion"] == {
        "type": "OnnxConversion", "target_opset": 18, "use_dynamo_exporter": True,
        "device": "cpu", "save_metadata_for_token_generation": False, "torch_dtype": "float32",
        "past_key_value_name": "past"}
    wf = _dry_run(cli, tmp_path, hf_model, "--use_model_builder", "--fixed_param_dict",
                  "batch_size=1")
    assert [p["type"] for p in wf["passes"].values()] == ["ModelBuilder", "DynamicToFixedShape"]
    assert wf["passes"]["fixed_shape"] == {"type": "DynamicToFixedShape",
                                           "dim_param": ["batch_size"], "dim_value": [1]}


def test_a_pytorch_model_script(cli: Any, tmp_path: Path) -> None:
    script = tmp_path / "model.py"
    script.write_text("import torch\n\ndef _model_loader(path):\n    return torch.nn.Linear(4, 2)\n\n"
                      "def _io_config(model):\n    return {'input_names': ['x'], "
                      "'input_shapes': [[1, 4]], 'output_names': ['y']}\n")
    code, out, err = cli("capture-onnx-graph", "--model_script", str(script), "--script_dir",
                         str(tmp_path), "-o", str(tmp_path / "out"), "--dry_run")
    assert code == 0, err
    assert json.loads(out)["input_model"] == {
        "type": "PyTorchModel", "model_script": str(script), "model_loader": "_model_loader",
        "script_dir": str(tmp_path), "io_config": "_io_config"}
    code, _, err = cli("capture-onnx-graph", "--use_model_builder", "-o", str(tmp_path / "out"))
    assert code == 2 and "-m/--model_name_or_path is required" in err


@pytest.mark.parametrize(("flags", "message"), [
    (["--int4_block_size", "32"], "--int4_block_size: a model-builder option; add --use_model_builder"),
    (["--use_model_builder", "--torch_dtype", "float16"],
     "--torch_dtype: a torch-exporter option, which the model builder does not read"),
    (["--use_model_builder", "--use_dynamo_exporter"],
     "--use_dynamo_exporter: not allowed with --use_model_builder"),
    (["--past_key_value_name", "pkv"], "--past_key_value_name: read only with --use_dynamo_exporter"),
])
def test_a_flag_the_path_does_not_read_is_refused(cli: Any, tmp_path: Path, hf_model: Path,
                                                  flags: list[str], message: str) -> None:
    out = tmp_path / "out"
    code, _, err = cli("capture-onnx-graph", "-m", str(hf_model), "-o", str(out), "--cache_dir",
                       str(tmp_path / "cache"), *flags)
    assert code == 2 and message in err, err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow  # 25 s; the default run must stay under 15 minutes on the CI machine
def test_torch_export_with_genai_files_and_a_fixed_batch(cli: Any, tmp_path: Path,
                                                         hf_model: Path) -> None:
    import onnx
    import onnxruntime as ort
    import onnxruntime_genai as og
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    code, _, err = cli("capture-onnx-graph", "-m", str(hf_model), "-o", str(out), "--cache_dir",
                       str(tmp_path / "cache"), "--use_ort_genai", "--fixed_param_dict",
                       "batch_size=1", "--log_level", "3")
    assert code == 0, err
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    dims = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in graph.input}
    assert dims["input_ids"] == [1, "sequence_length"]
    assert "past_key_values.0.key" in dims and (out / "genai_config.json").is_file()

    torch_model = AutoModelForCausalLM.from_pretrained(hf_model).eval()
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        expected = torch_model(ids).logits.numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        if inp.name == "input_ids":
            feeds[inp.name] = ids.numpy()
        elif inp.name == "attention_mask":
            feeds[inp.name] = np.ones((1, len(PROMPT)), dtype=np.int64)
        elif inp.name == "position_ids":
            feeds[inp.name] = np.arange(len(PROMPT), dtype=np.int64)[None]
        else:  # an empty past: (batch, kv heads, 0, head size)
            shape = [d if isinstance(d, int) else 0 for d in inp.shape]
            feeds[inp.name] = np.zeros(shape, dtype=np.float32)
    logits = session.run(["logits"], feeds)[0]
    # fp32 both sides; measured 2e-6 here
    assert np.abs(logits - expected).max() < 1e-4

    with torch.no_grad():
        greedy = torch_model.generate(ids, max_length=16, do_sample=False, pad_token_id=0,
                                      eos_token_id=torch_model.config.eos_token_id)[0].tolist()
    assert len(set(greedy[len(PROMPT):])) > 2  # the continuation varies: a real comparison
    model = og.Model(str(out))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=16, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(PROMPT)
    while not generator.is_done():
        generator.generate_next_token()
    assert [int(t) for t in generator.get_sequence(0)] == greedy


@pytest.mark.parametrize(("value", "message"), [
    ("batch_size=x", "batch_size: 'x' is not a whole number"),
    ("batch_size", "expected NAME=VALUE pairs, got 'batch_size'"),
    ("batch_size=0", "batch_size: '0' is not a positive size"),
])
def test_a_bad_fixed_param_dict_is_a_usage_error(cli: Any, tmp_path: Path, hf_model: Path,
                                                 capsys: pytest.CaptureFixture[str], value: str,
                                                 message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        cli("capture-onnx-graph", "-m", str(hf_model), "-o", str(tmp_path / "out"),
            "--fixed_param_dict", value)
    assert exit_info.value.code == 2
    assert f"argument --fixed_param_dict: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
