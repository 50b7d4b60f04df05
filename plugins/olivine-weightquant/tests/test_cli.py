"""``olivine quantize`` on Hugging Face models: every flag reaches the pass; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def test_every_gptq_flag_reaches_the_pass(tiny_model: Any, tmp_path: Path, cli) -> None:
    code, out, err = cli("quantize", "-m", str(tiny_model.path), "--algorithm", "gptq", "--precision",
                         "int8", "--block_size", "64", "--symmetric", "--lm_head", "--act_order",
                         "--damp_percent", "0.05", "--data_files", str(tiny_model.calibration),
                         "--text_field", "body", "--max_samples", "7", "--max_seq_len", "96",
                         "-o", str(tmp_path / "o"), "--dry_run")
    assert code == 0, err
    cfg = json.loads(out)["passes"]["quantize"]
    assert cfg == {"type": "Gptq", "bits": 8, "group_size": 64, "sym": True, "lm_head": True,
                   "desc_act": True, "damp_percent": 0.05,
                   "data_files": [str(tiny_model.calibration.resolve())], "text_field": "body",
                   "max_samples": 7, "max_seq_len": 96}


def test_int8_gptq_writes_8_bit_tensors(tiny_model: Any, tmp_path: Path, cli) -> None:
    """Olive's quantize command drops the bit width; here int8 must land in the checkpoint."""
    from safetensors import safe_open

    out = tmp_path / "o"
    code, _, err = cli("quantize", "-m", str(tiny_model.path), "--algorithm", "gptq", "--precision",
                       "int8", "--block_size", "64", "--asymmetric", "--act_order", "--data_files",
                       str(tiny_model.calibration), "--max_samples", "8", "--max_seq_len", "64",
                       "-o", str(out), "--cache_dir", str(tmp_path / "c"), "--log_level", "4")
    assert code == 0, err
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qc["bits"], qc["group_size"], qc["sym"], qc["quant_method"]) == (8, 64, False, "gptq")
    assert qc["olivine"]["act_order"] is True and qc["desc_act"] is False  # static groups: no g_idx
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.0.mlp.down_proj.qweight"
    with safe_open(str(out / index[name]), framework="pt") as fh:
        assert tuple(fh.get_tensor(name).shape) == (384 * 8 // 32, 128)
        assert tuple(fh.get_tensor("model.layers.0.mlp.down_proj.scales").shape) == (384 // 64, 128)
    run = json.loads((out / "run.json").read_text())
    assert run["steps"][0]["config"]["bits"] == 8


@pytest.mark.slow  # 26 s; the default run must stay under 15 minutes on the CI machine
def test_rtn_on_the_hf_model_and_an_lm_head_added_later(tiny_model: Any, tmp_path: Path,
                                                        cli) -> None:
    from olivine_weightquant import hf_checkpoint

    first, second = tmp_path / "a", tmp_path / "b"
    assert cli("quantize", "-m", str(tiny_model.path), "--block_size", "32", "-o", str(first),
               "--cache_dir", str(tmp_path / "c"), "--log_level", "4")[0] == 0
    import olivine

    olivine.run({"input_model": {"type": "HfModel", "model_path": str(first)},
                 "passes": {"head": {"type": "RtnHf", "bits": 8, "group_size": 128, "lm_head": True}},
                 "output_dir": str(second), "cache_dir": str(tmp_path / "c"), "log_severity_level": 4})
    config = json.loads((second / "config.json").read_text())
    qc = config["quantization_config"]
    assert (qc["bits"], qc["group_size"]) == (4, 32)
    assert qc["dynamic"] == {"+:lm_head": {"bits": 8, "group_size": 128, "sym": False}}
    assert config["tie_word_embeddings"] is False
    source = hf_checkpoint.TensorSource(second)
    assert source.has("lm_head.qweight") and source.has("model.embed_tokens.weight")
    model = hf_checkpoint.load_dequantized(second)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize(("args", "message"), [
    (["--algorithm", "gptq"], "--data_files: gptq needs calibration text"),
    (["--algorithm", "hqq"], "--algorithm hqq runs on ONNX models"),
    (["--accuracy_level", "4"], "--accuracy_level: applies to ONNX models"),
    (["--algorithm", "rtn", "--act_order"], "--act_order: applies to --algorithm gptq"),
    (["--block_size", "256"], "group_size: 256 does not divide the layer widths of"),
])
def test_refusals(tiny_model: Any, tmp_path: Path, cli, args: list[str], message: str) -> None:
    code, _, err = cli("quantize", "-m", str(tiny_model.path), "-o", str(tmp_path / "o"),
                       "--cache_dir", str(tmp_path / "c"), "--log_level", "3", *args)
    assert code == 2, err
    assert message in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.txt", b"\n\n", "holds no text"),
    ("rows.jsonl", b'{"content": "hi"}\n', "has no field 'text'; its records have 'content'"),
    ("blob.txt", b"\x00\x00\x7fELF\x02", "is not text"),
])
def test_bad_calibration_files_exit_2(tiny_model: Any, tmp_path: Path, cli, name: str, content: bytes,
                                      message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = cli("quantize", "-m", str(tiny_model.path), "--algorithm", "gptq", "--data_files",
                       str(path), "-o", str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c"),
                       "--log_level", "3")
    assert code == 2, err
    assert message in err and name in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("value", "message"), [
    ("gptq", "-a gptq: -a is --adapter_path, as in Olive's quantize; for the algorithm write "
             "--algorithm gptq"),
    ("adapter", "--adapter_path adapter: quantize does not merge adapters here"),
])
def test_dash_a_is_olives_adapter_flag(tiny_model: Any, tmp_path: Path, cli, value: str,
                                       message: str) -> None:
    code, _, err = cli("quantize", "-m", str(tiny_model.path), "-a", value, "-o",
                       str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_precision_outside_int4_int8_is_an_argument_error(tiny_model: Any, cli) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("quantize", "-m", str(tiny_model.path), "--precision", "int3")
    assert exc.value.code == 2


def test_the_driver_names_the_first_layer_a_block_size_cannot_take(tiny_model: Any, tmp_path: Path) -> None:
    from olivine import UsageError
    from olivine_weightquant import hf_quant

    with pytest.raises(UsageError) as err:
        options = hf_quant.HfOptions(algorithm="rtn", group_size=256)
        hf_quant.streamed(tiny_model.path, tmp_path / "o", options)
    assert str(err.value).startswith("model.layers.0.self_attn.q_proj: its 128 inputs are not a multiple "
                                     "of the block size 256")
    assert "(block sizes that divide 128: 16, 32, 64, 128)" in str(err.value)
    assert not (tmp_path / "o").exists()
