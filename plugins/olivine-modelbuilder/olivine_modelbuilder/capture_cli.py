"""``olivine capture-onnx-graph`` on Olive's two paths.

Without ``--use_model_builder`` the graph comes from the torch exporter (``OnnxConversion``:
TorchScript, or dynamo with ``--use_dynamo_exporter``), from a Hugging Face model or a PyTorch
model script; ``--use_ort_genai`` adds the builder's onnxruntime-genai files around it
(``ModelBuilder`` with ``metadata_only``). With ``--use_model_builder`` the builder writes the
whole model. ``--fixed_param_dict`` fixes dynamic dimensions on either path
(``DynamicToFixedShape``). A flag of one path given on the other is refused, naming the flag:
Olive would drop it without a word.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: The task of Olive's ``HfModel`` when the flags name none.
OLIVE_HF_TASK = "text-generation-with-past"
#: Flags that only the torch exporter reads (``None`` when not given).
TORCH_FLAGS = ("conversion_device", "torch_dtype", "target_opset", "past_key_value_name",
               "model_script", "script_dir")
#: Flags that only the model builder reads.
BUILDER_FLAGS = ("int4_block_size", "int4_accuracy_level", "exclude_embeds", "exclude_lm_head",
                 "enable_cuda_graph", "extra_mb_options")


def parse_dims(text: str) -> dict[str, int]:
    """``batch_size=1,max_length=128`` as ``{"batch_size": 1, "max_length": 128}``."""
    dims: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE pairs, got {part!r}")
        try:
            dims[name.strip()] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name.strip()}: {value!r} is not a whole number") \
                from None
        if dims[name.strip()] < 1:
            raise argparse.ArgumentTypeError(f"{name.strip()}: {value!r} is not a positive size")
    if not dims:
        raise argparse.ArgumentTypeError("expected NAME=VALUE pairs, got nothing")
    return dims


def add_capture_flags(p: argparse.ArgumentParser) -> None:
    """The torch-exporter flags of Olive's ``capture-onnx-graph`` and ``--fixed_param_dict``."""
    p.add_argument("--conversion_device", choices=("cpu", "gpu"), default=None,
                   help="torch exporter: the device the model runs on while it is captured "
                        "(default: cpu)")
    p.add_argument("--torch_dtype", default=None,
                   help="torch exporter: cast the model to this dtype first (float32, float16, "
                        "bfloat16; default: as loaded)")
    p.add_argument("--target_opset", type=int, default=None,
                   help="torch exporter: ONNX opset of the graph (default: 20)")
    p.add_argument("--past_key_value_name", default=None,
                   help="torch exporter with --use_dynamo_exporter: the forward argument that "
                        "takes the past key values (default: past_key_values)")
    p.add_argument("--model_script", default=None,
                   help="torch exporter: a Python file defining _model_loader (and _io_config or "
                        "_dummy_inputs): a PyTorch model")
    p.add_argument("--script_dir", default=None,
                   help="torch exporter: a folder the model script imports from")
    p.add_argument("--fixed_param_dict", type=parse_dims, default=None, metavar="NAME=VALUE,...",
                   help="fix dynamic input dimensions, e.g. 'batch_size=1,max_length=128' "
                        "(DynamicToFixedShape after the capture)")


def check_path_flags(args: argparse.Namespace) -> None:
    """Refuse a flag of one capture path given with the other."""
    from olivine import UsageError

    if args.use_model_builder and args.use_dynamo_exporter:
        raise UsageError("--use_dynamo_exporter: not allowed with --use_model_builder (the model "
                         "builder uses no torch exporter); choose one")
    if args.model is None and not (args.model_script and not args.use_model_builder):
        raise UsageError("-m/--model_name_or_path is required (or --model_script for a PyTorch "
                         "model, without --use_model_builder)")
    if args.use_model_builder:
        given = [f for f in TORCH_FLAGS if getattr(args, f, None) is not None]
        if given:
            raise UsageError(f"--{given[0]}: a torch-exporter option, which the model builder "
                             "does not read; drop it or drop --use_model_builder")
        return
    given = [f for f in BUILDER_FLAGS if getattr(args, f, None) is not None]
    if given:
        raise UsageError(f"--{given[0]}: a model-builder option; add --use_model_builder")
    if args.adapter_path:
        raise UsageError("--adapter_path: the torch-exporter capture takes no adapter here; add "
                         "--use_model_builder (it bakes the adapter into the weights)")
    if args.past_key_value_name is not None and not args.use_dynamo_exporter:
        raise UsageError("--past_key_value_name: read only with --use_dynamo_exporter")


