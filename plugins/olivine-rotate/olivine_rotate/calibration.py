"""SliceGPT's calibration samples from a workflow ``data_configs`` entry.

Rows come from the data config's ``load_dataset`` component (local files, a hub dataset or
a user script's loader); ``pre_process_data_config`` is read with Olive's text-generation
options: ``text_cols`` (or ``input_cols``), ``strategy`` (``join``: the rows joined by
``joiner`` and cut into ``max_seq_len``-token windows; ``line-by-line``: one row a sample),
``max_seq_len``, ``max_samples``, ``add_special_tokens``. Then, as in Olive, a seeded
random ``calibration_nsamples`` of the samples in batches of ``calibration_batch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from olivine import HfModel, PassContext, UsageError

KNOWN = {"text_cols", "input_cols", "strategy", "joiner", "max_seq_len", "max_samples",
         "add_special_tokens", "trust_remote_code", "model_name", "task", "pad_to_max_len",
         "padding_side", "use_attention_mask", "drop_short_sequences"}
STRATEGIES = ("join", "line-by-line")


def _texts(rows: Any, cols: Sequence[str], what: str) -> list[str]:
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(" ".join(str(row[c]) for c in cols))
        except (KeyError, TypeError):
            raise UsageError(f"{what}: row {i + 1} has no column {cols!r} (set text_cols)") from None
    return out


def samples(dc: Any, tokenizer: Any) -> list[Any]:
    """The tokenized samples (1-D ``input_ids`` tensors) of data config ``dc``."""
    import torch

    from olivine.data import resolve, section_options

    what = f"data config {dc.name!r}"
    _, pre = section_options(dc, "pre_process_data")
    unknown = sorted(set(pre) - KNOWN)
    if unknown:
        raise UsageError(f"{what}: pre_process_data_config option {unknown[0]!r} is not one SliceGPT "
                         f"reads; it reads {', '.join(sorted(KNOWN))}")
    strategy = str(pre.get("strategy", "join"))
    if strategy not in STRATEGIES:
        raise UsageError(f"{what}: strategy {strategy!r} is not supported for SliceGPT calibration; "
                         f"use one of {', '.join(STRATEGIES)}")
    if str(pre.get("padding_side", "right")) != "right":
        raise UsageError(f"{what}: padding_side must be 'right' for SliceGPT calibration")
    cols = pre.get("text_cols") or pre.get("input_cols") or ["text"]
    cols = [cols] if isinstance(cols, str) else list(cols)
    seq = int(pre.get("max_seq_len", 1024))
    limit = pre.get("max_samples")
    special = bool(pre.get("add_special_tokens", True))
    rows = resolve(dc, kinds=("load_dataset",)).load_dataset()
    texts = [t for t in _texts(rows, cols, what) if t.strip()]
    if strategy == "join":
        bos = (tokenizer.bos_token or "") if special else ""
        eos = (tokenizer.eos_token or "") if special else ""
        joined = str(pre.get("joiner", "\n\n")).join(f"{bos}{t}{eos}" for t in texts)
        ids = torch.tensor(tokenizer(joined, add_special_tokens=False)["input_ids"], dtype=torch.long)
        out = [ids[i:i + seq] for i in range(0, len(ids) - seq + 1, seq)]
    else:
        out = [torch.tensor(tokenizer(t, add_special_tokens=special, truncation=True,
                                      max_length=seq)["input_ids"], dtype=torch.long) for t in texts]
    if limit is not None:
        out = out[:int(limit)]
    if not out:
        raise UsageError(f"{what} gives no calibration sample (with strategy {strategy!r} the text "
                         f"must hold at least max_seq_len = {seq} tokens)")
    return out


def calibration_batches(config: Any, context: PassContext, model: HfModel,
                        folder: Path) -> list[dict[str, Any]]:
    """``calibration_nsamples`` samples drawn with ``seed``, batched (right padding, a mask)."""
    import torch
    from transformers import AutoTokenizer

    name = config.calibration_data_config
    dc = context.data_configs.get(name)
    if dc is None:
        raise UsageError(f"calibration_data_config: no data_configs entry named {name!r}")
    trust = bool(model.load_options().get("trust_remote_code", False))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
    except (OSError, ValueError) as exc:
        raise UsageError(f"SliceGPT needs the model's tokenizer to read the calibration text: "
                         f"{exc}") from None
    found = samples(dc, tokenizer)
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(found), generator=gen)[:config.calibration_nsamples].tolist()
    chosen = [found[i] for i in order]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(chosen), config.calibration_batch_size):
        part = chosen[start:start + config.calibration_batch_size]
        width = max(len(p) for p in part)
        ids = torch.full((len(part), width), pad, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for row, p in enumerate(part):
            ids[row, :len(p)] = p
            mask[row, :len(p)] = 1
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches
