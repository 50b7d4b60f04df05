"""The passes ``olivine optimize`` schedules for its flags: Olive 0.13's ``optimize`` schedule.

:func:`schedule` is a pure function of the flags and the model kind (a Hugging Face model or
an ONNX one); ``tests/cli/test_optimize_schedule.py`` compares it with the schedules Olive's
own command builds for a grid of flag combinations (``tests/cli/olive_0_13_optimize_schedules
.json``). In order, a pass is scheduled when:

==============================  ==============================================================
pass (step name)                when
==============================  ==============================================================
QuaRot (quarot)                 HF model, int4/uint4, QNN or VitisAI
Gptq (gptq)                     HF model, int4/uint4, not OpenVINO
CaptureSplitInfo                HF model and --num_split or --memory
ModelBuilder (model_builder)    HF model, --exporter model_builder (the text default), not OpenVINO
OnnxConversion                  HF model, --exporter dynamo_exporter/torchscript_exporter, not OpenVINO
OpenVINOOptimumConversion       HF model, OpenVINO
DynamicToFixedShape             QNN, VitisAI or --device npu, with --dim_param and --dim_value
OnnxIODataTypeConverter         WebGPU
OpenVINOIoUpdate                HF model, OpenVINO
OnnxPeepholeOptimizer           an ONNX model, or an exporter other than model_builder
OrtTransformersOptimization     --exporter dynamo/torchscript, not NvTensorRTRTX
MatMulNBitsToQDQ                HF model, Gptq scheduled, --use_qdq_format
GraphSurgeries                  --surgeries
OnnxBlockWiseRtnQuantization    an ONNX model, int4
OnnxFloatToFloat16              fp16 without ModelBuilder
OnnxStaticQuantization          not OpenVINO; (u)int8/(u)int16 without Gptq, or --act_precision
VitisAIAddMetaData              VitisAI
SplitModel                      HF model and --num_split or --memory
StaticLLM                       QNN or VitisAI (text)
EPContextBinaryGenerator        QNN with --enable_aot
ComposeOnnxModels               HF model, QNN, --enable_aot and --num_split or --memory
OpenVINOEncapsulation           HF model, OpenVINO
==============================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from olivine import UsageError

PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "QNNExecutionProvider",
             "VitisAIExecutionProvider", "OpenVINOExecutionProvider", "WebGpuExecutionProvider",
             "NvTensorRTRTXExecutionProvider")
PRECISIONS = ("int4", "int8", "int16", "int32", "uint4", "uint8", "uint16", "uint32", "fp16",
              "fp32", "bf16")
ACT_PRECISIONS = ("int8", "uint8", "int16", "uint16")
EXPORTERS = ("model_builder", "dynamo_exporter", "torchscript_exporter", "optimum_exporter")
MB_BLOCK_SIZES = (16, 32, 64, 128, 256)
BITS = {"int4": 4, "uint4": 4, "int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "int32": 32,
        "uint32": 32, "fp16": 16, "bf16": 16, "fp32": 32}
CPU, CUDA, QNN, VITIS, OPENVINO, WEBGPU, TRTRTX = PROVIDERS
#: Olive's calibration data for static quantization (wikitext-2 from the hub).
WIKITEXT2 = {
    "name": "wikitext2_train", "type": "HuggingfaceContainer",
    "load_dataset_config": {"data_name": "Salesforce/wikitext", "subset": "wikitext-2-raw-v1",
                            "split": "train"},
    "pre_process_data_config": {"strategy": "line-by-line", "add_special_tokens": False,
                                "max_samples": 128, "max_seq_len": 512},
}


@attrs.frozen
class Flags:
    """The flags that decide the schedule (``argparse`` names and defaults)."""

    provider: str = CPU
    device: str | None = None
    precision: str = "fp32"
    act_precision: str | None = None
    num_split: int | None = None
    memory: int | None = None
    exporter: str | None = None
    dim_param: str | None = None
    dim_value: str | None = None
    use_qdq_format: bool = False
    surgeries: Sequence[str] | None = None
    block_size: int | None = None
    modality: str = "text"
    enable_aot: bool = False
    qnn_env_path: str | None = None
    extra_mb_options: str | None = None

    @classmethod
    def of(cls, args: Any) -> Flags:
        """The fields of an ``argparse.Namespace``."""
        return cls(**{f.name: getattr(args, f.name) for f in attrs.fields(cls)})


@attrs.frozen
class Schedule:
    """The passes (step name -> pass config), the systems and whether calibration data is used."""

    passes: dict[str, dict[str, Any]]
    systems: dict[str, Any]
    target: str
    calibration_data: bool


def check_flags(f: Flags) -> Flags:
    """Olive's checks of the flag combination; returns the flags with the exporter defaulted."""
    if f.modality != "text":
        raise UsageError(f"--modality {f.modality}: only text is supported")
    wrong_device = {CPU: ("gpu", "npu"), CUDA: ("cpu", "npu"), TRTRTX: ("cpu", "npu")}
    if f.device in wrong_device.get(f.provider, ()):
        raise UsageError(f"--device {f.device} does not go with --provider {f.provider}; name a "
                         "provider for that device (or leave --device out)")
    if f.enable_aot and f.provider != QNN:
        raise UsageError("--enable_aot: ahead-of-time compilation needs --provider "
                         "QNNExecutionProvider")
    if f.enable_aot and f.qnn_env_path is None:
        raise UsageError("--enable_aot needs --qnn_env_path (the QNN Python environment folder)")
    if f.use_qdq_format and f.provider == OPENVINO:
        raise UsageError("--use_qdq_format does not go with --provider OpenVINOExecutionProvider")
    if f.exporter is None:
        f = attrs.evolve(f, exporter="model_builder")
    return f


