"""ModelBuilder's options as a workflow file states them: accepted, refused, explained."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from olivine import ConfigError, validate
from olivine_modelbuilder import builder_info


def workflow(tmp_path: Any, options: dict[str, Any], device: str = "cpu",
             provider: str = "CPUExecutionProvider") -> dict[str, Any]:
    # a hub id: option checks only (a local folder would also have its config.json checked)
    return {
        "input_model": {"type": "HfModel", "model_path": "Qwen/Qwen2.5-0.5B-Instruct"},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": device, "execution_providers": [provider]}]}},
        "passes": {"builder": {"type": "ModelBuilder", **options}},
        "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
    }


def problems(tmp_path: Any, options: dict[str, Any], **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(workflow(tmp_path, options, **kw))
    return info.value.problems


def builder_config(tmp_path: Any, options: dict[str, Any], **kw: Any) -> Any:
    return validate(workflow(tmp_path, options, **kw)).passes[0].config


def test_builder_option_names_are_read_from_its_source() -> None:
    names = builder_info.known_options()
    assert {"block_size", "is_symmetric", "accuracy_level", "algo_config", "exclude_embeds",
            "exclude_lm_head", "op_types_to_quantize", "filename", "enable_cuda_graph"} <= names
    assert "hf_details" not in names and not any(n.startswith("_") for n in names)
    assert "int4_block_size" not in names  # documented as an alias, read nowhere in 0.18
    if builder_info.genai_version() == "0.18.0":
        assert names == builder_info.FALLBACK_OPTIONS
        assert builder_info.supported_architectures() == builder_info.FALLBACK_ARCHITECTURES


def test_unknown_extra_option_is_refused_with_did_you_mean(tmp_path: Any) -> None:
    found = problems(tmp_path, {"precision": "int4", "extra_options": {"blok_size": 64}})
    assert len(found) == 1
    assert found[0].startswith("passes.builder.extra_options.blok_size: unknown model-builder "
                               "option (did you mean 'block_size'?)")
    assert "would silently ignore it" in found[0] and "op_types_to_quantize" in found[0]


def test_several_unknown_extra_options_are_all_named(tmp_path: Any) -> None:
    found = problems(tmp_path, {"precision": "int4",
                                "extra_options": {"enable_cuda_grph": True, "foo": 1}})
    assert "(did you mean 'enable_cuda_graph'?) (also unknown: foo)" in found[0]


@pytest.mark.parametrize("key,owner", [
    ("hf_remote", "input_model.load_kwargs.trust_remote_code"),
    ("adapter_path", "input_model.adapter_path"),
])
def test_extra_option_owned_by_the_input_model_is_refused(tmp_path: Any, key: str, owner: str) -> None:
    found = problems(tmp_path, {"precision": "int4", "extra_options": {key: "1"}})
    assert found == [f"passes.builder.extra_options.{key}: set through {owner}, not extra_options"]


@pytest.mark.parametrize("options,field,value", [
    ({"int4_accuracy_level": 4, "extra_options": {"int4_accuracy_level": 4}}, "int4_accuracy_level", 4),
    ({"extra_options": {"int4_accuracy_level": 4}}, "int4_accuracy_level", 4),
    ({"extra_options": {"accuracy_level": "4"}}, "int4_accuracy_level", 4),
    ({"exclude_embeds": True, "extra_options": {"exclude_embeds": True}}, "exclude_embeds", True),
    ({"extra_options": {"exclude_embeds": "true"}}, "exclude_embeds", True),
    ({"int4_block_size": 64, "extra_options": {"block_size": 64}}, "int4_block_size", 64),
    ({"extra_options": {"op_types_to_quantize": "MatMul/Gemm"}}, "int4_op_types_to_quantize",
     ["MatMul", "Gemm"]),
])
def test_pass_option_repeated_in_extra_options_is_accepted_when_it_agrees(
        tmp_path: Any, options: dict[str, Any], field: str, value: Any) -> None:
    cfg = builder_config(tmp_path, {"precision": "int4", **options})
    assert getattr(cfg, field) == value
    assert cfg.extra_options == {}  # one value, carried by the pass option


@pytest.mark.parametrize("options,key", [
    ({"int4_accuracy_level": 1, "extra_options": {"int4_accuracy_level": 4}}, "int4_accuracy_level"),
    ({"int4_block_size": 64, "extra_options": {"block_size": 128}}, "block_size"),
    ({"exclude_embeds": True, "extra_options": {"exclude_embeds": False}}, "exclude_embeds"),
])
def test_pass_option_repeated_in_extra_options_with_another_value_is_refused(
        tmp_path: Any, options: dict[str, Any], key: str) -> None:
    found = problems(tmp_path, {"precision": "int4", **options})
    assert len(found) == 1 and f"extra_options.{key}: " in found[0] and "conflicts with" in found[0]


def test_known_extra_options_pass(tmp_path: Any) -> None:
    cfg = builder_config(tmp_path, {"precision": "int4", "extra_options": {
        "op_types_to_quantize": ["MatMul", "Gather"], "enable_cuda_graph": False,
        "filename": "decoder.onnx"}})
    assert cfg.extra_options["filename"] == "decoder.onnx"


@pytest.mark.parametrize("size", [8, 48, 512])
def test_block_size_must_be_a_power_of_two_from_16_to_256(tmp_path: Any, size: int) -> None:
    found = problems(tmp_path, {"precision": "int4", "int4_block_size": size})
    assert found == [f"passes.builder.int4_block_size: must be a power of two from 16 to 256 "
                     f"(16, 32, 64, 128 or 256), got {size}"]


def test_accuracy_level_range(tmp_path: Any) -> None:
    found = problems(tmp_path, {"precision": "int4", "int4_accuracy_level": 5})
    assert found[0].startswith("passes.builder.int4_accuracy_level: must be 0 (unset)")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cpu_is_refused_up_front(tmp_path: Any, precision: str) -> None:
    found = problems(tmp_path, {"precision": precision})
    assert found == [f"passes.builder: precision: {precision} cannot run on the cpu provider (the "
                     "builder writes it, but ONNX Runtime's CPU provider cannot run it: fp16 fails "
                     "in a Cast kernel at the first decode step, bf16 when the session is "
                     "created); use one of fp32, int8, int4"]


def test_half_precision_for_cuda_is_accepted(tmp_path: Any) -> None:
    cfg = builder_config(tmp_path, {"precision": "fp16"}, device="gpu",
                         provider="CUDAExecutionProvider")
    assert cfg.precision == "fp16"
    # building for another provider than the workflow's target is an explicit choice
    assert builder_config(tmp_path, {"precision": "fp16", "execution_provider": "cuda"})


def test_unsupported_target_provider_falls_back_to_cpu(tmp_path: Any) -> None:
    """Olive builds for cpu when the target's provider is not the builder's (QNN in the aitk
    qnn_gpu recipes): accepted, with cpu's precision rules (test_metadata_only runs it)."""
    assert builder_config(tmp_path, {"precision": "int4"}, device="npu",
                          provider="QNNExecutionProvider").precision == "int4"
    found = problems(tmp_path, {"precision": "fp16"}, device="npu", provider="QNNExecutionProvider")
    assert found[0].startswith("passes.builder: precision: fp16 cannot run on the cpu provider")


