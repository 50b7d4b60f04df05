"""``olivine quantize``: weight-only quantization of a Hugging Face or ONNX model.

The flags become one pass of an Olive-style workflow (``--dry_run`` prints it), run
on the same engine as ``olivine run``. Every flag lands in the pass config; a flag
that the chosen algorithm or model kind cannot use is an error, never dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "weight-only int4/int8 quantization (rtn, gptq, hqq, awq) of a Hugging Face or ONNX model"
ALGORITHMS = ("rtn", "gptq", "hqq", "awq")
CALIBRATED = ("gptq", "awq")
DATA_FLAGS = ("data_files", "data_name", "text_field", "max_samples", "max_seq_len")

#: (model kind, algorithm) -> pass type
PASSES = {("hf", "rtn"): "Rtn", ("hf", "gptq"): "Gptq", ("hf", "awq"): "Awq",
          ("onnx", "rtn"): "OnnxBlockWiseRtnQuantization", ("onnx", "hqq"): "OnnxHqqQuantization",
          ("onnx", "gptq"): "OnnxGptqQuantization"}


def configure(p: argparse.ArgumentParser) -> None:
    """The flags (Olive's names where Olive has them)."""
    from olivine.commands import add_cache_dir, add_dry_run, add_log_level

    p.add_argument("-m", "--model_name_or_path", "--model-name-or-path", dest="model", required=True,
                   help="a Hugging Face model folder or hub id, an .onnx file, or a folder holding one")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="rtn",
                   help="rtn (default), gptq and awq (need calibration text; awq on Hugging Face "
                        "models only), hqq (ONNX models)")
    p.add_argument("-a", "--adapter_path", default=None,
                   help="Olive's LoRA adapter flag: not taken here (adapters are not merged "
                        "before quantizing); merge the adapter into the model first")
    p.add_argument("--precision", choices=("int4", "int8"), default="int4",
                   help="weight precision (default: int4)")
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path", default="quantized-model",
                   help="output folder (default: quantized-model)")
    p.add_argument("--block_size", "--group_size", dest="block_size", type=int, default=None,
                   help="weights per quantization block: 16, 32, 64, 128 or 256 (default 128; "
                        "32 for hqq, where it measured better than rtn)")
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--symmetric", dest="symmetric", action="store_true", default=None,
                     help="symmetric blocks without zero points (the default for rtn on ONNX)")
    sym.add_argument("--asymmetric", dest="symmetric", action="store_false",
                     help="a zero point per block (the default for the Hugging Face passes)")
    p.add_argument("--accuracy_level", type=int, default=None, choices=range(5), metavar="{0..4}",
                   help="ONNX models: MatMulNBits compute type (1 fp32, 2 fp16, 3 bf16, 4 int8)")
    p.add_argument("--quantize_embeddings", action="store_true",
                   help="ONNX rtn: also quantize Gather embedding tables (GatherBlockQuantized)")
    p.add_argument("--nodes_to_exclude", nargs="+", default=None, metavar="NODE",
                   help="ONNX models: node names to keep in float")
    p.add_argument("--lm_head", action="store_true",
                   help="Hugging Face models: also quantize the LM head")
    p.add_argument("--act_order", action="store_true", help="gptq: act-order (desc_act)")
    p.add_argument("--damp_percent", type=float, default=None, help="gptq: Hessian damping (0.01)")
    p.add_argument("--data_files", nargs="+", default=None, metavar="FILE",
                   help="calibration text: .txt, .jsonl, .json, .csv, .tsv or .parquet files")
    p.add_argument("--data_name", default=None,
                   help="calibration text from a Hugging Face hub dataset (needs datasets, network)")
    p.add_argument("--text_field", default=None, help="the field holding the text (default: text)")
    p.add_argument("--max_samples", type=int, default=None, help="calibration windows (default 128)")
    p.add_argument("--max_seq_len", type=int, default=None,
                   help="tokens per calibration window (default 512)")
    p.add_argument("--trust_remote_code", action="store_true",
                   help="allow the model's own code from its repository")
    add_cache_dir(p)
    add_dry_run(p, help="check the flags and print the workflow without running it")
    add_log_level(p)


def model_kind(model: str) -> tuple[str, dict[str, Any]]:
    """``("hf" | "onnx", input_model dict)`` for ``-m``."""
    from olivine import UsageError

    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".onnx":
            raise UsageError(f"-m {model}: a file must be an .onnx model; for a Hugging Face model "
                             "give its folder")
        return "onnx", {"type": "ONNXModel", "model_path": str(path.resolve())}
    if path.is_dir():
        if any(path.glob("*.onnx")):
            return "onnx", {"type": "ONNXModel", "model_path": str(path.resolve())}
        if (path / "config.json").is_file():
            return "hf", {"type": "HfModel", "model_path": str(path.resolve())}
        raise UsageError(f"-m {model}: the folder holds neither an .onnx model nor a Hugging Face "
                         "config.json")
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return "hf", {"type": "HfModel", "model_path": model}
    raise UsageError(f"-m {model}: no such file or folder (nor a hub id like org/name)")


