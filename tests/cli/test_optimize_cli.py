"""``olivine optimize`` end to end: tiny local models in, ONNX Runtime runs what comes out.

Two of Olive's schedules run for real: the default CPU int4 path for an LLM (Gptq, then
ModelBuilder int4) and an int8 QDQ path (torchscript export, peephole, transformer fusions,
static QDQ quantization) for a BERT classifier. Olive calibrates on wikitext-2 from the hub;
the tests give local text with olivine's ``--data_config``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from olivine_testutil import (
    SENTENCES,
    sentence_words,
    tiny_bert_classifier,
    tiny_random_llm,
    write_calibration_text,
)

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny Qwen2 (2 layers, 128 wide) with the Sonnets tokenizer."""
    return tiny_random_llm(tmp_path_factory.mktemp("llm") / "qwen2", "qwen2")


def _data_config(path: Path, **config: Any) -> Path:
    path.write_text(json.dumps({"name": "calib", "type": "HuggingfaceContainer", **config}))
    return path


@pytest.mark.slow  # kept out of the default run's 15 minutes (48 s); the schedule test covers the flags
def test_int8_qdq_bert_runs_in_ort_close_to_torch(cli: Cli, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = tiny_bert_classifier(tmp_path / "bert")
    data = _data_config(tmp_path / "calib.json",
                        load_dataset_config={"data_name": "json", "data_files": str(SENTENCES)},
                        pre_process_data_config={"input_cols": ["text"], "max_length": 16,
                                                 "padding": "max_length", "max_samples": 8},
                        dataloader_config={"batch_size": 1})
    out = tmp_path / "out"
    code, _, err = cli("optimize", "-m", str(model), "--task", "text-classification",
                            "--exporter", "torchscript_exporter", "--precision", "int8",
                            "--use_qdq_format", "--data_config", str(data), "-o", str(out),
                            "--cache_dir", str(tmp_path / "cache"), "--log_level", "3")
    assert code == 0, err
    report = json.loads((out / "run.json").read_text())
    assert [s["pass"] for s in report["steps"]] == [
        "OnnxConversion", "OnnxPeepholeOptimizer", "OrtTransformersOptimization",
        "OnnxStaticQuantization"]  # Olive's schedule for these flags
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # QDQ, as --use_qdq_format says
    texts = sentence_words()[8:24]  # sentences the calibration (the first 8) did not see
    enc = AutoTokenizer.from_pretrained(model)(texts, max_length=16, padding="max_length",
                                               truncation=True, return_tensors="np")
    with torch.no_grad():
        want = AutoModelForSequenceClassification.from_pretrained(model).eval()(
            **{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()})[0]
    # measured (seed 0): max |diff| 0.133 with logits up to 0.654 (0.20 of the scale), same
    # argmax for all 16; the bound leaves 2x
    assert np.abs(got - want).max() <= 0.4 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.8


@pytest.mark.slow
def test_default_cpu_int4_llm_runs_in_genai_close_to_torch(cli: Cli, tiny_llm: Path,
                                                           tmp_path: Path) -> None:
    import onnx
    import onnxruntime_genai as og
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from olivine_modelbuilder.generate import load_model

    text = write_calibration_text(tmp_path / "calib.jsonl", 32)
    data = _data_config(tmp_path / "calib.json",
                        load_dataset_config={"data_name": "json", "data_files": str(text)},
                        pre_process_data_config={"max_samples": 16, "max_seq_len": 64})
    out = tmp_path / "out"
    code, _, err = cli("optimize", "-m", str(tiny_llm), "--precision", "int4", "--data_config",
                       str(data), "-o", str(out), "--cache_dir", str(tmp_path / "cache"),
                       "--log_level", "3")
    assert code == 0, err
    report = json.loads((out / "run.json").read_text())
    assert [s["pass"] for s in report["steps"]] == ["Gptq", "ModelBuilder"]
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx"), load_external_data=False)
           .graph.node}
    assert "MatMulNBits" in ops
    ids = AutoTokenizer.from_pretrained(tiny_llm)("Shall I compare thee to a summer's day?")[
        "input_ids"]
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()(
            torch.tensor([ids])).logits[0, -1].numpy()
    model, _, _ = load_model(out, threads=1)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 4)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    got = np.asarray(generator.get_logits()).reshape(-1)
    # measured (seed 0): correlation 0.988, mean |diff| 0.030 (logits up to 1.05)
    assert np.corrcoef(got, want)[0, 1] > 0.95
    assert np.abs(got - want).mean() < 0.08


def test_dry_run_prints_olives_schedule_and_save_config_writes_it(cli: Cli, tiny_llm: Path,
                                                                  tmp_path: Path) -> None:
    code, out, err = cli("optimize", "-m", str(tiny_llm), "--precision", "int4", "--dry_run",
                         "-o", str(tmp_path / "out"))
    assert code == 0, err
    workflow = json.loads(out)
    assert list(workflow["passes"]) == ["gptq", "model_builder"]
    assert workflow["passes"]["model_builder"]["int4_block_size"] == 32
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    saved = tmp_path / "wf.json"
    code, out, err = cli("optimize", "-m", str(tiny_llm), "--precision", "int8",
                         "--provider", "QNNExecutionProvider", "--device", "gpu", "--dim_param", "batch_size",
                         "--dim_value", "1", "--dry_run", "--save_config", str(saved),
                         "-o", str(tmp_path / "out"))
    assert code == 0, err
    written = json.loads(saved.read_text())
    assert list(written["passes"]) == ["model_builder", "dynamic_to_fixed_shape",
                                       "onnx_static_quantization", "static_llm"]
    assert written["data_configs"][0]["name"] == "wikitext2_train"  # Olive's calibration data


@pytest.mark.parametrize(("flags", "named"), [
    (["--provider", "CPUExecutionProvider", "--device", "gpu"], "--device gpu"),
    (["--enable_aot"], "--enable_aot"),
    (["--extra_mb_options", "no_equals_sign"], "--extra_mb_options"),
    (["--precision", "fp32", "--data_config", "calib.json"], "--data_config"),
    (["--precision", "int16"], "--precision int16"),
    (["--exporter", "optimum_exporter"], "--exporter optimum_exporter"),
])
def test_bad_flags_exit_2_naming_the_flag(cli: Cli, tiny_llm: Path, tmp_path: Path,
                                          flags: list[str], named: str) -> None:
    if "calib.json" in flags:
        _data_config(tmp_path / "calib.json", load_dataset_config={"data_files": "x.txt"})
        flags = [str(tmp_path / "calib.json") if f == "calib.json" else f for f in flags]
    code, _, err = cli("optimize", "-m", str(tiny_llm), "-o", str(tmp_path / "o"), *flags)
    assert code == 2, err
    assert named in err
    assert "Traceback" not in err


def test_test_flag_builds_a_two_layer_model_of_the_same_architecture(cli: Cli, tmp_path: Path
                                                                     ) -> None:
    from transformers import AutoConfig

    source = tiny_random_llm(tmp_path / "four", "qwen2", num_hidden_layers=4)
    folder = tmp_path / "test-model"
    code, out, err = cli("optimize", "-m", str(source), "--test", str(folder), "--dry_run",
                         "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert json.loads(out)["input_model"]["model_path"] == str(folder)
    made = AutoConfig.from_pretrained(folder)
    assert (made.model_type, made.num_hidden_layers, made.hidden_size) == (
        "qwen2", 2, AutoConfig.from_pretrained(source).hidden_size)
    assert (folder / "tokenizer.json").is_file()
