"""``olivine extract-adapters``: LoRA weights out into files (Olive's command and formats).

Two kinds of input:

- a folder holding peft adapters (``adapter_config.json`` in it or in sub-folders, as Olive
  reads them: one file per adapter, named by its folder; a folder that is itself an adapter
  gives ``default``);
- an ONNX model built with an adapter (ModelBuilder's ``...lora_A.MatMul.weight``
  initializers; int4/int8 LoRA weights are dequantized): one file, ``default``.

Every file holds ``{name: array}`` in onnxruntime-genai's layout: names as the model builder
writes them (``model.layers.0.attn.q_proj.lora_A.MatMul.weight``), ``A`` as ``[in, r]``,
``B`` as ``[r, out]`` times peft's scaling; fused ``qkv_proj``/``gate_up_proj`` adapters are
split per projection as Olive does. Formats: ``onnx_adapter`` (what ``onnxruntime``'s
``AdapterFormat`` and onnxruntime-genai's ``Adapters`` read), ``numpy`` (``.npz``),
``safetensors``, ``pt``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from olivine import UsageError

FORMATS = ("pt", "numpy", "safetensors", "onnx_adapter")


def configure(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine extract-adapters`` (Olive's)."""
    from olivine.commands import add_log_level

    p.add_argument("-m", "--model_name_or_path", required=True,
                   help="a folder of peft adapters (or one adapter), or an ONNX model (file or "
                        "folder) built with an adapter; a hub id is downloaded")
    p.add_argument("-t", "--task", default=None,
                   help="accepted as Olive does; the adapters' layout does not depend on it")
    p.add_argument("--trust_remote_code", action="store_true",
                   help="trust remote code when reading the model's config")
    p.add_argument("--test", nargs="?", const="", default=None,
                   help="not supported: a randomly initialized model holds no adapter")
    p.add_argument("--model_script", default=None, help="not supported: give an adapter folder")
    p.add_argument("--script_dir", default=None, help="not supported: give an adapter folder")
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path", default="adapters",
                   help="folder of the adapter files (default adapters)")
    p.add_argument("-f", "--format", required=True, choices=FORMATS,
                   help="file format of the adapters")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                   help="dtype of the saved weights (default float32)")
    p.add_argument("--cache_dir", "--cache-dir", dest="cache_dir", default=None,
                   help="where a hub download goes (default: Hugging Face's cache); adapters "
                        "under it are not read as inputs")
    p.add_argument("--dry_run", "--dry-run", dest="dry_run", action="store_true",
                   help="list the adapters and their tensors; write nothing")
    add_log_level(p)
    if not any(a.dest == "disable_telemetry" for a in p._actions):
        p.add_argument("--disable_telemetry", action="store_true",
                       help="olivine sends no telemetry (accepted for Olive's command lines)")