def pass_config(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The pass entry for the flags; raises UsageError for flags the pass cannot take."""
    from olivine import UsageError

    algo = args.algorithm
    ptype = PASSES.get((kind, algo))
    if ptype is None:
        if kind == "onnx":
            raise UsageError(f"--algorithm {algo} needs the Hugging Face model (it calibrates in torch); "
                             "quantize the Hugging Face folder, then convert it with ModelBuilder "
                             "(olivine auto-opt), or use rtn, hqq or gptq on the ONNX model")
        raise UsageError(f"--algorithm {algo} runs on ONNX models (its fractional zero points do not "
                         "fit the GPTQ checkpoint format); convert the model first (olivine auto-opt "
                         "--precision fp32), or use rtn, gptq or awq on the Hugging Face model")

    def refuse(flag: str, why: str) -> None:
        raise UsageError(f"--{flag}: {why}")

    given = {f for f in DATA_FLAGS if getattr(args, f) is not None}
    if given and algo not in CALIBRATED:
        refuse(sorted(given)[0], f"{algo} uses no calibration data; drop the flag or use "
                                 "--algorithm gptq or awq")
    if algo in CALIBRATED and not (args.data_files or args.data_name):
        refuse("data_files", f"{algo} needs calibration text: give --data_files (local .txt, .jsonl, "
                             ".csv or .parquet files) or --data_name (a hub dataset)")
    if kind == "hf":
        for flag in ("accuracy_level", "nodes_to_exclude"):
            if getattr(args, flag) is not None:
                refuse(flag, "applies to ONNX models; the Hugging Face passes write a GPTQ-format "
                             "folder (set it on ModelBuilder when converting)")
        if args.quantize_embeddings:
            refuse("quantize_embeddings", "applies to ONNX models (a GPTQ-format folder keeps "
                                          "embeddings in float)")
    else:
        if args.lm_head:
            refuse("lm_head", "applies to Hugging Face models; on ONNX models every MatMul is "
                              "quantized unless listed in --nodes_to_exclude")
    if algo != "gptq":
        for flag in ("act_order", "damp_percent"):
            if getattr(args, flag) not in (None, False):
                refuse(flag, "applies to --algorithm gptq")
    if algo == "hqq" and args.symmetric:
        refuse("symmetric", "hqq fits a zero point per block; it has no symmetric form")
    if algo == "hqq" and args.quantize_embeddings:
        refuse("quantize_embeddings", "hqq's fractional zero points do not fit GatherBlockQuantized")

    cfg: dict[str, Any] = {"type": ptype, "bits": 8 if args.precision == "int8" else 4}
    block_size = args.block_size or (32 if algo == "hqq" else 128)
    if kind == "onnx":
        cfg["block_size"] = block_size
        if algo == "rtn":
            cfg["is_symmetric"] = True if args.symmetric is None else args.symmetric
            cfg["op_types_to_quantize"] = ["MatMul", "Gather"] if args.quantize_embeddings else ["MatMul"]
        if algo == "gptq":
            if args.quantize_embeddings:
                refuse("quantize_embeddings", "gptq quantizes MatMul weights; use rtn for embeddings")
            cfg["is_symmetric"] = bool(args.symmetric)
            cfg["act_order"] = bool(args.act_order)
            if args.damp_percent is not None:
                cfg["damp_percent"] = args.damp_percent
            _data_flags(args, cfg)
        if args.accuracy_level is not None:
            cfg["accuracy_level"] = args.accuracy_level
        if args.nodes_to_exclude:
            cfg["nodes_to_exclude"] = list(args.nodes_to_exclude)
        return cfg
    cfg["group_size"] = block_size
    cfg["sym"] = False if args.symmetric is None else args.symmetric
    if args.lm_head:
        cfg["lm_head"] = True
    if algo == "gptq":
        cfg["desc_act"] = bool(args.act_order)
        if args.damp_percent is not None:
            cfg["damp_percent"] = args.damp_percent
    if algo in CALIBRATED:
        _data_flags(args, cfg)
    return cfg


def _data_flags(args: argparse.Namespace, cfg: dict[str, Any]) -> None:
    """Copy the calibration flags into a pass entry."""
    if args.data_files:
        cfg["data_files"] = [str(Path(f).expanduser().resolve()) for f in args.data_files]
    if args.data_name:
        cfg["data_name"] = args.data_name
    for flag in ("text_field", "max_samples", "max_seq_len"):
        if getattr(args, flag) is not None:
            cfg[flag] = getattr(args, flag)


def _refuse_adapter(value: str | None) -> None:
    """``-a``/``--adapter_path`` is Olive's adapter flag (it was ``--algorithm`` in olivine 0.1)."""
    from olivine import UsageError

    if value is None:
        return
    if value in ALGORITHMS and not Path(value).exists():
        raise UsageError(f"-a {value}: -a is --adapter_path, as in Olive's quantize; for the "
                         f"algorithm write --algorithm {value}")
    raise UsageError(f"--adapter_path {value}: quantize does not merge adapters here; merge the "
                     "adapter into the model first (e.g. peft's merge_and_unload, or olivine "
                     "capture-onnx-graph --use_model_builder -a for an ONNX model) and quantize that")


def build_workflow(args: argparse.Namespace) -> dict[str, Any]:
    """The workflow dict for the flags."""
    from olivine.commands import cache_dir

    _refuse_adapter(args.adapter_path)
    kind, input_model = model_kind(args.model)
    if args.trust_remote_code and kind == "hf":
        input_model["load_kwargs"] = {"trust_remote_code": True}
    cache = cache_dir(args.cache_dir)
    return {
        "workflow_id": "quantize",
        "input_model": input_model,
        "passes": {"quantize": pass_config(args, kind)},
        "output_dir": str(Path(args.output_path).expanduser().resolve()),
        "cache_dir": str(Path(cache).expanduser().resolve()),
        "log_severity_level": 1 if args.log_level is None else args.log_level,
    }


def handle(args: argparse.Namespace) -> int:
    """Run ``olivine quantize``."""
    from olivine import check_output_dir
    from olivine.commands import print_summary, run_generated

    workflow = build_workflow(args)
    result = run_generated(workflow, dry_run=args.dry_run,
                           before_run=lambda: check_output_dir(Path(workflow["output_dir"])))
    if result is not None and workflow["log_severity_level"] < 4:
        print_summary(result)
    return 0