def parse_extra_options(text: str | None) -> dict[str, str]:
    """``key=value,key=value`` (``--extra_mb_options``) as a dict of strings."""
    options: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--extra_mb_options: {item!r} is not key=value (like "
                             "'int4_is_symmetric=true,int4_op_types_to_quantize=MatMul/Gemm')")
        options[key.strip()] = value.strip()
    return options


def _mb_block(block_size: int | None) -> int:
    size = 32 if block_size is None or block_size == -1 else block_size
    return size if size in MB_BLOCK_SIZES else min(MB_BLOCK_SIZES, key=lambda b: abs(b - size))


def schedule(flags: Flags, hf: bool) -> Schedule:
    """Olive's schedule for ``flags`` on a Hugging Face (``hf``) or an ONNX model."""
    f = check_flags(flags)
    p, prec = f.provider, f.precision
    int4ish = prec in ("int4", "uint4")
    split = f.num_split is not None or f.memory is not None
    passes: dict[str, dict[str, Any]] = {}
    calibration = False

    quarot = int4ish and hf and p in (QNN, VITIS)
    if quarot:
        passes["quarot"] = {"type": "QuaRot"}
    gptq = hf and int4ish and p != OPENVINO
    if gptq:
        cfg: dict[str, Any] = {"type": "Gptq", "bits": BITS[prec], "sym": prec == "int4"}
        if f.block_size is not None:
            cfg["group_size"] = f.block_size
        passes["gptq"] = cfg
    if hf and split:
        cfg = {"type": "CaptureSplitInfo", "unique_embeds_lm_head_splits": True}
        if f.num_split is not None:
            cfg["num_splits"] = f.num_split
        if f.memory is not None:
            cfg["memory"] = f.memory
        passes["capture_split_info"] = cfg
    model_builder = hf and p != OPENVINO and f.exporter == "model_builder"
    if model_builder:
        cfg = {"type": "ModelBuilder", "precision": prec}
        if prec == "int4":
            cfg.update(int4_block_size=_mb_block(f.block_size), int4_accuracy_level=4,
                       int4_op_types_to_quantize=["MatMul", "Gather"])
        cfg["extra_options"] = parse_extra_options(f.extra_mb_options)
        passes["model_builder"] = cfg
    if hf and p != OPENVINO and f.exporter in ("dynamo_exporter", "torchscript_exporter"):
        passes["onnx_conversion"] = {"type": "OnnxConversion",
                                     "use_dynamo_exporter": f.exporter == "dynamo_exporter"}
    if hf and p == OPENVINO:
        passes["optimum_openvino_conversion"] = {
            "type": "OpenVINOOptimumConversion", "extra_args": {"device": f.device},
            "ov_quant_config": {"task": "text-generation-with-past", "weight_format": prec,
                                "group_size": 128, "ratio": 1}}
    if (p in (QNN, VITIS) or f.device == "npu") and f.dim_param is not None \
            and f.dim_value is not None:
        passes["dynamic_to_fixed_shape"] = {"type": "DynamicToFixedShape",
                                            "dim_param": _names(f.dim_param),
                                            "dim_value": _ints(f.dim_value)}
    if p == WEBGPU:
        passes["onnx_io_datatype_converter"] = {"type": "OnnxIODataTypeConverter",
                                                "name_pattern": "logits", "source_dtype": 10,
                                                "target_dtype": 1}
    if p == OPENVINO and hf:
        passes["openvino_io_update"] = {"type": "OpenVINOIoUpdate", "static": False,
                                        "reuse_cache": True}
    if not hf or f.exporter != "model_builder":
        passes["onnx_peephole_optimizer"] = {"type": "OnnxPeepholeOptimizer"}
    if p != TRTRTX and f.exporter in ("torchscript_exporter", "dynamo_exporter"):
        passes["ort_transformers_optimization"] = {"type": "OrtTransformersOptimization"}
    if hf and gptq and f.use_qdq_format:
        cfg = {"type": "MatMulNBitsToQDQ", "add_zero_point": True, "save_as_external_data": True,
               "nodes_to_exclude": ["/lm_head/MatMulNBits", "/lm_head/MatMul_Q4"]}
        if prec == "int4":
            cfg["use_int4"] = True
        passes["matmul_nbits_to_qdq"] = cfg
    if f.surgeries is not None:
        names = surgeon_names(f.surgeries)
        passes["graph_surgeries"] = {"type": "GraphSurgeries",
                                     "surgeries": [{"surgeon": n} for n in names],
                                     "save_as_external_data": True}
    if not hf and prec == "int4":
        cfg = {"type": "OnnxBlockWiseRtnQuantization"}
        if f.block_size == -1:
            cfg.update(axis=0, block_size=-1)
        elif f.block_size is not None:
            cfg["block_size"] = f.block_size
        passes["onnx_blockwise_rtn_quantization"] = cfg
    if prec == "fp16" and not model_builder:
        passes["onnx_float_to_float16"] = {"type": "OnnxFloatToFloat16"}
    static = p != OPENVINO and (
        (prec in ("int8", "uint8", "int16", "uint16") and not gptq) or f.act_precision is not None)
    if static:
        cfg = {"type": "OnnxStaticQuantization", "precision": prec,
               "calibration_providers": ["CUDAExecutionProvider"],
               "quant_format": "QDQ" if f.use_qdq_format else "QOperator"}
        if f.act_precision:
            cfg["activation_type"] = f.act_precision
        if hf:  # contrib ops of the model builder need no QDQ around them
            cfg["op_types_to_exclude"] = ["GatherBlockQuantized", "GroupQueryAttention",
                                          "MatMulNBits"]
        if f.block_size == -1:
            cfg["per_channel"] = True
        calibration = True
        cfg["data_config"] = WIKITEXT2["name"]
        passes["onnx_static_quantization"] = cfg
    if p == VITIS:
        cfg = {"type": "VitisAIAddMetaData", "config_meta_data_keys": ["architectures", "model_type"],
               "weight_type": prec}
        if f.act_precision:
            cfg["activation_type"] = f.act_precision
        quant = "quarot" if quarot else "onnx_static_quantization" if static else \
            "gptq" if gptq else None
        if quant:
            cfg["quant_type"] = quant
        passes["vitis_ai_add_metadata"] = cfg
    if hf and split:
        passes["split_model"] = {"type": "SplitModel"}
    if p in (QNN, VITIS):
        cfg = {"type": "StaticLLM"}
        if p == VITIS:
            cfg.update(batch_size=1, context_length=64, group_session_options={
                "log_id": "onnxruntime-genai", "provider_options": [{"VitisAI": {}}],
                "graph_optimization_level": "ORT_ENABLE_ALL"})
        passes["static_llm"] = cfg
    if f.enable_aot and p == QNN:
        passes["ep_context_binary_generator"] = {
            "type": "EPContextBinaryGenerator",
            "session_options": {"intra_op_num_threads": 2, "inter_op_num_threads": 1},
            "weight_sharing": True,
            "provider_options": {"htp_performance_mode": "burst",
                                 "htp_graph_finalization_optimization_mode": "3",
                                 "soc_model": "60"}}
        if hf and split:
            passes["compose_onnx_models"] = {"type": "ComposeOnnxModels"}
    if hf and p == OPENVINO:
        cfg = {"type": "OpenVINOEncapsulation", "keep_ov_dynamic_shapes": True,
               "op_version": "2025.1", "reuse_cache": True}
        if f.device is not None:
            cfg["target_device"] = f.device
        passes["openvino_encapsulation"] = cfg
    return Schedule(passes, *_systems(f), calibration_data=calibration)


