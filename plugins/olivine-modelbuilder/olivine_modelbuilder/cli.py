"""The ``auto-opt``, ``capture-onnx-graph``, ``generate`` and ``demo`` commands.

Each command turns its flags into an Olive-style workflow dict and runs it on
the same engine as ``olivine run`` (``--save_config`` writes that dict). Flags
follow Olive's CLI. Problems a user can fix are found before the engine starts:
the model folder, the precision/provider pair, the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from olivine import DEFAULT_PROVIDER, EXECUTION_PROVIDERS, PROVIDER_SHORT_NAMES

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")

#: The ModelBuilder options ``auto-opt --precision int4`` writes into its workflow for the CPU
#: provider, a recorded departure from Olive (docs/design.md, "auto-opt's int4 default"):
#: Olive's auto-opt leaves the builder at its defaults (block 32, symmetric, every MatMul
#: 4-bit). Block 128 with an 8-bit LM head (``rtn_last``; with tied embeddings the shared
#: table is 8-bit too) measured 0.40-0.56x Olive's logit KL on trained models, tied and
#: untied, and decodes faster; olivine_modelbuilder.lowmem streams it, so the peak memory is
#: that of plain int4. The ModelBuilder pass itself keeps Olive's defaults. A block size is
#: halved (down to 32) where the model's layer widths are not multiples of it.
INT4_CPU_DEFAULTS: dict[str, Any] = {"int4_block_size": 128, "int4_algo": "rtn_last"}


def default_options(args: argparse.Namespace, widths: tuple[int, ...] = ()) -> dict[str, Any]:
    """The ModelBuilder options auto-opt chooses for the flags and the model's MatMul input
    widths (see :data:`INT4_CPU_DEFAULTS`); none but for int4 on the CPU provider."""
    if args.precision != "int4" or provider_of(args) != "CPUExecutionProvider":
        return {}
    options = dict(INT4_CPU_DEFAULTS)
    if "int4_block_size" in options:
        block = int(options["int4_block_size"])
        while block > 32 and any(k % block for k in widths):
            block //= 2
        options["int4_block_size"] = block
    return options


def _add_model_flags(p: argparse.ArgumentParser, precisions: tuple[str, ...], output: str,
                     capture: bool = False) -> None:
    from olivine.commands import add_cache_dir, add_dry_run, add_log_level, add_save_config

    p.add_argument("-m", "--model_name_or_path", "--model-name-or-path", dest="model",
                   required=not capture, default=None,
                   help="a Hugging Face model folder or hub id (org/name)")
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path", default=output,
                   help=f"output folder (default: {output})")
    p.add_argument("--device", choices=("cpu", "gpu", "npu"), default="cpu",
                   help="target device (default: cpu)")
    p.add_argument("--provider", choices=EXECUTION_PROVIDERS, default=None, metavar="PROVIDER",
                   help="ONNX Runtime execution provider (default: CPUExecutionProvider for cpu, "
                        "CUDAExecutionProvider for gpu)")
    p.add_argument("--precision", choices=precisions, default="fp32",
                   help="model precision (default: fp32)")
    p.add_argument("-t", "--task", default="text-generation", help="transformers task")
    p.add_argument("--test", nargs="?", const=True, default=None, metavar="FOLDER",
                   help="build from a randomly initialized 2-layer model of the same "
                        "architecture (kept in FOLDER; default: in the step cache)")
    p.add_argument("-a", "--adapter_path", dest="adapter_path", default=None,
                   help="a LoRA adapter folder for the model, or the output folder of olivine "
                        "finetune; it is baked into the weights (needs peft)")
    p.add_argument("--trust_remote_code", action="store_true",
                   help="allow the model's own code from its repository")
    if capture:  # Olive's capture: the torch exporter unless --use_model_builder
        p.add_argument("--use_ort_genai", action="store_true",
                       help="torch exporter: add onnxruntime-genai's files (genai_config.json, "
                            "tokenizer) beside the graph")
        p.add_argument("--use_model_builder", action="store_true",
                       help="capture with the model builder (default: the torch exporter)")
        p.add_argument("--use_dynamo_exporter", action="store_true",
                       help="torch exporter: the dynamo exporter (default: TorchScript)")
    else:
        p.add_argument("--use_ort_genai", action="store_true",
                       help="accepted for Olive; the output always includes genai_config.json")
        p.add_argument("--use_model_builder", action="store_true",
                       help="accepted for Olive; the conversion always uses the model builder")
        p.add_argument("--use_dynamo_exporter", action="store_true",
                       help="accepted for Olive; ignored (the model builder uses no torch "
                            "exporter)")
    add_save_config(p)
    add_dry_run(p)
    add_cache_dir(p)
    add_log_level(p)


def configure_auto_opt(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine auto-opt`` (Olive's names)."""
    _add_model_flags(p, PRECISIONS, "auto-opt-output")


