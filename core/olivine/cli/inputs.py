"""Olive's model flags (``-m``, ``-t``, ``--trust_remote_code``, ``--test``, ``-a``,
``--model_script``, ``--script_dir``, ``-o``) and the ``input_model`` section they name.

Shared by the commands that take one model on the command line (``run-pass``, ``optimize``,
...). The rules for what ``-m`` names are Olive's, in Olive's order: the output folder of an
earlier command (its ``model_config.json``), a PyTorch model with ``--model_script``, a
``https://huggingface.co/org/name`` address, a local ``.onnx`` file or a folder holding one,
a local Hugging Face folder, else a hub id (``org/name``; a hub id needs the network when
the command runs, and olivine's own checks name it when it is neither).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from olivine.errors import UsageError

#: Olive's HfModel task when the command names none (Olive leaves it to the model handler).
DEFAULT_HF_TASK = "text-generation-with-past"
HF_URL = re.compile(r"https://huggingface\.co/([^/]+/[^/]+)(?:/.*)?")


def add_input_model_options(p: argparse.ArgumentParser, *, hf: bool = True, adapter: bool = False,
                            pt: bool = False, default_output: str | None = None,
                            required: bool = True) -> None:
    """Olive's model flags, with its names, defaults and help."""
    p.add_argument("-m", "--model_name_or_path", "--model-name-or-path", dest="model_name_or_path",
                   required=required and not pt, default=None,
                   help="the input model: a Hugging Face folder or hub id (org/name), an .onnx "
                        "file or a folder holding one, or an earlier command's output folder")
    if hf:
        p.add_argument("-t", "--task", default=None,
                       help=f"the Hugging Face task (default: {DEFAULT_HF_TASK})")
        p.add_argument("--trust_remote_code", action="store_true",
                       help="allow the model's own code from its repository")
        p.add_argument("--test", nargs="?", const=True, default=None, metavar="FOLDER",
                       help="use a randomly initialized model of the same Hugging Face "
                            "architecture with 2 hidden layers; FOLDER keeps it for reuse "
                            "(default: test_model in the output folder)")
    if adapter:
        p.add_argument("-a", "--adapter_path", default=None,
                       help="a LoRA adapter folder (peft) for the Hugging Face model")
    if pt:
        p.add_argument("--model_script", default=None,
                       help="a Python file defining _model_loader (and _io_config or "
                            "_dummy_inputs): a PyTorch model")
        p.add_argument("--script_dir", default=None,
                       help="a folder the model script imports from")
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path",
                   required=required and default_output is None, default=default_output,
                   help="output folder" + (f" (default: {default_output})" if default_output
                                           else ""))


def add_disable_telemetry(p: argparse.ArgumentParser) -> None:
    """Olive's ``--disable_telemetry`` on ``p`` (unless it has it): olivine sends no telemetry,
    so the flag asks for what is always so."""
    if "--disable_telemetry" not in p._option_string_actions:
        p.add_argument("--disable_telemetry", action="store_true",
                       help="accepted for Olive (olivine sends no telemetry)")


def _onnx_input(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = {"type": "ONNXModel", "model_path": str(path)}
    if path.is_dir():
        files = sorted(path.glob("*.onnx"))
        if len(files) > 1:
            names = ", ".join(f.name for f in files)
            raise UsageError(f"--model_name_or_path {str(path)!r}: the folder holds several .onnx "
                             f"files ({names}); name one of them")
        config["onnx_file_name"] = files[0].name
    return config


def _hf_input(args: argparse.Namespace, model_path: str) -> dict[str, Any]:
    config: dict[str, Any] = {"type": "HfModel", "model_path": model_path,
                              "load_kwargs": {"attn_implementation": "eager"}}
    if getattr(args, "task", None):
        config["task"] = args.task
    if getattr(args, "adapter_path", None):
        config["adapter_path"] = args.adapter_path
    if getattr(args, "trust_remote_code", False):
        config["load_kwargs"]["trust_remote_code"] = True
    return config


def _pt_input(args: argparse.Namespace, model_path: str | None) -> dict[str, Any]:
    script = Path(args.model_script)
    if not script.is_file():
        raise UsageError(f"--model_script {args.model_script!r}: no such file")
    text = script.read_text(encoding="utf-8", errors="replace")
    if "def _model_loader" not in text:
        raise UsageError(f"--model_script {args.model_script!r}: it defines no _model_loader "
                         "(a function that takes the model path and returns the torch model)")
    config: dict[str, Any] = {"type": "PyTorchModel", "model_script": args.model_script,
                              "model_loader": "_model_loader"}
    if args.script_dir:
        config["script_dir"] = args.script_dir
    if model_path:
        config["model_path"] = model_path
    for key, func in (("io_config", "_io_config"), ("dummy_inputs_func", "_dummy_inputs"),
                      ("model_file_format", "_model_file_format")):
        if f"def {func}" in text:
            config[key] = func
    if "io_config" not in config and "dummy_inputs_func" not in config:
        raise UsageError(f"--model_script {args.model_script!r}: it defines neither _io_config "
                         "nor _dummy_inputs; the export needs one of them")
    return config


def input_model_config(args: argparse.Namespace) -> dict[str, Any]:
    """The workflow's ``input_model`` for the model flags (Olive's rules, see the module)."""
    name = args.model_name_or_path
    script = getattr(args, "model_script", None)
    if name is None:
        if script:
            return _pt_input(args, None)
        raise UsageError("--model_name_or_path is required (or --model_script for a PyTorch model)")
    path = Path(name).expanduser()
    saved = path / "model_config.json"
    if path.is_dir() and saved.is_file():  # an earlier command's output (Olive's form)
        try:
            data = json.loads(saved.read_text(encoding="utf-8"))
            config = {"type": data["type"], **dict(data.get("config") or {})}
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--model_name_or_path {name!r}: {saved.name} is not a model "
                             f"config ({exc})") from None
        if config.get("onnx_file_name") and (path / config["onnx_file_name"]).exists():
            config["model_path"] = str(path)
        if getattr(args, "adapter_path", None):
            if str(config["type"]).lower() != "hfmodel":
                raise UsageError("--adapter_path: only a Hugging Face model takes an adapter; "
                                 f"{name!r} holds a {config['type']}")
            config["adapter_path"] = args.adapter_path
        return config
    if script:
        return _pt_input(args, name)
    match = HF_URL.search(name)
    if match:
        return _hf_input(args, match.group(1))
    if not path.exists():
        return _hf_input(args, name)  # a hub id; the workflow's checks say when it is not one
    if (path.is_file() and path.suffix == ".onnx") or (path.is_dir() and any(path.glob("*.onnx"))):
        return _onnx_input(path)
    return _hf_input(args, name)


def is_hf(config: dict[str, Any]) -> bool:
    """True when ``config`` is a Hugging Face input model."""
    return str(config.get("type", "")).lower() == "hfmodel"
