"""The ``finetune``, ``convert-adapters`` and ``generate-adapter`` commands (Olive's flags).

``finetune`` and ``generate-adapter`` turn their flags into an Olive-style workflow dict
and run it on the same engine as ``olivine run`` (``--save_config`` writes the dict).
What a user can get wrong is checked before the engine starts: the model folder, the
data files and their columns, the target modules (against the model's layers, built
on torch's meta device without loading weights), the adapter's fit to the base model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from olivine import UsageError

METHODS = {"lora": "LoRA", "qlora": "QLoRA"}


def _common(p: argparse.ArgumentParser, output: str) -> None:
    from olivine.commands import add_cache_dir, add_dry_run, add_log_level, add_save_config

    p.add_argument("-o", "--output_path", "--output-path", dest="output_path", default=output,
                   help=f"output folder (default: {output})")
    add_cache_dir(p)
    add_save_config(p)
    add_dry_run(p)
    add_log_level(p)


def configure_finetune(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine finetune`` (Olive's names)."""
    p.add_argument("-m", "--model_name_or_path", "--model-name-or-path", dest="model", required=True,
                   help="a Hugging Face causal LM: a local folder or a hub id (org/name)")
    p.add_argument("--trust_remote_code", action="store_true",
                   help="allow the model's own code from its repository")
    p.add_argument("--method", choices=tuple(METHODS), default="lora",
                   help="lora, or qlora (a 4-bit base model; needs bitsandbytes)")
    data = p.add_argument_group("data")
    data.add_argument("-d", "--data_name", default=None,
                      help="json, csv, parquet or text with --data_files, a local file, or a hub "
                           "dataset id (needs the datasets package)")
    data.add_argument("--data_files", default=None,
                      help="local data files, comma-separated (.jsonl .json .csv .tsv .parquet .txt)")
    data.add_argument("--train_split", default="train", help="hub dataset split (default: train)")
    data.add_argument("--train_subset", default=None, help="hub dataset subset")
    data.add_argument("--eval_split", default=None,
                      help="hold out this fraction (0.1) or number of rows (20) for evaluation")
    data.add_argument("--text_field", default=None, help="the column holding the whole text")
    data.add_argument("--text_template", default=None,
                      help="text built from columns, e.g. \"### Question: {instruction}\\n"
                           "### Answer: {response}\"")
    data.add_argument("--use_chat_template", action="store_true",
                      help="render rows (messages, or instruction/response) with the chat template")
    data.add_argument("--max_seq_len", type=int, default=None, help="tokens per row (default 1024)")
    data.add_argument("--max_samples", type=int, default=None, help="use only the first N rows")
    lora = p.add_argument_group("LoRA")
    lora.add_argument("--lora_r", type=int, default=64, help="rank (default 64, as Olive's)")
    lora.add_argument("--lora_alpha", type=float, default=16.0,
                      help="alpha (default 16, as Olive's)")
    lora.add_argument("--lora_dropout", type=float, default=None, help="dropout (default 0.05)")
    lora.add_argument("--target_modules", default=None,
                      help="lora only: comma-separated layer names (q_proj,v_proj) or all-linear; "
                           "default: peft's for the architecture (q_proj,v_proj for Llama/Qwen2); "
                           "qlora adapts every 4-bit layer")
    train = p.add_argument_group("training")
    train.add_argument("--max_steps", type=int, default=None, help="optimizer steps")
    train.add_argument("--num_train_epochs", type=float, default=None, help="epochs (default 3)")
    train.add_argument("--batch_size", "--per_device_train_batch_size", dest="batch_size", type=int,
                       default=None, help="rows per step (default 8)")
    train.add_argument("--gradient_accumulation_steps", type=int, default=None,
                       help="batches per optimizer step (default 1)")
    train.add_argument("--learning_rate", type=float, default=None, help="default 2e-4")
    train.add_argument("--lr_scheduler_type", default=None, help="constant (default), linear, cosine, ...")
    train.add_argument("--warmup_ratio", type=float, default=None,
                       help="default 0.03 (the constant schedule has no warmup)")
    train.add_argument("--seed", type=int, default=None, help="default 42")
    train.add_argument("--save_steps", type=int, default=None,
                       help="checkpoint interval (default 500)")
    train.add_argument("--logging_steps", type=int, default=None, help="default 500")
    train.add_argument("--torch_dtype", choices=("auto", "float32", "bfloat16", "float16"),
                       default="bfloat16",
                       help="training dtype (default bfloat16, as Olive's; float16 needs CUDA)")
    train.add_argument("--gradient_checkpointing", nargs="?", const=True, default=None,
                       type=_flag_bool, metavar="true|false",
                       help="recompute activations: less memory, slower steps (default true)")
    _common(p, "finetuned-adapter")


