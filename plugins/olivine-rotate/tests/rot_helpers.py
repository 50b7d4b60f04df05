"""Helpers of the rotation tests (import as ``rot_helpers``): models, workflows, log-probs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def random_model(kind: str, folder: Path, tokenizer_from: Path) -> Path:
    """An untrained model of ``kind`` (hidden 96 = 12 x 8, head size 48 = 12 x 4) with random norm
    scales and biases, so that folding the norms and rotating them is really tested."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    extra: dict[str, Any] = {"llama": {"attention_bias": True},
                             "phi3": {"original_max_position_embeddings": 256}}.get(kind, {})
    config = AutoConfig.for_model(kind, vocab_size=512, hidden_size=96, intermediate_size=160,
                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                  head_dim=48, max_position_embeddings=256, tie_word_embeddings=True,
                                  bos_token_id=0, eos_token_id=0, pad_token_id=0, **extra)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(folder)
    for item in tokenizer_from.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(item, folder / item.name)
    return folder


def workflow(tmp: Path, model: Path, passes: dict[str, Any], text: Path | None = None,
             **pre: Any) -> dict[str, Any]:
    """A workflow on ``model`` (steps in this process), with a local text data config ``calib``."""
    wf: dict[str, Any] = {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "systems": {"local": {"type": "LocalSystem", "isolation": "never"}},
        "passes": passes,
        "output_dir": str(tmp / "out"),
        "cache_dir": str(tmp / "cache"),
        "log_severity_level": 3,
    }
    if text is not None:
        wf["data_configs"] = [{
            "name": "calib", "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "text", "data_files": [str(text)]},
            "pre_process_data_config": {"text_cols": ["text"], "strategy": "join",
                                        "max_seq_len": 64, **pre}}]
    return wf


def window_ids(tokenizer_dir: Path, text: Path, seq: int = 64, limit: int = 24) -> Any:
    """``text`` as up to ``limit`` windows of ``seq`` tokens ([N, seq])."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids = torch.tensor(tok(text.read_text(encoding="utf-8"))["input_ids"], dtype=torch.long)
    return torch.stack([ids[i:i + seq] for i in range(0, len(ids) - seq, seq)][:limit])


def torch_log_probs(folder: Path, windows: Any) -> Any:
    """Next-token log-probabilities of the HF model in ``folder`` (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=windows).logits.float(), -1)


def ort_log_probs(folder: Path, windows: Any) -> Any:
    """The same from a ModelBuilder output folder (model.onnx, empty KV cache, one thread)."""
    import json

    import numpy as np
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    kv, head, layers = decoder["num_key_value_heads"], decoder["head_size"], decoder["num_hidden_layers"]
    out = []
    for w in windows.numpy():
        feed = {"input_ids": w[None], "attention_mask": np.ones((1, len(w)), np.int64)}
        for i in range(layers):
            for part in ("key", "value"):
                feed[f"past_key_values.{i}.{part}"] = np.zeros((1, kv, 0, head), np.float32)
        logits = torch.from_numpy(sess.run(["logits"], feed)[0]).float()
        out.append(torch.log_softmax(logits[0], -1))
    return torch.stack(out)


def kl(reference: Any, other: Any) -> float:
    """Mean KL(reference || other) per position, x 1e3."""
    return float((reference.exp() * (reference - other)).sum(-1).mean()) * 1e3


def untied_copy(source: Path, folder: Path) -> Path:
    """``source`` with its LM head untied from the embeddings (QuaRot unties them too, and a
    tied table is quantized by ModelBuilder int4 while an untied one stays float, so this is
    the fair baseline to compare QuaRot's int4 output with)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.config.tie_word_embeddings = False
    model.save_pretrained(folder)
    for item in source.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(item, folder / item.name)
    return folder


def outlier_copy(source: Path, folder: Path, channels: tuple[int, ...] = (3, 17, 40),
                 factor: float = 30.0) -> Path:
    """:func:`untied_copy` with outlier channels: each layer's norm scales ``factor`` times
    larger on ``channels`` and the linears reading them that much smaller there (the same
    function, but the activations entering the linears have a few huge channels, as LLMs'
    do). Weight-only RTN then errs on those columns times the huge activations."""
    import torch
    from transformers import AutoModelForCausalLM

    untied_copy(source, folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    index = list(channels)
    with torch.no_grad():
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            for norm, readers in ((layer.input_layernorm, (attn.q_proj, attn.k_proj, attn.v_proj)),
                                  (layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj))):
                norm.weight[index] *= factor
                for linear in readers:
                    linear.weight[:, index] /= factor
    model.save_pretrained(folder)
    return folder
