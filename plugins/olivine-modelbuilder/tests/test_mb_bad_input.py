"""Bad input gets a clear message and exit code 2, before anything heavy runs.

Where olivine refuses something the builder would accept, a second test shows
what happens without the refusal, so the check goes when the libraries fix it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from mb_helpers import make_family

from olivine import UsageError
from olivine_modelbuilder.modelinfo import check_buildable, read_model


def save_tiny(kind: str, folder: Path) -> Path:
    """A tiny BERT (not a causal LM) or GPT-2 (a causal LM the builder lacks), with weights."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    if kind == "bert":
        model: Any = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=64))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2))
    model.save_pretrained(folder)
    return folder


def auto_opt(cli: Any, model: str | Path, tmp_path: Path, *flags: str) -> tuple[int, str, str]:
    return cli("auto-opt", "-m", str(model), "-o", str(tmp_path / "out"), "--cache_dir",
               str(tmp_path / "cache"), *flags)


def test_missing_model_path(cli: Any, tmp_path: Path) -> None:
    code, _, err = auto_opt(cli, tmp_path / "nowhere", tmp_path)
    assert code == 2
    assert f"model path '{tmp_path / 'nowhere'}': no such folder (and it is not a Hugging Face " \
           "hub id of the form org/name)" in err
    assert not (tmp_path / "out").exists()