def _flag_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"true or false, got {text!r}")


def cache_dir_of(args: argparse.Namespace) -> str:
    """The cache folder the flags name."""
    from olivine.commands import cache_dir

    return cache_dir(args.cache_dir)


def _model_path(value: str) -> tuple[str, bool]:
    p = Path(value).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UsageError(f"model folder {value!r} has no config.json; give a Hugging Face model "
                             "folder (save_pretrained's output) or a hub id")
        return str(p.resolve()), True
    from olivine.config import HUB_ID

    # a hub id has dots often enough (Llama-3.2-1B, Qwen2.5-0.5B): only its shape tells
    if value.startswith((".", "/", "~")) or value.count("/") > 1 or not HUB_ID.match(value):
        raise UsageError(f"model {value!r}: no such folder (and it is not a hub id like org/name)")
    return value, False


def _eval_size(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--eval_split: a fraction (0.1) or a number of rows (20), got {text!r}; "
                         "hub splits for evaluation are set in a workflow's eval_data_config"
                         ) from None
    if value <= 0 or (value >= 1 and value != int(value)):
        raise UsageError(f"--eval_split: a fraction between 0 and 1 or a whole number of rows, "
                         f"got {text}")
    return value


def finetune_workflow(args: argparse.Namespace, model_path: str) -> dict[str, Any]:
    """The Olive-style workflow dict of ``olivine finetune``: one LoRA (or QLoRA) step.

    Like Olive's ``finetune``, the step always names r (64), alpha (16) and torch_dtype
    (bfloat16), and for QLoRA ``save_quant_config: false``; the rest are the pass's defaults
    (Olive's) unless a flag gives them.
    """
    load: dict[str, Any] = {}
    if args.data_files:
        load["data_files"] = [str(Path(f.strip()).expanduser().resolve())
                              for f in args.data_files.split(",") if f.strip()]
    if args.data_name:
        load["data_name"] = args.data_name
    if args.data_name and not args.data_files:
        load["split"] = args.train_split
        if args.train_subset:
            load["subset"] = args.train_subset
    pre = {"max_samples": args.max_samples} if args.max_samples else {}
    step: dict[str, Any] = {"type": METHODS[args.method], "train_data_config": "train_data"}
    options = {
        "eval_dataset_size": _eval_size(args.eval_split), "text_field": args.text_field,
        "text_template": args.text_template, "max_seq_len": args.max_seq_len,
        "lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
        "max_steps": args.max_steps, "num_train_epochs": args.num_train_epochs,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "learning_rate": args.learning_rate, "lr_scheduler_type": args.lr_scheduler_type,
        "warmup_ratio": args.warmup_ratio, "seed": args.seed, "save_steps": args.save_steps,
        "logging_steps": args.logging_steps, "torch_dtype": args.torch_dtype,
    }
    step.update({k: v for k, v in options.items() if v is not None})
    if args.use_chat_template:
        step["use_chat_template"] = True
    if args.gradient_checkpointing is not None:
        step["gradient_checkpointing"] = args.gradient_checkpointing
    if args.method == "qlora":  # Olive's command: the adapter is for the full-precision base
        step["save_quant_config"] = False
    if args.target_modules:
        names = [t.strip() for t in args.target_modules.split(",") if t.strip()]
        step["target_modules"] = names[0] if names == ["all-linear"] else names
    input_model: dict[str, Any] = {"type": "HfModel", "model_path": model_path}
    if args.trust_remote_code:
        input_model["load_kwargs"] = {"trust_remote_code": True}
    return {
        "workflow_id": "finetune",
        "input_model": input_model,
        "data_configs": [{"name": "train_data", "type": "HuggingfaceContainer",
                          "load_dataset_config": load, "pre_process_data_config": pre}],
        "passes": {"finetune": step},
        "output_dir": str(Path(args.output_path).expanduser().resolve()),
        "cache_dir": str(Path(cache_dir_of(args)).expanduser().resolve()),
        "log_severity_level": 1 if args.log_level is None else args.log_level,
    }


