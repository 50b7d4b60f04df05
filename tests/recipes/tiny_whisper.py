"""A tiny randomly initialized Whisper, saved locally with a locally built tokenizer and feature
extractor (no hub), and the checks of what the model builder makes of it.

``from recipes import tiny_whisper``: the Whisper recipe tests build it, the CLIP one borrows
its byte alphabet.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: Whisper's special tokens, in the order the real vocabularies have them (after the text).
SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
            "<|nocaptions|>", "<|notimestamps|>")
N_MELS = 80
#: 30 s of audio: the builder's encoder takes exactly this many frames (Whisper's window).
FRAMES = 3000


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins of the 256 bytes (byte-level BPE, as Whisper's vocabulary)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_whisper(folder: Path, seed: int = 0) -> Path:
    """Save a 2+2-layer Whisper (d_model 64, 4 heads of 16, 80 mel bins, 1500 positions: the
    builder's fixed 30 s window) with its tokenizer and feature extractor into ``folder``."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "model.safetensors").is_file():
        return folder
    alphabet = byte_alphabet()
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]
    vocab = {c: i for i, c in enumerate(alphabet)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok_dir = Path(tempfile.mkdtemp(prefix="whisper-vocab-"))
    (tok_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges)
                                        + "\n", encoding="utf-8")
    tokenizer = WhisperTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                                 unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                                 eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    shutil.rmtree(tok_dir, ignore_errors=True)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=N_MELS, d_model=64, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_source_positions=FRAMES // 2, max_target_positions=64,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        decoder_start_token_id=ids["<|startoftranscript|>"], suppress_tokens=[],
        begin_suppress_tokens=[eot], init_std=0.3)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config.decoder_start_token_id = ids["<|startoftranscript|>"]
    model.generation_config.forced_decoder_ids = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=N_MELS).save_pretrained(folder)
    return folder


def prompt_ids(folder: Path) -> list[int]:
    """Whisper's English-transcription prompt, as token ids of ``folder``'s tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return [int(tokenizer.convert_tokens_to_ids(t)) for t in
            ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")]


def audio_features(folder: Path, seed: int = 0) -> Any:
    """Log-mel features ``[1, 80, 3000]`` of 2 s of a chirp plus noise (the feature extractor of
    ``folder``, padded to the 30 s window as Whisper is)."""
    import numpy as np
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(seed)
    t = np.arange(32000) / 16000.0
    wave = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.size)
    extractor = WhisperFeatureExtractor.from_pretrained(str(folder))
    feats = extractor(wave.astype(np.float32), sampling_rate=16000, return_tensors="np")
    return np.asarray(feats["input_features"], dtype=np.float32)


def torch_reference(folder: Path, features: Any, ids: list[int]) -> dict[str, Any]:
    """The torch model's encoder output, cross-attention keys/values per decoder layer
    (``[1, heads, 1500, head]``, as the builder's encoder returns them) and the logits of
    ``ids`` (``[len(ids), vocab]``)."""
    import numpy as np
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32).eval()
    cfg = model.config
    heads, head = cfg.decoder_attention_heads, cfg.d_model // cfg.decoder_attention_heads
    with torch.no_grad():
        x = torch.from_numpy(features)
        hidden = model.model.encoder(x).last_hidden_state
        out: dict[str, Any] = {"hidden_states": hidden.numpy()}
        for i, layer in enumerate(model.model.decoder.layers):
            for name, proj in (("key", layer.encoder_attn.k_proj), ("value", layer.encoder_attn.v_proj)):
                kv = proj(hidden).view(1, -1, heads, head).transpose(1, 2)
                out[f"present_{name}_cross_{i}"] = kv.numpy()
        logits = model(input_features=x, decoder_input_ids=torch.tensor([ids])).logits[0]
        out["logits"] = logits.numpy().astype(np.float64)
    return out


def ort_outputs(folder: Path, features: Any, ids: list[int]) -> dict[str, Any]:
    """What ONNX Runtime computes with the built ``encoder.onnx`` and ``decoder.onnx`` of
    ``folder``: the encoder's outputs and the decoder's logits of ``ids`` (one pass, no past)."""
    import numpy as np
    from recipes.recipe_runner import ort_session

    encoder, decoder = ort_session(folder / "encoder.onnx"), ort_session(folder / "decoder.onnx")
    dtype = np.float16 if encoder.get_inputs()[0].type == "tensor(float16)" else np.float32
    names = [o.name for o in encoder.get_outputs()]
    out = dict(zip(names, encoder.run(None, {"audio_features": features.astype(dtype)}), strict=True))
    feeds: dict[str, Any] = {"input_ids": np.asarray([ids], dtype=np.int32)}
    for tensor in decoder.get_inputs():
        if tensor.name.startswith("past_key_self_") or tensor.name.startswith("past_value_self_"):
            heads, head = tensor.shape[1], tensor.shape[3]
            feeds[tensor.name] = np.zeros((1, heads, 0, head), dtype=dtype)
        elif "_cross_" in tensor.name:
            feeds[tensor.name] = out[tensor.name.replace("past_", "present_")]
    logits = decoder.run(["logits"], feeds)[0][0]
    out = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    out["logits"] = np.asarray(logits, dtype=np.float64)
    return out


def genai_steps(folder: Path, features: Any, ids: list[int], new_tokens: int
                ) -> tuple[list[int], list[Any]]:
    """Greedy decoding by onnxruntime-genai's Whisper pipeline (encoder once, then the decoder
    with its self-attention cache) on ``features`` after the prompt ``ids``, on the CPU with
    one thread: the ``new_tokens`` tokens (end of text masked until then) and the logits each
    was chosen from."""
    import json

    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    options = {"session_options": {"intra_op_num_threads": 1, "inter_op_num_threads": 1}}
    config.overlay(json.dumps({"model": {"encoder": options, "decoder": options}}))
    config.clear_providers()
    model = og.Model(config)
    params = og.GeneratorParams(model)
    total = len(ids) + new_tokens
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    generator = og.Generator(model, params)
    inputs = og.NamedTensors()
    inputs["audio_features"] = features.astype(_input_dtype(folder / "encoder.onnx"))
    inputs["input_ids"] = np.asarray([ids], dtype=np.int32)
    generator.set_inputs(inputs)
    tokens: list[int] = []
    logits: list[Any] = []
    while not generator.is_done():
        logits.append(np.asarray(generator.get_logits(), dtype=np.float64).reshape(-1))
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens, logits


def _input_dtype(model_file: Path) -> Any:
    """numpy float16 or float32: the element type of the model's first input."""
    import numpy as np
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    elem = graph.input[0].type.tensor_type.elem_type
    return np.float16 if elem == onnx.TensorProto.FLOAT16 else np.float32


def torch_step_logits(folder: Path, features: Any, ids: list[int], tokens: list[int]) -> list[Any]:
    """The torch model's last-position logits after ``ids + tokens[:k]`` for each k."""
    import numpy as np
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        x = torch.from_numpy(features)
        encoded = model.model.encoder(x)
        for k in range(len(tokens)):
            seq = torch.tensor([ids + tokens[:k]])
            logits = model(encoder_outputs=encoded, decoder_input_ids=seq).logits[0, -1]
            out.append(np.asarray(logits, dtype=np.float64))
    return out