def test_model_path_is_a_file(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    code, _, err = auto_opt(cli, tmp_path / "model.onnx", tmp_path)
    assert code == 2 and "is a file; give a Hugging Face model folder" in err


def test_folder_without_config_json(cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "onnx-model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"")
    code, _, err = auto_opt(cli, folder, tmp_path)
    assert code == 2
    assert "has no config.json, so it is not a Hugging Face model folder" in err
    assert "ModelBuilder converts Hugging Face models, not ONNX ones" in err


def test_not_a_causal_lm(cli: Any, tmp_path: Path) -> None:
    folder = save_tiny("bert", tmp_path / "bert")
    code, _, err = auto_opt(cli, folder, tmp_path)
    assert code == 2
    assert f"'{folder}' is a BertForMaskedLM (model_type 'bert'), not a causal language model: " \
           "ModelBuilder converts text-generation models" in err


def test_unsupported_architecture_lists_the_supported_ones(cli: Any, tmp_path: Path) -> None:
    folder = save_tiny("gpt2", tmp_path / "gpt2")
    code, _, err = auto_opt(cli, folder, tmp_path)
    assert code == 2
    assert "architecture GPT2LMHeadModel (model_type 'gpt2') is not supported by the model " \
           "builder of onnxruntime-genai" in err
    assert "it converts: ChatGLMForConditionalGeneration" in err
    assert "LlamaForCausalLM" in err and "Qwen3ForCausalLM" in err


def test_missing_tokenizer_files(cli: Any, model_copy: Path, tmp_path: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (model_copy / name).unlink()
    code, _, err = auto_opt(cli, model_copy, tmp_path)
    assert code == 2
    assert f"model folder '{model_copy}' has no tokenizer files (expected tokenizer.json" in err
    assert "tokenizer.save_pretrained(folder)" in err


def test_missing_weights(cli: Any, model_copy: Path, tmp_path: Path) -> None:
    (model_copy / "model.safetensors").unlink()
    code, _, err = auto_opt(cli, model_copy, tmp_path)
    assert code == 2 and "has no weights (model.safetensors or pytorch_model.bin)" in err


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_precision_the_cpu_provider_cannot_run(cli: Any, trained_model: Path, tmp_path: Path,
                                               precision: str) -> None:
    code, _, err = auto_opt(cli, trained_model, tmp_path, "--precision", precision)
    assert code == 2
    assert f"--precision {precision} with --provider CPUExecutionProvider (cpu): {precision} " \
           "cannot run on the cpu provider" in err
    assert "use one of fp32, int8, int4" in err


def test_output_folder_that_is_not_olivines(cli: Any, trained_model: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, _, err = auto_opt(cli, trained_model, tmp_path, "--precision", "int4")
    assert code == 2
    assert f"output folder '{tmp_path / 'out'}' exists and was not made by olivine" in err
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_capture_refuses_quantized_precisions(cli: Any, trained_model: Path,
                                              tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("capture-onnx-graph", "-m", str(trained_model), "--precision", "int4")
    assert exit_info.value.code == 2


def test_workflow_file_on_a_bert_folder_is_a_config_error(cli: Any, tmp_path: Path) -> None:
    folder = save_tiny("bert", tmp_path / "bert")
    config = tmp_path / "wf.json"
    config.write_text(json.dumps({
        "input_model": {"type": "HfModel", "model_path": str(folder)},
        "passes": {"builder": {"type": "ModelBuilder", "precision": "int4"}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
        "log_severity_level": 3}))
    code, _, err = cli("run", "--config", str(config))
    assert code == 2
    assert "olivine: invalid workflow config: 1 problem" in err and "  - passes.builder: " in err
    assert "is a BertForMaskedLM (model_type 'bert'), not a causal language model" in err
    assert not (tmp_path / "out").exists()


def test_generate_needs_a_genai_folder(cli: Any, trained_model: Path) -> None:
    code, _, err = cli("generate", "-m", str(trained_model), "-p", "hi")
    assert code == 2
    assert "is not an onnxruntime-genai model folder (no genai_config.json)" in err


def test_generate_chat_without_a_chat_template(cli: Any, built: Any, tmp_path: Path) -> None:
    folder = tmp_path / "no-template"
    shutil.copytree(built("fp32").path, folder)
    (folder / "chat_template.jinja").unlink()
    code, _, err = cli("generate", "-m", str(folder), "-p", "hi", "--chat", "--threads", "1")
    assert code == 2
    assert "--chat: the model has no usable chat template" in err
    code, out, _ = cli("generate", "-m", str(folder), "-p", "hi", "--max_length", "8",
                       "--threads", "1")
    assert code == 0 and out.strip()  # plain prompts need no template


# -- refusals of what the builder accepts but cannot work, each with its evidence -------------

def tiny_model(tokenizer: Any, folder: Path, model_type: str = "qwen2", **overrides: Any) -> Path:
    make_family(model_type, overrides, tokenizer, folder)
    return folder


@pytest.mark.parametrize("model_type,overrides,message", [
    ("qwen2", {"head_dim": 8, "num_attention_heads": 8},
     "Qwen2ForCausalLM has head size 8; ONNX Runtime's CPU GroupQueryAttention needs a multiple "
     "of 16, so this model cannot run on the cpu provider"),
    ("phi", {"partial_rotary_factor": 0.5},
     "PhiForCausalLM with head size 16 rotates 8 dimensions; ONNX Runtime's CPU "
     "GroupQueryAttention needs a multiple of 16 (its cos/sin cache width, 4, must be a multiple "
     "of 8), so this model cannot run on the cpu provider"),
])
def test_cpu_attention_shapes_are_refused(tokenizer: Any, tmp_path: Path, model_type: str,
                                          overrides: dict[str, Any], message: str) -> None:
    info = read_model(str(tiny_model(tokenizer, tmp_path / "m", model_type, **overrides)))
    with pytest.raises(UsageError) as error:
        check_buildable(info, precision="fp32", provider="cpu", block_size=32, algo="default",
                        symmetric=True)
    assert str(error.value) == message
    check_buildable(info, precision="fp16", provider="cuda", block_size=32, algo="default",
                    symmetric=True)


@pytest.mark.parametrize("model_type,overrides,kernel_message", [
    ("qwen2", {"head_dim": 8, "num_attention_heads": 8}, "head_size shall be a multiple of 16"),
    ("phi", {"partial_rotary_factor": 0.5},
     "cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8"),
])
def test_evidence_cpu_attention_fails_for_those_shapes(tokenizer: Any, tmp_path: Path,
                                                       model_type: str, overrides: dict[str, Any],
                                                       kernel_message: str) -> None:
    import onnxruntime_genai as og

    from olivine_modelbuilder.build import build_model
    from olivine_modelbuilder.generate import load_model

    folder = tiny_model(tokenizer, tmp_path / "m", model_type, **overrides)
    out = build_model(str(folder), tmp_path / "out", precision="fp32", provider="cpu", options={})
    model, _, _ = load_model(out.parent, threads=1)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=8)
    generator = og.Generator(model, params)
    with pytest.raises(Exception, match=re.escape(kernel_message)):
        generator.append_tokens([5, 6, 7])


def test_k_quant_with_an_odd_block_count_is_refused(tokenizer: Any, tmp_path: Path) -> None:
    folder = tiny_model(tokenizer, tmp_path / "h96", hidden_size=96, num_attention_heads=6,
                        head_dim=16)
    info = read_model(str(folder))
    with pytest.raises(UsageError) as error:
        check_buildable(info, precision="int4", provider="cpu", block_size=32, algo="k_quant",
                        symmetric=True)
    assert str(error.value) == (
        "int4_algo k_quant with int4_block_size 32: hidden_size 96 spans 3 blocks, an odd "
        "number, and ONNX Runtime's k_quant quantizer then fails packing 4-bit zero points; use "
        "int4_block_size 16 or 64, or int4_algo default")
    for ok in ({"block_size": 64, "algo": "k_quant", "symmetric": True},
               {"block_size": 32, "algo": "rtn", "symmetric": True},
               {"block_size": 32, "algo": "default", "symmetric": False}):
        check_buildable(info, precision="int4", provider="cpu", **ok)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"rtn \(asymmetric\)"):
        check_buildable(info, precision="int4", provider="cpu", block_size=32, algo="rtn",
                        symmetric=False)


def test_evidence_k_quant_fails_on_an_odd_block_count(tokenizer: Any, tmp_path: Path) -> None:
    from olivine_modelbuilder.build import build_model

    folder = tiny_model(tokenizer, tmp_path / "h96", hidden_size=96, num_attention_heads=6,
                        head_dim=16)
    with pytest.raises(ValueError, match="cannot reshape array"):
        build_model(str(folder), tmp_path / "out", precision="int4", provider="cpu",
                    options={"block_size": 32, "algo_config": "k_quant"})


def test_evidence_half_precision_on_cpu_builds_but_fails_at_run_time(trained_model: Path,
                                                                      tmp_path: Path) -> None:
    import onnxruntime_genai as og

    from olivine_modelbuilder.build import build_model
    from olivine_modelbuilder.generate import load_model

    fp16 = build_model(str(trained_model), tmp_path / "fp16", precision="fp16", provider="cpu",
                       options={})
    model, _, _ = load_model(fp16.parent, threads=1)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=8)
    generator = og.Generator(model, params)
    generator.append_tokens([5, 6, 7])
    generator.generate_next_token()  # the first token comes out
    with pytest.raises(Exception, match="running Cast node"):
        generator.generate_next_token()
    bf16 = build_model(str(trained_model), tmp_path / "bf16", precision="bf16", provider="cpu",
                       options={})
    with pytest.raises(Exception, match="Could not find an implementation for Where"):
        load_model(bf16.parent, threads=1)


def test_workflow_validation_refuses_an_unbuildable_input_model(cli: Any, tmp_path: Path) -> None:
    """`olivine run` reports model problems as config errors (exit 2) before running anything."""
    model = save_tiny("gpt2", tmp_path / "gpt2")
    config = tmp_path / "wf.json"
    config.write_text(json.dumps({
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "passes": {"convert": {"type": "ModelBuilder", "precision": "int4"}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")}))
    code, _, err = cli("run", "--config", str(config), "--dry-run")
    assert code == 2
    assert "olivine: invalid workflow config: 1 problem" in err
    assert "  - passes.convert: architecture GPT2LMHeadModel" in err
    assert "is not supported by the model builder" in err
    assert not (tmp_path / "cache" / "steps").exists()