def test_quantization_method_needs_a_quantized_precision(tmp_path: Any) -> None:
    found = problems(tmp_path, {"precision": "fp32", "int4_algo": "k_quant"})
    assert found == ["passes.builder: int4_algo: k_quant quantizes weights, but precision is "
                     "fp32; use precision int4 or int8"]


def test_unknown_algo_gets_did_you_mean(tmp_path: Any) -> None:
    found = problems(tmp_path, {"precision": "int4", "int4_algo": "kquant"})
    assert "(did you mean 'k_quant'?)" in found[0]


def test_olive_keys_and_aliases(tmp_path: Any) -> None:
    cfg = builder_config(tmp_path, {"precision": "int4", "use_ort_genai": True,
                                    "use_dynamo_exporter": True, "block_size": 64,
                                    "accuracy_level": 1, "int4_algo_config": "rtn"})
    assert (cfg.int4_block_size, cfg.int4_accuracy_level, cfg.int4_algo) == (64, 1, "rtn")


def test_olive_older_form_with_nested_config(tmp_path: Any) -> None:
    wf = workflow(tmp_path, {})
    wf["passes"]["builder"] = {"type": "ModelBuilder", "config": {"precision": "int4",
                                                                  "int4_block_size": 128}}
    assert validate(wf).passes[0].config.int4_block_size == 128


def test_search_options_are_checked(tmp_path: Any) -> None:
    found = problems(tmp_path, {"precision": "fp32", "search": {"max_lenght": 10}})
    assert found[0].startswith("passes.builder.search.max_lenght: unknown search option (did "
                               "you mean 'max_length'?)")


def test_precision_is_required_and_listed(tmp_path: Any) -> None:
    found = problems(tmp_path, {})
    assert found == ['passes.builder.precision: required key is missing (one of "fp32", "fp16", '
                     '"bf16", "int8", "int4")']


def test_plugin_modules_stay_light() -> None:
    code = ("import sys, olivine_modelbuilder, olivine_modelbuilder.cli, olivine_modelbuilder.passes,"
            " olivine_modelbuilder.modelinfo; from olivine import get_plugin_host; "
            "get_plugin_host(); heavy = {'torch', 'transformers', 'onnxruntime', "
            "'onnxruntime_genai', 'onnx'} & set(sys.modules); print(sorted(heavy))")
    env = {**os.environ, "OLIVINE_LOAD_PLUGINS": "olivine-modelbuilder"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    assert out.stdout.strip() == "[]"
