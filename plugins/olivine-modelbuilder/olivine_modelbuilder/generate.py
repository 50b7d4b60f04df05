"""Stream tokens from an onnxruntime-genai model folder and time prefill and decode."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import attrs

from olivine import UsageError


@attrs.frozen
class GenerationResult:
    """What one generation produced and how fast."""

    prompt_tokens: int
    tokens: tuple[int, ...]
    text: str
    prefill_s: float
    decode_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the first one (0 when fewer than two were generated)."""
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 and self.decode_s else 0.0


def check_model_folder(folder: str | Path) -> Path:
    """Refuse a path that is not an onnxruntime-genai model folder."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UsageError(f"model folder {str(folder)!r}: no such folder")
    if not (path / "genai_config.json").is_file():
        raise UsageError(f"{str(folder)!r} is not an onnxruntime-genai model folder (no "
                         "genai_config.json); build one with `olivine auto-opt -m MODEL -o "
                         "FOLDER`")
    return path


def load_model(folder: str | Path, threads: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, genai_config)`` of a folder; ``threads`` > 0 sets intra-op threads."""
    import onnxruntime_genai as og

    path = check_model_folder(folder)
    genai_config = json.loads((path / "genai_config.json").read_text(encoding="utf-8"))
    config = og.Config(str(path))
    if threads > 0:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    return model, og.Tokenizer(model), genai_config


def chat_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """``prompt`` as a user turn in the model's chat template, ready for the assistant's reply."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    try:
        return str(tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True))
    except Exception as exc:  # genai raises RuntimeError subclasses without a stable type
        raise UsageError(f"--chat: the model has no usable chat template ({exc}); run without "
                         "--chat to send the prompt as plain text") from None


def _run_length(genai_config: dict[str, Any], wanted: int) -> int:
    """The max_length to give onnxruntime-genai for ``wanted`` tokens in all.

    With a sliding-window layer (Gemma 2/3, gpt-oss) onnxruntime-genai 0.18 refuses
    a max_length shorter than the window ("KV cache capacity must be at least
    local_window_size"); the run then uses the window and stops at ``wanted`` itself.
    """
    model = genai_config.get("model", {})
    window = (model.get("decoder", {}).get("sliding_window") or {}).get("window_size") or 0
    context = model.get("context_length") or max(wanted, window)
    return min(max(wanted, window), max(context, wanted))


def generate(model: Any, tokenizer: Any, genai_config: dict[str, Any], input_ids: list[int],
             max_length: int, stream: TextIO | None = None, greedy: bool = True,
             adapter: str | Path | None = None) -> GenerationResult:
    """Generate after ``input_ids`` until EOS or ``max_length`` tokens in all (prompt included).

    Text is written to ``stream`` as it is decoded. Prefill is the time to the first
    new token; decode covers the tokens after it. ``adapter`` is an ``.onnx_adapter`` file
    made active for this generation (the model must have LoRA inputs).
    """
    import onnxruntime_genai as og

    if len(input_ids) >= max_length:
        raise UsageError(f"--max_length {max_length} leaves no room: the prompt alone is "
                         f"{len(input_ids)} tokens")
    params = og.GeneratorParams(model)
    options: dict[str, Any] = {"max_length": _run_length(genai_config, max_length)}
    if greedy:
        options["do_sample"] = False
    params.set_search_options(**options)
    generator = og.Generator(model, params)
    adapters = None  # kept alive for as long as the generator runs
    if adapter is not None:
        adapters = og.Adapters(model)
        try:
            adapters.load(str(adapter), "adapter")
            generator.set_active_adapter(adapters, "adapter")
        except RuntimeError as exc:
            raise UsageError(f"--adapter {str(adapter)!r} cannot be used with this model: {exc}"
                             ) from None
    decoder = tokenizer.create_stream()
    tokens: list[int] = []
    pieces: list[str] = []
    start = time.perf_counter()
    first = start
    generator.append_tokens(input_ids)
    while not generator.is_done() and len(input_ids) + len(tokens) < max_length:
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        if not tokens:
            first = time.perf_counter()
        tokens.append(token)
        piece = decoder.decode(token)
        pieces.append(piece)
        if stream is not None:
            stream.write(piece)
            stream.flush()
    end = time.perf_counter()
    del adapters
    return GenerationResult(len(input_ids), tuple(tokens), "".join(pieces), first - start,
                            end - first)


def run_generate(folder: str | Path, prompt: str, *, chat: bool = False, system: str | None = None,
                 max_length: int = 256, threads: int = 0, stream: TextIO | None = None,
                 report: TextIO | None = None, adapter: str | Path | None = None
                 ) -> GenerationResult:
    """Load ``folder``, stream a reply to ``prompt`` and report the timings on ``report``."""
    stream = stream if stream is not None else sys.stdout
    report = report if report is not None else sys.stderr
    model, tokenizer, genai_config = load_model(folder, threads)
    text = chat_prompt(tokenizer, prompt, system) if chat else prompt
    ids = [int(i) for i in tokenizer.encode(text)]
    if not ids:
        raise UsageError("--prompt: the prompt encodes to no tokens")
    result = generate(model, tokenizer, genai_config, ids, max_length, stream, adapter=adapter)
    stream.write("\n")
    stream.flush()
    report.write(f"prefill: {result.prefill_s * 1000:.1f} ms for {result.prompt_tokens} prompt "
                 f"tokens; decode: {len(result.tokens)} tokens, "
                 f"{result.decode_tokens_per_s:.1f} tokens/s\n")
    return result
