"""``olivine generate-cost-model``: the csv of per-module costs that ``CaptureSplitInfo`` reads.

One row per leaf module of the Hugging Face model, in ``named_modules`` order, with Olive's
columns ``module,num_params,num_bytes,num_flops``: bytes are the parameters at
``--weight_precision``; FLOPs are ``2 x params`` for Linear, 1 for Embedding, ``4 x hidden``
for LayerNorm/RMSNorm, ``6 x hidden`` for SiLU and 0 otherwise, where ``hidden`` is the
width of the last Linear or Embedding seen. The model is built on torch's ``meta`` device
from its config: no weights are read.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from olivine import UsageError

#: Bytes per weight of each precision (Olive's table).
PRECISION_BYTES: dict[str, float] = {
    "fp32": 4, "fp16": 2, "fp8": 1, "int32": 4, "uint32": 4, "int16": 2, "uint16": 2, "int8": 1,
    "uint8": 1, "int4": 0.5, "uint4": 0.5, "nf4": 0.5, "fp4": 0.5}
_TASK_CLASSES = {"text-generation": "AutoModelForCausalLM",
                 "text-classification": "AutoModelForSequenceClassification",
                 "token-classification": "AutoModelForTokenClassification",
                 "question-answering": "AutoModelForQuestionAnswering",
                 "fill-mask": "AutoModelForMaskedLM", "feature-extraction": "AutoModel"}


def configure(p: argparse.ArgumentParser) -> None:
    """Flags of ``olivine generate-cost-model`` (Olive's)."""
    from olivine.commands import add_log_level

    p.add_argument("-m", "--model_name_or_path", required=True,
                   help="a Hugging Face model: a local folder or a hub id")
    p.add_argument("-t", "--task", default="text-generation-with-past",
                   help="the model's task (default text-generation-with-past)")
    p.add_argument("--trust_remote_code", action="store_true",
                   help="trust remote code when loading the model")
    p.add_argument("--test", nargs="?", const="", default=None, metavar="FOLDER",
                   help="Olive's test model: the same architecture with 2 hidden layers (the costs "
                        "come from the config alone, so FOLDER, where Olive keeps the random "
                        "weights, is not written)")
    p.add_argument("-o", "--output_path", "--output-path", dest="output_path",
                   default="cost-model.csv", help="the csv to write (default cost-model.csv; "
                                                  ".csv is appended when missing)")
    p.add_argument("-p", "--weight_precision", default="fp16", choices=list(PRECISION_BYTES),
                   help="weight precision (default fp16)")
    p.add_argument("--dry_run", "--dry-run", dest="dry_run", action="store_true",
                   help="print the rows instead of writing the csv")
    add_log_level(p)
    if not any(a.dest == "disable_telemetry" for a in p._actions):
        p.add_argument("--disable_telemetry", action="store_true",
                       help="olivine sends no telemetry (accepted for Olive's command lines)")


def test_config(config: Any, layers: int = 2) -> Any:
    """Olive's ``--test`` model config: ``layers`` hidden layers, the rest unchanged."""
    found = False
    for name in ("num_hidden_layers", "num_layers", "n_layer", "n_layers"):
        if hasattr(config, name):
            setattr(config, name, layers)
            found = True
    if not found:
        raise UsageError("--test: the model's config has no hidden-layer count (num_hidden_layers, "
                         "num_layers, n_layer or n_layers) to set to 2")
    if isinstance(getattr(config, "layer_types", None), (list, tuple)):
        config.layer_types = config.layer_types[:layers]
    return config


def meta_model(path: str, task: str, trust_remote_code: bool, test: bool = False) -> Any:
    """The model of ``path`` for ``task``, built on the meta device (no weights); with ``test``,
    Olive's 2-layer test model of the same architecture."""
    try:
        import torch
        import transformers
    except ImportError:
        raise UsageError("generate-cost-model needs torch and transformers: "
                         "pip install 'olivine-onnx[split]'") from None
    base = task.removesuffix("-with-past")
    if base not in _TASK_CLASSES:
        raise UsageError(f"--task: {task!r} is not one of {', '.join(sorted(_TASK_CLASSES))} "
                         "(each may end in -with-past)")
    try:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        where = "a local folder with config.json" if os.path.exists(path) else \
            "a hub id (the hub is unreachable or the id unknown)"
        raise UsageError(f"--model_name_or_path {path!r}: cannot read its transformers config as "
                         f"{where}: {' '.join(str(exc).split())[:300]}") from None
    cls = getattr(transformers, _TASK_CLASSES[base])
    if test:
        config = test_config(config)
    with torch.device("meta"):
        return cls.from_config(config, trust_remote_code=trust_remote_code)


def module_costs(model: Any, precision: str) -> list[tuple[str, int, float, int]]:
    """``(module, params, bytes, flops)`` of every leaf module, in order."""
    import torch

    per_weight = PRECISION_BYTES[precision]
    rows, hidden = [], 0
    for name, module in model.named_modules():
        if len(module._modules):  # not a leaf
            continue
        params = sum(p.numel() for p in module.parameters())
        if isinstance(module, torch.nn.Linear):
            hidden, flops = module.out_features, 2 * params
        elif isinstance(module, torch.nn.Embedding):
            hidden, flops = module.embedding_dim, 1
        elif isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
            flops = 4 * hidden
        elif isinstance(module, torch.nn.SiLU):
            flops = 6 * hidden
        else:
            flops = 0
        rows.append((name, params, params * per_weight, flops))
    return rows


def _bytes_text(value: float) -> str:
    # whole bytes: CaptureSplitInfo (Olive's too) reads the column as an integer; 4-bit weights
    # of an odd count round up
    return str(math.ceil(value))


def cmd_generate_cost_model(args: argparse.Namespace) -> int:
    """``olivine generate-cost-model``."""
    out = str(args.output_path)
    if not out.endswith(".csv"):
        out += ".csv"  # appended, not a suffix swap: model names hold periods
    model = meta_model(args.model_name_or_path, args.task, args.trust_remote_code,
                       test=args.test is not None)
    rows = module_costs(model, args.weight_precision)
    lines = ["module,num_params,num_bytes,num_flops"]
    lines += [f"{name},{params},{_bytes_text(nbytes)},{flops}" for name, params, nbytes, flops in rows]
    total = sum(math.ceil(r[2]) for r in rows)
    if args.dry_run:
        print("\n".join(lines))
        print(f"(dry run: {out} not written) total {total} bytes for {args.weight_precision}")
        return 0
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, target)  # the csv appears whole
    print(f"Cost model written to {target}")
    print(f"Total cost: {total} bytes for {args.weight_precision} precision.")
    return 0
