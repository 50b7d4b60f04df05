"""``olivine optimize``: Olive 0.13's ``olive optimize`` (the successor of ``auto-opt``).

The flags are Olive's, with its defaults. The command turns them into a workflow (the pass
schedule of :mod:`olivine_modelbuilder.optimize_schedule`, the input model of
:mod:`olivine.cli.inputs`) and runs it on the engine of ``olivine run``, so the step cache,
search and reports work as they do there; ``--dry_run`` prints the workflow and
``--save_config`` (Olive's ``--save_config_file``) writes it.

Two flags are olivine's own: ``--cache_dir`` (the step cache) and ``--data_config FILE``: a
data config (JSON or YAML, Olive's form) to calibrate on instead of Olive's wikitext-2 from
the hub (GPTQ for int4/uint4, static quantization for (u)int8/(u)int16 and --act_precision).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from olivine import UsageError
from olivine_modelbuilder import optimize_schedule as sched

log = logging.getLogger("olivine.cli.optimize")
DEFAULT_OUTPUT = "optimized-model"
#: What each flag does when it schedules nothing, to say so instead of ignoring it.
NO_EFFECT = {
    "dim_param": "it fixes shapes only for QNN, VitisAI or --device npu (with --dim_value)",
    "dim_value": "it fixes shapes only for QNN, VitisAI or --device npu (with --dim_param)",
    "act_precision": "OpenVINO quantizes weights only",
    "use_qdq_format": "no pass of this schedule writes QDQ",
    "extra_mb_options": "the model builder is not part of this schedule",
}


def configure_optimize(p: argparse.ArgumentParser) -> None:
    """Olive's flags of ``optimize`` (and olivine's ``--cache_dir`` and ``--data_config``)."""
    from olivine.commands import (
        add_cache_dir,
        add_dry_run,
        add_input_model_options,
        add_log_level,
        add_save_config,
    )

    add_input_model_options(p, hf=True, adapter=True, pt=True, default_output=DEFAULT_OUTPUT)
    p.add_argument("--provider", default=sched.CPU, choices=sched.PROVIDERS, metavar="PROVIDER",
                   help="execution provider: " + ", ".join(sched.PROVIDERS) +
                        " (default: CPUExecutionProvider)")
    p.add_argument("--device", default=None, choices=("cpu", "gpu", "npu"),
                   help="target device (default: the provider's)")
    p.add_argument("--precision", default="fp32", choices=sched.PRECISIONS,
                   help="target precision (default: fp32)")
    p.add_argument("--act_precision", default=None, choices=sched.ACT_PRECISIONS,
                   help="activation precision: adds static quantization")
    p.add_argument("--num_split", type=int, default=None, help="split the model into N parts")
    p.add_argument("--memory", type=int, default=None,
                   help="device memory in MB: split the model to fit")
    p.add_argument("--exporter", default=None, choices=sched.EXPORTERS,
                   help="how a Hugging Face model becomes ONNX (default: model_builder)")
    p.add_argument("--dim_param", default=None,
                   help="dynamic dimension names to fix, comma separated")
    p.add_argument("--dim_value", default=None, help="their values, comma separated")
    p.add_argument("--use_qdq_format", action="store_true",
                   help="quantize to QDQ instead of QOperator")
    p.add_argument("--surgeries", nargs="*", default=None,
                   help="graph surgeons to apply, comma separated")
    p.add_argument("--block_size", type=int, default=None,
                   help="quantization block size; -1 for per channel")
    p.add_argument("--modality", default="text", choices=("text",),
                   help="model modality (only text)")
    p.add_argument("--enable_aot", action="store_true",
                   help="ahead-of-time compilation (QNNExecutionProvider, needs --qnn_env_path)")
    p.add_argument("--qnn_env_path", default=None, help="the QNN Python environment for AOT")
    p.add_argument("--extra_mb_options", default=None, metavar="K=V,...",
                   help="extra model-builder options, like 'int4_is_symmetric=true'")
    p.add_argument("--data_config", default=None, metavar="FILE",
                   help="olivine: a data config file (JSON or YAML) to calibrate on instead of "
                        "wikitext-2 from the hub")
    add_save_config(p)
    add_dry_run(p)
    add_cache_dir(p)
    add_log_level(p)


def _read_data_config(path: str) -> dict[str, Any]:
    import json

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--data_config {path!r}: no such file")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ValueError as exc:  # json and yaml errors both derive from ValueError
        raise UsageError(f"--data_config {path!r}: not valid JSON/YAML ({exc})") from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict) or not data.get("name"):
        raise UsageError(f"--data_config {path!r}: expected one data config (an object with a "
                         "name, Olive's form)")
    return data


def _warn_no_effect(args: argparse.Namespace, passes: dict[str, Any]) -> None:
    used = {"dim_param": "dynamic_to_fixed_shape" in passes,
            "dim_value": "dynamic_to_fixed_shape" in passes,
            "act_precision": "onnx_static_quantization" in passes,
            "use_qdq_format": any(k in passes for k in ("onnx_static_quantization",
                                                        "matmul_nbits_to_qdq")),
            "extra_mb_options": "model_builder" in passes}
    for flag, why in NO_EFFECT.items():
        if getattr(args, flag) not in (None, False) and not used[flag]:
            log.warning("--%s has no effect here: %s", flag, why)


def _calibration_providers(passes: dict[str, Any]) -> None:
    """Olive's schedule calibrates on CUDA; where this ONNX Runtime has no CUDA provider, ONNX
    Runtime under Olive falls back to the CPU: say so and name the CPU provider instead."""
    static = passes.get("onnx_static_quantization")
    if static is None:
        return
    try:
        import onnxruntime
    except ImportError:
        return
    available = onnxruntime.get_available_providers()
    wanted = [p for p in static["calibration_providers"] if p in available]
    if not wanted:
        log.info("calibrating on CPUExecutionProvider: %s is not available in this onnxruntime",
                 ", ".join(static["calibration_providers"]))
        static["calibration_providers"] = ["CPUExecutionProvider"]


def build_optimize_workflow(args: argparse.Namespace) -> dict[str, Any]:
    """The workflow dict ``olivine optimize`` runs for ``args``."""
    from olivine.commands import cache_dir, input_model_config, is_hf

    flags = sched.check_flags(sched.Flags.of(args))
    input_model = input_model_config(args)
    hf = is_hf(input_model)
    if args.test not in (None, False):
        if not hf:
            raise UsageError("--test: only a Hugging Face model has an architecture to copy")
        from olivine.commands import build_test_model, test_model_folder

        source = input_model["model_path"]
        folder = test_model_folder(args.test, cache_dir(args.cache_dir), source)
        input_model["model_path"] = str(build_test_model(
            source, folder, args.task, trust_remote_code=bool(args.trust_remote_code)))
    plan = sched.schedule(flags, hf=hf)
    passes = plan.passes
    if hf and flags.exporter == "optimum_exporter" and flags.provider != sched.OPENVINO:
        raise UsageError("--exporter optimum_exporter: Olive 0.13's optimize schedules no "
                         "conversion for it (only OpenVINO converts through optimum); use "
                         "model_builder, dynamo_exporter or torchscript_exporter")
    for system in plan.systems.values():  # Olive's accelerator memory: olivine's systems have
        for accelerator in system.get("accelerators", []):  # none; CaptureSplitInfo gets it
            accelerator.pop("memory", None)
    _warn_no_effect(args, passes)
    _calibration_providers(passes)
    data_configs: list[dict[str, Any]] = [sched.WIKITEXT2] if plan.calibration_data else []
    if args.data_config:
        data = _read_data_config(args.data_config)
        calibrated = [k for k in ("gptq", "onnx_static_quantization") if k in passes]
        if not calibrated:
            raise UsageError("--data_config: nothing in this schedule calibrates (GPTQ for "
                             "int4/uint4 Hugging Face models, static quantization for (u)int8/"
                             "(u)int16 or --act_precision)")
        for key in calibrated:
            passes[key]["data_config"] = data["name"]
        data_configs = [data]
    workflow: dict[str, Any] = {
        "workflow_id": "optimize",
        "input_model": input_model,
        "systems": plan.systems,
        "data_configs": data_configs,
        "passes": passes,
        "target": plan.target,
        "output_dir": str(Path(args.output_path).expanduser().resolve()),
        "cache_dir": str(Path(cache_dir(args.cache_dir)).expanduser().resolve()),
        "log_severity_level": 1 if args.log_level is None else args.log_level,
    }
    return workflow


def _check_model_builder(args: argparse.Namespace, workflow: dict[str, Any]) -> None:
    """For a local Hugging Face model and a model-builder step: auto-opt's early checks."""
    from olivine_modelbuilder.cli import PRECISIONS, check_model, check_precision

    builder = workflow["passes"].get("model_builder")
    model_path = Path(str(workflow["input_model"].get("model_path", "")))
    if builder is None:
        return
    if builder["precision"] not in PRECISIONS:
        raise UsageError(f"--precision {args.precision}: the model builder writes "
                         f"{', '.join(PRECISIONS)}; for others give --exporter dynamo_exporter")
    device = args.device or ("gpu" if args.provider in (sched.CUDA, sched.TRTRTX) else "cpu")
    config = check_precision(device, args.provider, builder["precision"],
                             block_size=builder.get("int4_block_size"))
    if model_path.is_dir():
        check_model(str(model_path), device, args.provider, config)


def cmd_optimize(args: argparse.Namespace) -> int:
    """``olivine optimize``: Olive's pass schedule for the flags, run on olivine's engine."""
    from olivine import check_output_dir
    from olivine.commands import print_summary, run_generated

    workflow = build_optimize_workflow(args)
    _check_model_builder(args, workflow)
    result = run_generated(workflow, dry_run=args.dry_run, save_config=args.save_config,
                           before_run=lambda: check_output_dir(Path(workflow["output_dir"])))
    if args.test not in (None, False):
        from olivine.commands import mark_output_folder

        mark_output_folder(args.output_path)
    if result is not None and workflow["log_severity_level"] < 4:
        print_summary(result)
    return 0


COMMANDS = (
    ("optimize", "optimize a model with Olive's pass schedule for the provider, precision and "
     "exporter (Olive's `optimize`)", configure_optimize, cmd_optimize),
)
