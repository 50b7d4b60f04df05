"""``olivine tune-session-params``: Olive's command of that name, on olivine's engine.

One ``OrtSessionParamsTuning`` step (:mod:`olivine_onnx.session_tuning`) on the ONNX model
``-m`` names, with Olive's flags. The ranked table is printed; the output folder holds the
tuned model with the fastest settings where ONNX Runtime and onnxruntime-genai read them
(``inference_settings.json``, the model's ``ort_config`` metadata, ``genai_config.json``'s
session options for a genai model) and, as in Olive, ``<device>-<provider>.json`` with the
inference settings (``cpu-cpu.json`` for the CPU provider).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from olivine import UsageError

DEFAULT_OUTPUT = "tuned-inference-settings"
HELP = ("time ONNX Runtime session settings (threads, execution mode, optimization level, "
        "providers, I/O binding) on an ONNX model and keep the fastest (Olive's flags)")
#: Flags copied into the pass config as they are (Olive's names are the pass's).
PASS_KEYS = ("cpu_cores", "io_bind", "enable_cuda_graph", "execution_mode_list", "opt_level_list",
             "trt_fp16_enable", "intra_thread_num_list", "inter_thread_num_list",
             "extra_session_config")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    """Olive's flags of ``tune-session-params``."""
    from olivine import EXECUTION_PROVIDERS
    from olivine.commands import (
        add_cache_dir,
        add_dry_run,
        add_input_model_options,
        add_log_level,
        add_save_config,
        memory_bytes,
    )

    add_input_model_options(p, hf=False, default_output=DEFAULT_OUTPUT)
    p.add_argument("--cpu_cores", type=int, default=None,
                   help="thread count tried when no thread list is given (default: physical cores)")
    p.add_argument("--io_bind", action="store_true", help="time with I/O binding (GPU providers)")
    p.add_argument("--enable_cuda_graph", action="store_true",
                   help="CUDA graphs (CUDAExecutionProvider with --io_bind)")
    p.add_argument("--execution_mode_list", type=int, nargs="*", default=None,
                   help="execution modes to try: 0 sequential, 1 parallel")
    p.add_argument("--opt_level_list", type=int, nargs="*", default=None,
                   help="graph optimization levels to try: 0, 1, 2, 99")
    p.add_argument("--trt_fp16_enable", action="store_true",
                   help="FP16 for TensorrtExecutionProvider")
    p.add_argument("--intra_thread_num_list", type=int, nargs="*", default=None,
                   help="intra-op thread counts to try")
    p.add_argument("--inter_thread_num_list", type=int, nargs="*", default=None,
                   help="inter-op thread counts to try")
    p.add_argument("--extra_session_config", type=_json_object, default=None,
                   help="session config entries for every session tried, as a JSON object")
    p.add_argument("--disable_force_evaluate_other_eps", action="store_true",
                   help="do not try providers other than the target's (the default)")
    p.add_argument("--enable_profiling", action="store_true",
                   help="ONNX Runtime profiling of every session tried")
    p.add_argument("--predict_with_kv_cache", action="store_true",
                   help="time a model's KV-cache inputs too (generated inputs always fill them, "
                        "past length 0)")
    p.add_argument("--device", default="cpu", choices=("gpu", "cpu", "npu"),
                   help="target device (default: cpu)")
    p.add_argument("--providers_list", nargs="*", default=None, choices=EXECUTION_PROVIDERS,
                   metavar="PROVIDER",
                   help="execution providers to try (default: the device's); providers other "
                        "than the first are tried too")
    p.add_argument("--memory", type=memory_bytes, default=None,
                   help="the accelerator's memory in bytes (or with KB, MB, GB)")
    add_save_config(p)
    add_dry_run(p)
    add_cache_dir(p)
    add_log_level(p)


def build_workflow(args: argparse.Namespace) -> dict[str, Any]:
    """The workflow: the ONNX model, one OrtSessionParamsTuning step."""
    from olivine import DEFAULT_PROVIDER
    from olivine.commands import cache_dir, input_model_config

    model = input_model_config(args)
    if str(model.get("type", "")).lower() != "onnxmodel":
        raise UsageError(f"--model_name_or_path {args.model_name_or_path!r}: tune-session-params "
                         "takes an ONNX model (an .onnx file or a folder holding one)")
    providers = list(args.providers_list or [DEFAULT_PROVIDER[args.device]])
    config: dict[str, Any] = {"type": "OrtSessionParamsTuning"}
    config.update({k: getattr(args, k) for k in PASS_KEYS if getattr(args, k) not in (None, False)})
    if len(providers) > 1:
        config["providers_list"] = providers
        config["force_evaluate_other_eps"] = not args.disable_force_evaluate_other_eps
    if args.enable_profiling:
        config["enable_profiling"] = True
    if args.memory is not None:
        raise UsageError("--memory: session tuning does not use the accelerator's memory "
                         "(it times the sessions it creates)")
    accelerator: dict[str, Any] = {"device": args.device, "execution_providers": providers[:1]}
    return {
        "workflow_id": "tune-session-params",
        "input_model": model,
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [accelerator]}},
        "passes": {"session_params_tuning": config},
        "host": "local_system",
        "target": "local_system",
        "output_dir": str(Path(args.output_path).expanduser().resolve()),
        "cache_dir": str(Path(cache_dir(args.cache_dir)).expanduser().resolve()),
        "log_severity_level": 1 if args.log_level is None else args.log_level,
    }


def settings_file_name(device: str, provider: str) -> str:
    """Olive's name of the settings file: ``<device>-<provider without ExecutionProvider>.json``."""
    return f"{device.lower()}-{provider.removesuffix('ExecutionProvider').lower()}.json"


def handle(args: argparse.Namespace) -> int:
    """``olivine tune-session-params``."""
    from olivine import check_output_dir
    from olivine.commands import record_file, run_generated
    from olivine_onnx.session_tuning import TABLE_FILE

    workflow = build_workflow(args)
    result = run_generated(workflow, dry_run=args.dry_run, save_config=args.save_config,
                           before_run=lambda: check_output_dir(Path(workflow["output_dir"])))
    if result is None:
        return 0
    out = Path(result.output_dir)
    settings = result.output_model.attrs_dict().get("inference_settings") \
        if result.output_model is not None else None
    if not settings:
        print("Tuning failed: no settings were timed; rerun with --log_level 1 for details.")
        return 1
    accelerator = workflow["systems"]["local_system"]["accelerators"][0]
    target = out / settings_file_name(accelerator["device"], accelerator["execution_providers"][0])
    target.write_text(json.dumps(settings, indent=4) + "\n", encoding="utf-8")
    record_file(out, target)
    tables = sorted(out.rglob(TABLE_FILE))
    if tables and workflow["log_severity_level"] < 4:
        print(tables[0].read_text(encoding="utf-8"), end="")
    print(f"Inference session parameters are saved to {out} ({target.name}, "
          "inference_settings.json beside the model)")
    return 0
