"""Olive's options of DoRA, LoHa, LoKr and QLoRA: known, honoured in what peft saves, refused
with a message where they cannot apply, and GPU-only ones failing when the step runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lora_helpers import variant_step, workflow

from olivine.testing import record_quality

Cli = Callable[..., tuple[int, str, str]]
WriteJson = Callable[[dict[str, Any], Path], Path]


def _olive_step(kind: str, **options: Any) -> dict[str, Any]:
    """A step as Olive's recipes write it: lowercase type, r and alpha."""
    step = {k: v for k, v in variant_step(kind).items() if k not in ("lora_r", "lora_alpha")}
    step.update(r=4, alpha=8, max_steps=2)
    step.update(options)
    return step


def test_recipe_names_and_options_validate(base_model: Path, tmp_path: Path) -> None:
    import olivine

    passes = {
        "d": _olive_step("dora", lora_dropout=0.05, allow_tf32=True, device_map="auto",
                         ephemeral_gpu_offload=False, modules_to_save=None),
        "h": _olive_step("LOHA", rank_dropout=0.1, module_dropout=0.1, use_effective_conv2d=True,
                         exclude_modules=["o_proj"], init_weights=True, layers_to_transform=[0],
                         layers_pattern=["layers"], rank_pattern={"q_proj": 2},
                         alpha_pattern={"q_proj": 4}),
        "k": _olive_step("lokr", decompose_both=True, decompose_factor=4, rank_dropout_scale=True),
        "q": _olive_step("qlora", device_map="current_device", compute_dtype="bfloat16",
                         double_quant=True, quant_type="fp4", save_quant_config=False),
    }
    for name, step in passes.items():
        config = olivine.validate(workflow(tmp_path, base_model, {name: step}))
        assert config.passes[0].type in ("DoRA", "LoHa", "LoKr", "QLoRA")


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("loha", {"lora_dropout": 0.05}, "passes.s.lora_dropout: LoHa has no LoRA path"),
    ("lokr", {"ephemeral_gpu_offload": True}, "passes.s.ephemeral_gpu_offload: peft's ephemeral"),
    ("lokr", {"bias": "all"}, "passes.s.bias: LoKr trains no biases"),
    ("lokr", {"decompose_factor": 0}, "passes.s.decompose_factor: -1 (the most balanced"),
    ("loha", {"rank_pattern": {"q_proj": 0}}, "passes.s.rank_pattern.q_proj: a number greater"),
    ("loha", {"layers_pattern": ["layers"]}, "layers_pattern: applies only with layers_to_transform"),
    ("loha", {"rank_dropot": 0.1}, "passes.s.rank_dropot: unknown key (did you mean 'rank_dropout'?)"),
    ("qlora", {"save_quant_config": True}, "passes.s.save_quant_config: only false is supported"),
    ("dora", {"device_map": "balanced"}, "passes.s.device_map"),
])
def test_bad_options_are_config_errors(kind: str, options: dict[str, Any], message: str, cli: Cli,
                                       base_model: Path, tmp_path: Path,
                                       write_json: WriteJson) -> None:
    config = write_json(workflow(tmp_path, base_model, {"s": _olive_step(kind, **options)}),
                        tmp_path / "wf.json")
    code, _, err = cli("run", "--config", str(config), "--dry-run")
    assert code == 2 and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(("options", "message"), [
    ({"device_map": "current_device"}, "device_map: current_device puts the model on the current "
                                       "CUDA device"),
    ({"ephemeral_gpu_offload": True}, "ephemeral_gpu_offload: true offloads DoRA's initialization"),
    ({"torch_dtype": "float16"}, "torch_dtype: float16 trains in fp16 mixed precision"),
])
def test_gpu_options_fail_when_the_step_runs(options: dict[str, Any], message: str, cli: Cli,
                                            base_model: Path, tmp_path: Path,
                                            write_json: WriteJson) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("these options work on a machine with a CUDA GPU")
    config = write_json(workflow(tmp_path, base_model, {"d": _olive_step("dora", **options)}),
                        tmp_path / "wf.json")
    assert cli("run", "--config", str(config), "--dry-run")[0] == 0  # the workflow is valid
    code, _, err = cli("run", "--config", str(config))
    assert code == 2 and message in err and "torch sees no CUDA GPU" in err, err
    assert not (tmp_path / "out").exists()


def _adapter_config(base_model: Path, tmp: Path, step: dict[str, Any]) -> dict[str, Any]:
    import olivine

    result = olivine.run(workflow(tmp, base_model, {"s": step}))
    assert result.ok
    folder = Path(result.output_dir) / "adapter"
    assert (folder / "adapter_model.safetensors").is_file()
    return dict(json.loads((folder / "adapter_config.json").read_text()))