#: Pass options whose flags have other names.
FLAG_NAMES = {"eval_dataset_size": "eval_split", "per_device_train_batch_size": "batch_size"}


def config_from_flags(step: dict[str, Any]) -> Any:
    """The LoRA config of a finetune step; a bad value raises :class:`UsageError` naming its flag."""
    from olivine_lora.config import LoRAConfig, QLoRAConfig

    cls = QLoRAConfig if step["type"] == "QLoRA" else LoRAConfig
    try:
        return cls(**{k: v for k, v in step.items() if k != "type"})
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise UsageError(f"--{FLAG_NAMES.get(field, field)}: {message}") from None


def _preflight_data(workflow: dict[str, Any], config: Any) -> None:
    """Read the local data and render it now, so bad files and columns fail in a second."""
    from olivine.config import DataConfig
    from olivine_lora.data import load_rows, render_texts, text_options

    dc = DataConfig(**workflow["data_configs"][0])
    load = dc.load_dataset_config
    local = load.get("data_files") or (load.get("data_name") and
                                       Path(str(load["data_name"])).expanduser().exists())
    if not local:
        return
    options = text_options(config, dc)
    rows = load_rows(dc)
    if options.use_chat_template:
        from olivine_lora.data import chat_messages

        for i, row in enumerate(rows.rows[:options.max_samples or None]):
            chat_messages(row, rows, i)
    else:
        render_texts(rows, options)


