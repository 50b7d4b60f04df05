"""``--test``: a randomly initialized model of the input's Hugging Face architecture, 2 layers.

Olive's commands take ``--test [FOLDER]`` to try a workflow on a model of the right shape
without its weights. The model is made from the input's ``config.json`` (a local folder, or
a hub id whose config is downloaded or already in the Hugging Face cache) with
``num_hidden_layers`` set to 2, weights drawn with a fixed seed, saved with the input's
tokenizer into FOLDER (default: a folder per source model in the step cache) and reused
from there on the next run. The output folder gets Olive's marker file, ``olive_test_output.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from olivine.errors import UsageError

MARKER = "olive_test_output.json"
HIDDEN_LAYERS = 2


def test_model_folder(test: Any, cache_dir: str, source: str) -> Path:
    """The folder ``--test`` names; bare ``--test``: one per source model in the step cache.

    (Olive keeps it in ``test_model`` of the output folder; olivine publishes that folder
    whole after the run, so the model the run reads cannot live there.)
    """
    if test is not True:
        return Path(str(test)).expanduser().resolve()
    import hashlib

    from olivine.cache import Cache

    root = Path(cache_dir).expanduser().resolve()
    Cache(root).ensure()  # a folder of olivine's: the cache accepts what is kept under it
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source).name)[:40]
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:12]
    return root / "test-models" / f"{stem}-{digest}"


def mark_output_folder(output_path: str) -> None:
    """Write Olive's marker into a ``--test`` run's output folder (listed with its files)."""
    from olivine.output import record_file

    out = Path(output_path).expanduser().resolve()
    if out.is_dir():
        marker = out / MARKER
        marker.write_text(json.dumps({"type": "olive_hf_test_output"}, indent=2) + "\n")
        record_file(out, marker)


def _set_layers(config: Any) -> None:
    for holder in (config, getattr(config, "text_config", None)):
        if holder is not None and hasattr(holder, "num_hidden_layers"):
            holder.num_hidden_layers = HIDDEN_LAYERS
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list):
        config.layer_types = layer_types[:HIDDEN_LAYERS]


def build_test_model(source: str, folder: Path, task: str | None, trust_remote_code: bool = False,
                     seed: int = 0) -> Path:
    """Make (or reuse) the random 2-layer model of ``source``'s architecture in ``folder``."""
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise UsageError(f"--test needs torch and transformers ({exc})") from None
    try:
        config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--test: cannot read the model config of {source!r}: "
                         f"{' '.join(str(exc).split())[:300]}") from None
    _set_layers(config)
    generative = task is None or task.startswith("text-generation")
    auto = transformers.AutoModelForCausalLM if generative else transformers.AutoModel
    torch.manual_seed(seed)
    model = auto.from_config(config, trust_remote_code=trust_remote_code)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source,
                                                               trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        tokenizer = None  # a model without a tokenizer (or one not cached): weights only
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