def fixed_shape_pass(dims: dict[str, int] | None) -> dict[str, Any]:
    """The ``DynamicToFixedShape`` step for ``--fixed_param_dict`` (empty without it)."""
    if not dims:
        return {}
    return {"fixed_shape": {"type": "DynamicToFixedShape", "dim_param": list(dims),
                            "dim_value": list(dims.values())}}


def torch_input_model(args: argparse.Namespace) -> dict[str, Any]:
    """The ``input_model`` for the torch exporter: a Hugging Face model or a model script."""
    from olivine.commands import build_test_model, input_model_config, test_model_folder

    model = args.model
    if getattr(args, "test", None) not in (None, False):
        if args.model_script:
            from olivine import UsageError

            raise UsageError("--test: builds a Hugging Face architecture; not with --model_script")
        from olivine_modelbuilder.cli import cache_dir_of

        folder = test_model_folder(args.test, cache_dir_of(args), model)
        model = str(build_test_model(model, folder, args.task or OLIVE_HF_TASK,
                                     trust_remote_code=bool(args.trust_remote_code)))
    # Olive's HfModel task when none is given (olivine's HfModel defaults to text-generation)
    flags = argparse.Namespace(model_name_or_path=model, task=args.task or OLIVE_HF_TASK,
                               adapter_path=None,
                               trust_remote_code=args.trust_remote_code,
                               model_script=args.model_script, script_dir=args.script_dir)
    config = input_model_config(flags)
    if str(config.get("type", "")).lower() not in ("hfmodel", "pytorchmodel"):
        from olivine import UsageError

        raise UsageError(f"--model_name_or_path {args.model!r}: capture-onnx-graph takes a "
                         f"Hugging Face or PyTorch model, not a {config['type']}")
    return config


def torch_workflow(args: argparse.Namespace) -> dict[str, Any]:
    """The workflow of the torch-exporter capture (Olive's steps: conversion, the genai files
    with ``--use_ort_genai``, fixed shapes with ``--fixed_param_dict``)."""
    from olivine import check_output_dir
    from olivine_modelbuilder.cli import cache_dir_of, provider_of

    check_output_dir(Path(args.output_path).expanduser().resolve())
    conversion: dict[str, Any] = {
        "type": "OnnxConversion",
        "target_opset": 20 if args.target_opset is None else args.target_opset,
        "use_dynamo_exporter": bool(args.use_dynamo_exporter),
        "device": "cuda" if args.conversion_device == "gpu" else "cpu",
        "save_metadata_for_token_generation": bool(args.use_ort_genai),
    }
    if args.torch_dtype is not None:
        conversion["torch_dtype"] = args.torch_dtype
    if args.use_dynamo_exporter:
        conversion["past_key_value_name"] = args.past_key_value_name or "past_key_values"
    passes: dict[str, Any] = {"conversion": conversion}
    if args.use_ort_genai:
        passes["genai_metadata"] = {"type": "ModelBuilder", "metadata_only": True,
                                    "precision": args.precision
                                    if args.precision in ("fp16", "bf16") else "fp32"}
    passes.update(fixed_shape_pass(args.fixed_param_dict))
    return {
        "workflow_id": args.command,
        "input_model": torch_input_model(args),
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": args.device, "execution_providers": [provider_of(args)]}]}},
        "passes": passes,
        "host": "local_system",
        "target": "local_system",
        "output_dir": str(Path(args.output_path).expanduser().resolve()),
        "cache_dir": str(Path(cache_dir_of(args)).expanduser().resolve()),
        "log_severity_level": 1 if args.log_level is None else args.log_level,
    }


def run_torch_capture(args: argparse.Namespace) -> int:
    """Run (or with ``--dry_run`` show) the torch-exporter capture."""
    from olivine.commands import mark_output_folder, print_summary, run_generated

    workflow = torch_workflow(args)
    result = run_generated(workflow, dry_run=args.dry_run, save_config=args.save_config)
    if result is not None and getattr(args, "test", None) not in (None, False):
        mark_output_folder(str(result.output_dir))
    if result is not None and workflow["log_severity_level"] < 4:
        print_summary(result)
    return 0