def meta_layers(model_path: str, trust_remote_code: bool = False) -> dict[str, tuple[int, int]] | None:
    """The linear layers of a model built from its config on torch's meta device (no weights).

    ``None`` when the config cannot be read here (a hub id without the network).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from olivine_lora.train import linear_layers

    try:
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError):
        return None
    return linear_layers(model)


def _preflight_targets(args: argparse.Namespace, model_path: str, config: Any) -> None:
    from olivine import HfModel
    from olivine_lora.train import resolve_targets

    if args.method == "qlora":  # every layer bitsandbytes quantizes, known once it has
        return
    layers = meta_layers(model_path, args.trust_remote_code)
    if layers is not None:
        resolve_targets(config, HfModel(path=model_path), layers)


def run_workflow(args: argparse.Namespace, workflow: dict[str, Any]) -> Any:
    """Run (or with ``--dry_run`` only show) ``workflow``; honour ``--save_config``."""
    from olivine.commands import run_generated

    return run_generated(workflow, dry_run=args.dry_run, save_config=args.save_config)


def cmd_finetune(args: argparse.Namespace) -> int:
    """``olivine finetune``: train a LoRA/QLoRA adapter; the output folder holds ``adapter/``."""
    from olivine import check_output_dir

    if not args.data_name and not args.data_files:
        raise UsageError("give the data: --data_files FILE (jsonl, json, csv, parquet, txt) or "
                         "--data_name (a hub dataset id)")
    if args.method == "qlora":
        from olivine_lora.qlora import missing_backend

        problem = missing_backend()
        if problem:
            raise UsageError(f"--method qlora: {problem}")
    model_path, local = _model_path(args.model)
    check_output_dir(Path(args.output_path).expanduser().resolve())
    workflow = finetune_workflow(args, model_path)
    config = config_from_flags(workflow["passes"]["finetune"])
    _preflight_data(workflow, config)
    if local:
        _preflight_targets(args, model_path, config)
    result = run_workflow(args, workflow)
    if result is None:
        return 0
    quiet = workflow["log_severity_level"] >= 4
    record_file = Path(result.output_dir) / "olivine_training.json"
    if not quiet:
        summary = result.report_path.parent / "summary.txt"
        if summary.is_file():
            print(summary.read_text(), end="")
        if record_file.is_file():
            rec = json.loads(record_file.read_text())
            line = f"  trained {rec['steps']} steps"
            if rec.get("first_loss") is not None:
                line += f", loss {rec['first_loss']:.3f} -> {rec['last_loss']:.3f}"
            if rec.get("eval_perplexity") is not None:
                line += (f", eval perplexity {rec['eval_perplexity_base']:.2f} -> "
                         f"{rec['eval_perplexity']:.2f}")
            if rec.get("tokens_per_second"):
                line += f", {rec['tokens_per_second']:.0f} tokens/s"
            print(line)
        out = Path(result.output_dir)
        print(f"  adapter: {out / 'adapter'}")
        print(f"  next: olivine generate-adapter -m {args.model} -a {out / 'adapter'} -o ONNX_FOLDER"
              f"\n        olivine auto-opt -m {args.model} --adapter_path {out / 'adapter'} -o FOLDER")
    return 0


# -- convert-adapters ------------------------------------------------------------------------
def configure_convert(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine convert-adapters``."""
    from olivine.commands import add_log_level

    p.add_argument("-a", "--adapter_path", "--adapter-path", dest="adapter_path", required=True,
                   help="a peft LoRA adapter folder (or the output folder of olivine finetune)")
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path", required=True,
                   help="the .onnx_adapter file to write (a folder gets adapter.onnx_adapter)")
    p.add_argument("-m", "--model", default=None,
                   help="the onnxruntime-genai model with LoRA inputs it is for: names, sizes "
                        "and dtype are checked against it (recommended)")
    p.add_argument("--adapter_format", choices=("onnx_adapter",), default="onnx_adapter",
                   help="file format (onnx_adapter: what onnxruntime-genai's Adapters load)")
    p.add_argument("--dtype", choices=("float32", "float16"), default=None,
                   help="weight dtype without --model (default float32; with --model: the model's)")
    add_log_level(p)


def cmd_convert(args: argparse.Namespace) -> int:
    """``olivine convert-adapters``: a peft adapter as an ``.onnx_adapter`` file."""
    from olivine_lora.adapters import read_adapter
    from olivine_lora.onnx_adapter import (
        convert_peft_adapter,
        lora_inputs,
        model_file_of,
        write_adapter_file,
    )

    adapter = read_adapter(args.adapter_path)
    inputs = None
    if args.model:
        inputs = lora_inputs(model_file_of(args.model))
        if not inputs:
            raise UsageError(f"model {args.model!r} has no LoRA inputs; export it with them first "
                             "(olivine generate-adapter)")
    params = convert_peft_adapter(adapter, inputs, args.dtype)
    target = Path(args.output_path).expanduser()
    if target.is_dir() or not target.suffix:
        target = target / "adapter.onnx_adapter"
    write_adapter_file(params, target)
    if args.log_level is None or args.log_level < 3:
        size = sum(v.nbytes for v in params.values())
        print(f"adapter: {target} ({len(params)} tensors, {size / 2**20:.2f} MiB)")
    return 0