def configure_capture(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine capture-onnx-graph``: Olive's torch-exporter and model-builder options."""
    from olivine_modelbuilder.capture_cli import add_capture_flags

    _add_model_flags(p, FLOAT_PRECISIONS, "capture-output", capture=True)
    add_capture_flags(p)
    p.set_defaults(task=None)  # the torch exporter's default is HfModel's (with the KV cache)
    p.add_argument("--int4_block_size", type=int, choices=(16, 32, 64, 128, 256), default=None,
                   help="model builder: int4 block size")
    p.add_argument("--int4_accuracy_level", type=int, default=None,
                   help="model builder: int4 accuracy level (1 fp32, 2 fp16, 3 bf16, 4 int8)")
    for flag, text in (("exclude_embeds", "leave the embedding layer out of the ONNX model"),
                       ("exclude_lm_head", "leave the language-model head out of the ONNX model"),
                       ("enable_cuda_graph", "model builder: CUDA graph capture (CUDA only)")):
        p.add_argument(f"--{flag}", type=flag_bool, nargs="?", const=True, default=None,
                       metavar="BOOL", help=f"{text} (true/false; bare: true)")
    p.add_argument("--extra_mb_options", default=None, metavar="K=V,...",
                   help="extra model-builder options, like 'int4_is_symmetric=true'")


def flag_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no) as a bool (Olive's ``type=bool`` reads any text as
    true; olivine refuses what is neither)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def capture_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ModelBuilder options ``capture-onnx-graph``'s model-builder flags set."""
    from olivine_modelbuilder.optimize_schedule import parse_extra_options

    options: dict[str, Any] = {k: getattr(args, k) for k in (
        "int4_block_size", "int4_accuracy_level", "exclude_embeds", "exclude_lm_head",
        "enable_cuda_graph") if getattr(args, k, None) is not None}
    if getattr(args, "extra_mb_options", None):
        options["extra_options"] = parse_extra_options(args.extra_mb_options)
    return options


def provider_of(args: argparse.Namespace) -> str:
    """The execution provider the flags name (``--provider``, else the device's default)."""
    return str(args.provider or DEFAULT_PROVIDER[args.device])


def cache_dir_of(args: argparse.Namespace) -> str:
    """The cache folder the flags name."""
    from olivine.commands import cache_dir

    return cache_dir(args.cache_dir)