def _systems(f: Flags) -> tuple[dict[str, Any], str]:
    accelerator: dict[str, Any] = {"execution_providers": [f.provider]}
    if f.device:
        accelerator["device"] = f.device
    if f.memory is not None:
        accelerator["memory"] = f.memory
    systems: dict[str, Any] = {"local_system": {"type": "LocalSystem",
                                                "accelerators": [accelerator]}}
    if f.provider == QNN and f.enable_aot:
        systems["qnn_system"] = {"type": "PythonEnvironment",
                                 "python_environment_path": f.qnn_env_path,
                                 "accelerators": [{"execution_providers": [f.provider]}]}
        return systems, "qnn_system"
    return systems, "local_system"


def surgeon_names(values: Sequence[str]) -> list[str]:
    """The surgeons ``--surgeries`` names: comma separated, in one value or several (Olive reads
    only the first value; olivine refuses none rather than scheduling an empty step)."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise UsageError("--surgeries: name at least one graph surgeon (like "
                         "--surgeries RemoveRopeMultiCache,AttentionMaskToSequenceLengths)")
    return names


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


def _ints(text: str) -> list[int]:
    try:
        return [int(item.strip()) for item in text.split(",")]
    except ValueError:
        raise UsageError(f"--dim_value {text!r}: expected whole numbers separated by commas "
                         "(like 1,128)") from None