# -- generate-adapter ------------------------------------------------------------------------
def configure_generate_adapter(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine generate-adapter``."""
    p.add_argument("-m", "--model_name_or_path", "--model-name-or-path", dest="model", required=True,
                   help="the base Hugging Face model (a folder or hub id)")
    p.add_argument("-a", "--adapter_path", "--adapter-path", dest="adapter_path", required=True,
                   help="a peft LoRA adapter for it: its modules and rank shape the LoRA inputs")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16", "int4", "int8"), default="fp32",
                   help="base weights (default fp32); LoRA weights stay float either way")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="target device")
    p.add_argument("--provider", default=None,
                   help="execution provider (default: CPU for cpu, CUDA for gpu)")
    p.add_argument("--adapter_file_name", default="adapter.onnx_adapter",
                   help="name of the adapter file written beside the model")
    p.add_argument("--trust_remote_code", action="store_true", help="allow the model's own code")
    _common(p, "adapter-model")


def generate_adapter_workflow(args: argparse.Namespace, model_path: str, adapter: Path
                              ) -> dict[str, Any]:
    """ModelBuilder on the base model with the adapter, then ExtractAdapters."""
    from olivine import DEFAULT_PROVIDER

    provider = args.provider or DEFAULT_PROVIDER[args.device]
    input_model: dict[str, Any] = {"type": "HfModel", "model_path": model_path,
                                   "adapter_path": str(adapter)}
    if args.trust_remote_code:
        input_model["load_kwargs"] = {"trust_remote_code": True}
    return {
        "workflow_id": "generate-adapter",
        "input_model": input_model,
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
            {"device": args.device, "execution_providers": [provider]}]}},
        "passes": {"builder": {"type": "ModelBuilder", "precision": args.precision},
                   "extract": {"type": "ExtractAdapters", "adapter_path": str(adapter),
                               "adapter_file_name": args.adapter_file_name}},
        "host": "local_system", "target": "local_system",
        "output_dir": str(Path(args.output_path).expanduser().resolve()),
        "cache_dir": str(Path(cache_dir_of(args)).expanduser().resolve()),
        "log_severity_level": 1 if args.log_level is None else args.log_level,
    }


def cmd_generate_adapter(args: argparse.Namespace) -> int:
    """``olivine generate-adapter``: an onnxruntime-genai model with LoRA inputs + adapter file."""
    from olivine import check_output_dir, get_plugin_host
    from olivine_lora.adapters import check_adapter_fits, read_adapter

    if get_plugin_host().passes.get("ModelBuilder") is None:
        raise UsageError("generate-adapter builds the model with the ModelBuilder pass of the "
                         "olivine-modelbuilder plugin, which is not installed")
    model_path, local = _model_path(args.model)
    adapter = read_adapter(args.adapter_path)
    reasons = adapter.unsupported_for_onnx()
    if reasons:
        raise UsageError(f"adapter {adapter.folder} cannot become LoRA inputs: {'; '.join(reasons)}; "
                         "merge it instead (olivine auto-opt --adapter_path bakes it in)")
    if local:
        layers = meta_layers(model_path, args.trust_remote_code)
        if layers is not None:
            check_adapter_fits(adapter, layers, model_path)
    check_output_dir(Path(args.output_path).expanduser().resolve())
    workflow = generate_adapter_workflow(args, model_path, adapter.folder)
    result = run_workflow(args, workflow)
    if result is not None and workflow["log_severity_level"] < 4:
        out = Path(result.output_dir)
        print(f"  model: {out}\n  adapter: {out / args.adapter_file_name}")
        print(f"  more adapters: olivine convert-adapters -a ADAPTER -m {out} -o FILE.onnx_adapter")
    return 0


COMMANDS = (
    ("finetune", "fine-tune a Hugging Face LLM with LoRA or QLoRA on local or hub data "
     "(Olive's flags)", configure_finetune, cmd_finetune),
    ("convert-adapters", "convert a peft LoRA adapter into an .onnx_adapter file for "
     "onnxruntime-genai", configure_convert, cmd_convert),
    ("generate-adapter", "build an onnxruntime-genai model whose LoRA weights are inputs, plus "
     "the adapter's .onnx_adapter file", configure_generate_adapter, cmd_generate_adapter),
)