def build_workflow(args: argparse.Namespace, model_path: str,
                   options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Olive-style workflow dict for the flags: one ModelBuilder step."""
    input_model: dict[str, Any] = {"type": "HfModel", "model_path": model_path, "task": args.task}
    if args.trust_remote_code:
        input_model["load_kwargs"] = {"trust_remote_code": True}
    if args.adapter_path:
        from olivine_modelbuilder.passes import adapter_folder

        input_model["adapter_path"] = str(adapter_folder(args.adapter_path))
    return {
        "workflow_id": args.command,
        "input_model": input_model,
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": args.device, "execution_providers": [provider_of(args)]}]}},
        "passes": {"builder": {"type": "ModelBuilder", "precision": args.precision,
                               **(options or {})}},
        "host": "local_system",
        "target": "local_system",
        "output_dir": str(Path(args.output_path).expanduser().resolve()),
        "cache_dir": str(Path(cache_dir_of(args)).expanduser().resolve()),
        "log_severity_level": 1 if args.log_level is None else args.log_level,
    }


def check_precision(device: str, provider: str, precision: str,
                    block_size: int | None = None) -> Any:
    """Refuse a precision the provider cannot run; return the model-builder config to check with."""
    from olivine import Accelerator, UsageError
    from olivine_modelbuilder.config import ModelBuilderConfig, check_config

    options: dict[str, Any] = {"precision": precision}
    if block_size is not None:
        options["int4_block_size"] = block_size
    config = ModelBuilderConfig(**options)
    problems = check_config(config, Accelerator(device, provider))
    if problems:
        short = PROVIDER_SHORT_NAMES.get(provider, provider)
        reason = problems[0].split(": ", 1)[-1]
        raise UsageError(f"--precision {precision} with --provider {provider} ({short}): "
                         f"{reason}")
    return config


def check_model(model: str, device: str, provider: str, config: Any) -> str:
    """Check that the model builder can build ``model`` with ``config``; return its local path.

    Shared by auto-opt, capture-onnx-graph and optimize.
    """
    from olivine import Accelerator
    from olivine_modelbuilder.config import resolve_provider
    from olivine_modelbuilder.modelinfo import check_buildable, read_model

    info = read_model(model)
    check_buildable(info, precision=config.precision,
                    provider=resolve_provider(config, Accelerator(device, provider)) or "cpu",
                    block_size=config.int4_block_size, algo=config.int4_algo,
                    symmetric=config.int4_is_symmetric)
    return str(info.path)


def preflight(args: argparse.Namespace) -> str:
    """Check the flags, the model and the output folder; return the model path to use."""
    from olivine import check_output_dir
    from olivine_modelbuilder.config import ModelBuilderConfig
    from olivine_modelbuilder.modelinfo import read_model

    provider = provider_of(args)
    config = check_precision(args.device, provider, args.precision)
    check_output_dir(Path(args.output_path).expanduser().resolve())
    model = str(args.model)
    if getattr(args, "test", None) not in (None, False):
        from olivine.commands import build_test_model, test_model_folder

        folder = test_model_folder(args.test, cache_dir_of(args), model)
        model = str(build_test_model(model, folder, args.task,
                                     trust_remote_code=bool(args.trust_remote_code)))
    args.builder_options = default_options(args, tuple(read_model(model).matmul_input_sizes().values())) \
        if args.precision == "int4" else {}
    if args.builder_options:
        config = ModelBuilderConfig(precision=args.precision, **args.builder_options)
    return check_model(model, args.device, provider, config)


def run_workflow(args: argparse.Namespace, workflow: dict[str, Any], summary: bool = True) -> int:
    """Run (or with ``--dry_run`` only show) ``workflow``; honour ``--save_config``.

    ``summary`` prints the run's summary and the output folder on stdout.
    """
    from olivine.commands import print_summary, run_generated

    result = run_generated(workflow, dry_run=args.dry_run, save_config=args.save_config)
    if result is not None and getattr(args, "test", None) not in (None, False):
        from olivine.commands import mark_output_folder

        mark_output_folder(str(result.output_dir))
    if result is not None and summary and workflow["log_severity_level"] < 4:
        print_summary(result)
        print(f"  try: olivine generate -m {result.output_dir} -p \"Hello\" --chat")
    return 0


def cmd_auto_opt(args: argparse.Namespace) -> int:
    """``olivine auto-opt``: convert and quantize a Hugging Face LLM for onnxruntime-genai."""
    model_path = preflight(args)
    return run_workflow(args, build_workflow(args, model_path, args.builder_options))


def cmd_capture(args: argparse.Namespace) -> int:
    """``olivine capture-onnx-graph``: export to ONNX without quantization, with the torch
    exporter or (``--use_model_builder``) the model builder."""
    from olivine_modelbuilder.capture_cli import check_path_flags, fixed_shape_pass, run_torch_capture

    check_path_flags(args)
    if not args.use_model_builder:
        return run_torch_capture(args)
    args.task = args.task or "text-generation"
    model_path = preflight(args)
    workflow = build_workflow(args, model_path, capture_options(args))
    workflow["passes"].update(fixed_shape_pass(args.fixed_param_dict))
    return run_workflow(args, workflow)


def configure_generate(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine generate``."""
    p.add_argument("-m", "--model", "--model_path", dest="model", required=True,
                   help="an onnxruntime-genai model folder (the output of auto-opt)")
    p.add_argument("-p", "--prompt", required=True, help="the prompt")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt in the model's chat template as a user turn")
    p.add_argument("--system", default=None, help="with --chat: a system message")
    p.add_argument("--max_length", "--max-length", dest="max_length", type=int, default=256,
                   help="tokens in all, prompt included (default: 256)")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads (default: 0, ONNX Runtime's choice)")
    p.add_argument("-a", "--adapter", default=None, metavar="FILE",
                   help="an .onnx_adapter file to run with (for models with LoRA inputs: "
                        "olivine generate-adapter / convert-adapters)")


def cmd_generate(args: argparse.Namespace) -> int:
    """``olivine generate``: stream a reply and print prefill latency and decode speed."""
    from olivine import UsageError
    from olivine_modelbuilder.generate import check_model_folder, run_generate

    if args.max_length < 2:
        raise UsageError(f"--max_length: expected at least 2, got {args.max_length}")
    check_model_folder(args.model)
    if args.adapter:
        try:  # olivine-lora names what does not fit (onnxruntime-genai's errors do not)
            from olivine_lora.onnx_adapter import check_adapter_file
        except ImportError:
            if not Path(args.adapter).is_file():
                raise UsageError(f"--adapter {args.adapter!r}: no such file") from None
        else:
            check_adapter_file(args.model, args.adapter)
    run_generate(args.model, args.prompt, chat=args.chat, system=args.system,
                 max_length=args.max_length, threads=args.threads, adapter=args.adapter)
    return 0


def configure_demo(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine demo``."""
    from olivine.commands import add_cache_dir, add_log_level

    p.add_argument("-o", "--output_path", "--output-path", dest="output_path",
                   default="olivine-demo", help="output folder (default: olivine-demo)")
    add_cache_dir(p, help="cache folder for the trained model and the steps (default: "
                          "$OLIVINE_CACHE_DIR or .olivine-cache)")
    p.add_argument("--train_seconds", type=float, default=45.0,
                   help="how long to train the tiny model the first time (default: 45)")
    p.add_argument("--retrain", action="store_true", help="train again even if one is cached")
    p.add_argument("-p", "--prompt", default="Shall I compare thee to a summer's day?",
                   help="what to ask the model")
    p.add_argument("--max_length", type=int, default=96, help="tokens in all (default: 96)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for generation")
    add_log_level(p)


def cmd_demo(args: argparse.Namespace) -> int:
    """``olivine demo``: train a tiny model, auto-opt it to int4, chat with it."""
    from olivine import UsageError, check_output_dir
    from olivine_modelbuilder.generate import run_generate
    from olivine_modelbuilder.tinymodel import TinySpec, cached_model

    if args.train_seconds <= 0:
        raise UsageError(f"--train_seconds: expected a positive number, got {args.train_seconds}")
    output = Path(args.output_path).expanduser().resolve()
    check_output_dir(output)
    cache = Path(cache_dir_of(args)).expanduser().resolve()
    quiet = args.log_level is not None and args.log_level >= 3

    def say(message: str) -> None:
        """A progress line on stderr (silent from --log_level 3)."""
        if not quiet:
            print(f"demo: {message}", file=sys.stderr, flush=True)

    # the trained model is kept inside the step cache: make the folder an olivine cache
    # first, or the cache would (rightly) refuse a folder that holds files it did not make
    from olivine import Cache

    Cache(cache).ensure()
    spec = TinySpec(seconds=args.train_seconds)
    say(f"a tiny Qwen2 model trained on the Sonnets (cached under {cache / 'demo-models'})")
    model_dir = cached_model(spec, cache / "demo-models", log=say, retrain=args.retrain)
    say(f"model: {model_dir}")
    auto = argparse.Namespace(
        command="auto-opt", model=str(model_dir), output_path=str(output), device="cpu",
        provider="CPUExecutionProvider", precision="int4", task="text-generation",
        adapter_path=None, trust_remote_code=False, save_config=None, dry_run=False, test=None,
        cache_dir=str(cache), log_level=args.log_level if args.log_level is not None else 2)
    say("olivine auto-opt --precision int4 ...")
    preflight(auto)
    run_workflow(auto, build_workflow(auto, str(model_dir)), summary=False)
    say(f"int4 model: {output}")
    say(f"olivine generate -m {output} --chat -p {json.dumps(args.prompt)}")
    print(f"user: {args.prompt}\nassistant: ", end="", flush=True)
    run_generate(output, args.prompt, chat=True, max_length=args.max_length, threads=args.threads)
    return 0


COMMANDS = (
    ("auto-opt", "convert and quantize a Hugging Face LLM for onnxruntime-genai (Olive's flags)",
     configure_auto_opt, cmd_auto_opt),
    ("capture-onnx-graph", "export a Hugging Face or PyTorch model to ONNX with the torch "
     "exporter, or an LLM with the model builder (--use_model_builder); no quantization",
     configure_capture, cmd_capture),
    ("generate", "stream a reply from an onnxruntime-genai model folder; print prefill latency "
     "and decode tokens/s", configure_generate, cmd_generate),
    ("demo", "train a tiny model here, auto-opt it to int4 and chat with it (no downloads)",
     configure_demo, cmd_demo),
)