def test_loha_and_lokr_options_reach_peft(base_model: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    loha = _adapter_config(base_model, tmp_path / "loha", _olive_step(
        "loha", rank_dropout=0.1, module_dropout=0.05, exclude_modules=["o_proj"],
        layers_to_transform=[1], layers_pattern=["layers"], rank_pattern={"q_proj": 2},
        alpha_pattern={"v_proj": 16}, max_steps=1))
    assert loha["peft_type"] == "LOHA" and (loha["r"], loha["alpha"]) == (4, 8)
    assert (loha["rank_dropout"], loha["module_dropout"]) == (0.1, 0.05)
    assert loha["exclude_modules"] == ["o_proj"] and loha["layers_to_transform"] == [1]
    assert loha["rank_pattern"] == {"q_proj": 2} and loha["alpha_pattern"] == {"v_proj": 16}
    tensors = load_file(str(tmp_path / "loha" / "out" / "adapter" / "adapter_model.safetensors"))
    adapted = {k.split(".hada_")[0] for k in tensors}
    assert all(".layers.1." in k for k in adapted) and not any("o_proj" in k for k in adapted)
    q_rank = next(v.shape for k, v in tensors.items() if "q_proj.hada_w1_a" in k)
    assert 2 in q_rank  # rank_pattern gave q_proj rank 2

    lokr = _adapter_config(base_model, tmp_path / "lokr", _olive_step(
        "lokr", decompose_both=True, decompose_factor=4, rank_dropout_scale=True, max_steps=1))
    assert lokr["peft_type"] == "LOKR"
    assert (lokr["decompose_both"], lokr["decompose_factor"], lokr["rank_dropout_scale"]) == \
        (True, 4, True)


def test_extract_adapters_passes_a_merged_model_through(base_model: Path, tmp_path: Path,
                                                        cli: Cli, write_json: WriteJson) -> None:
    """The recipes' ExtractAdapters(adapter_type: dora/loha) after a conversion that merged the
    adapter: no such weights, so the model comes out unchanged (Olive's rule)."""
    pytest.importorskip("onnxruntime_genai")
    import numpy as np
    from lora_helpers import genai_logits

    import olivine

    result = olivine.run(workflow(tmp_path, base_model, {
        "b": {"type": "ModelBuilder", "precision": "fp32"},
        "e": {"type": "ExtractAdapters", "adapter_type": "loha"}}, data=[]))
    assert result.ok
    built = Path(result.report["steps"][0]["output_model"]["path"])
    ids = [1, 5, 9, 42, 7]
    np.testing.assert_array_equal(genai_logits(result.output_dir, ids), genai_logits(built, ids))
    assert result.report["steps"][1]["output_model"]["attributes"]["lora_inputs"] == 0


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_merge_refuses_a_variant_adapter_for_another_base(kind: str, other_base: Path,
                                                          base_model: Path, tmp_path: Path,
                                                          cli: Cli, write_json: WriteJson) -> None:
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    cls = peft.LoHaConfig if kind == "loha" else peft.LoKrConfig
    torch.manual_seed(0)
    net = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(other_base),
                              cls(r=4, alpha=8, target_modules=["q_proj", "down_proj"]))
    net.save_pretrained(str(tmp_path / "adapter"))
    config = write_json(workflow(tmp_path, base_model, {"m": {"type": "MergeAdapterWeights"}},
                                 adapter_path=str(tmp_path / "adapter"), data=[]),
                        tmp_path / "wf.json")
    code, _, err = cli("run", "--config", str(config))
    assert code == 2, err
    assert "does not fit base model" in err
    assert "model.layers.0.mlp.down_proj maps 128 -> 64 features" in err
    assert "the adapter's matrices are for 64 -> 32" in err


def test_extract_adapters_refuses_dora_weights_it_cannot_lift(tmp_path: Path, cli: Cli,
                                                              write_json: WriteJson) -> None:
    """A graph that still computes DoRA (a torch export of an unmerged peft model) is refused."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    name = "model.layers.0.self_attn.q_proj.lora_magnitude_vector.default.weight"
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", name], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones(4, dtype=np.float32), name)])
    (tmp_path / "m").mkdir()
    onnx.save(helper.make_model(graph), str(tmp_path / "m" / "model.onnx"))
    config = write_json({
        "input_model": {"type": "OnnxModel", "model_path": str(tmp_path / "m" / "model.onnx")},
        "passes": {"e": {"type": "ExtractAdapters", "adapter_type": "dora"}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")},
        tmp_path / "wf.json")
    code, _, err = cli("run", "--config", str(config))
    assert code == 2, err
    assert "adapter_type dora" in err and "1 dora weights (" + name in err
    assert "merge the adapter into the model before converting it" in err


def test_extract_adapters_required_inputs_and_external_data(base_model: Path, trained: Path,
                                                            tmp_path: Path) -> None:
    """optional_inputs: false leaves the LoRA inputs without defaults; the external-data options
    place the tensors; onnxruntime-genai still applies the adapter as peft does."""
    pytest.importorskip("onnxruntime_genai")
    import numpy as np
    import onnx
    from lora_helpers import genai_logits, torch_logits

    import olivine

    result = olivine.run(workflow(tmp_path, base_model, {
        "b": {"type": "ModelBuilder", "precision": "fp32"},
        "e": {"type": "ExtractAdapters", "optional_inputs": False, "save_as_external_data": True,
              "external_data_name": "weights.bin", "size_threshold": 0}},
        adapter_path=str(trained / "adapter"), data=[]))
    assert result.ok
    out = Path(result.output_dir)
    proto = onnx.load(str(out / "model.onnx"), load_external_data=False)
    lora = [i.name for i in proto.graph.input if ".lora_" in i.name]
    assert len(lora) == 28
    assert not {t.name for t in proto.graph.initializer} & set(lora)  # no defaults
    assert (out / "weights.bin").is_file()
    assert {t.external_data[0].value for t in proto.graph.initializer} == {"weights.bin"}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model),
                                     str(trained / "adapter")).eval()
    ids = [1, 5, 9, 42, 7]
    got = genai_logits(out, ids, out / "adapter.onnx_adapter")
    diff = float(np.abs(got - torch_logits(peft, ids)).max())
    record_quality("lora_required_inputs_vs_peft", max_abs=diff)
    assert diff < 1e-3  # fp32; measured 2.2e-6