def _local(args: argparse.Namespace) -> Path:
    path = Path(args.model_name_or_path).expanduser()
    if path.exists():
        return path
    if "/" not in args.model_name_or_path or args.model_name_or_path.startswith((".", "/", "~")):
        raise UsageError(f"--model_name_or_path {args.model_name_or_path!r}: no such file or folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(args.model_name_or_path, cache_dir=args.cache_dir))
    except Exception as exc:
        raise UsageError(f"--model_name_or_path {args.model_name_or_path!r}: not a local path, and "
                         f"the hub cannot give it ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from None


def _adapter_dirs(root: Path, cache_dir: str | None) -> list[Path]:
    skip = Path(cache_dir).expanduser().resolve() if cache_dir else None
    found = []
    for config in sorted(root.rglob("adapter_config.json")):
        folder = config.parent.resolve()
        if skip is not None and folder.is_relative_to(skip):
            continue
        found.append(config.parent)
    return found


def _split_fused(params: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    """Olive's split of fused ``qkv_proj``/``gate_up_proj`` weights into per-projection ones."""
    fused = [n for n in params if ".qkv_proj." in n or ".gate_up_proj." in n]
    if not fused:
        return params
    path = config_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"--model_name_or_path {str(config_dir)!r}: the adapters have fused "
                         "qkv_proj/gate_up_proj weights, and splitting them needs the base model's "
                         "config.json beside the adapter folders")
    cfg = json.loads(path.read_text())
    head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    q = cfg["num_attention_heads"] * head
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * head
    inter = cfg["intermediate_size"]
    out = {n: v for n, v in params.items() if n not in fused}
    for name in fused:
        value, is_b = params[name], ".lora_B." in name
        if ".qkv_proj." in name:
            parts = {"q_proj": (0, q), "k_proj": (q, q + kv), "v_proj": (q + kv, None)}
            old = "qkv_proj"
        else:
            parts = {"gate_proj": (0, inter), "up_proj": (inter, None)}
            old = "gate_up_proj"
        for new, (lo, hi) in parts.items():
            out[name.replace(old, new)] = value[:, lo:hi].copy() if is_b else value.copy()
    return out


def adapter_sets(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``{adapter name: {tensor name: array}}`` read from ``--model_name_or_path``."""
    import numpy as np

    from olivine_lora.adapters import read_adapter
    from olivine_lora.onnx_adapter import convert_peft_adapter, extract_adapters, model_file_of

    root = _local(args)
    if root.is_dir():
        dirs = _adapter_dirs(root, args.cache_dir)
        if dirs:
            out = {}
            for folder in dirs:
                name = "default" if folder.resolve() == root.resolve() else folder.name
                if name in out:
                    raise UsageError(f"--model_name_or_path: two adapter folders are named {name!r}; "
                                     "file names come from folder names")
                params = convert_peft_adapter(read_adapter(folder), None, args.dtype)
                out[name] = _split_fused(params, root)
            return out
    if root.is_file() and root.suffix != ".onnx":
        raise UsageError(f"--model_name_or_path {str(root)!r}: expected an .onnx file or a folder")
    if root.is_dir() and not list(root.glob("*.onnx")):
        raise UsageError(f"--model_name_or_path {str(root)!r} holds no peft adapter "
                         "(adapter_config.json) and no .onnx model: nothing to extract")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="olivine-extract-") as tmp:
        found = extract_adapters(model_file_of(root), Path(tmp) / "model")
    weights = {k: np.ascontiguousarray(v.astype(args.dtype)) for k, v in found.weights.items()}
    return {"default": weights}


def save(weights: dict[str, Any], target: Path, fmt: str) -> Path:
    """Write ``weights`` to ``target`` (its suffix added) whole: a temporary file, then a rename."""
    suffix = ".npz" if fmt == "numpy" else f".{fmt}"
    if not str(target).endswith(suffix):
        target = Path(str(target) + suffix)  # appended: adapter names may hold periods
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{suffix}")
    try:
        if fmt == "numpy":
            import numpy as np

            np.savez(tmp, **weights)
        elif fmt == "safetensors":
            from safetensors.numpy import save_file

            save_file(weights, str(tmp))
        elif fmt == "pt":
            import torch

            torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, tmp)
        else:
            from olivine_lora.onnx_adapter import write_adapter_file

            write_adapter_file(weights, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def cmd_extract_adapters(args: argparse.Namespace) -> int:
    """``olivine extract-adapters``."""
    if args.test is not None:
        raise UsageError("--test: not supported by extract-adapters: a randomly initialized model "
                         "holds no adapter weights; give a folder of peft adapters")
    if args.model_script or args.script_dir:
        flag = "--model_script" if args.model_script else "--script_dir"
        raise UsageError(f"{flag}: extract-adapters reads peft adapter folders and ONNX models, not "
                         "PyTorch model scripts")
    sets = adapter_sets(args)
    out = Path(args.output_path).expanduser()
    for name, weights in sets.items():
        size = sum(v.nbytes for v in weights.values())
        if args.dry_run:
            print(f"{name}: {len(weights)} tensors, {size / 2**20:.2f} MiB ({args.dtype})")
            for key in sorted(weights)[:6]:
                print(f"    {key} {list(weights[key].shape)}")
            continue
        path = save(weights, out / name, args.format)
        print(f"Exported {name} adapter weights to {path}")
    return 0
