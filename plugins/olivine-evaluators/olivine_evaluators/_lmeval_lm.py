"""olivine's lm-eval model: one adapter over three scorers (torch, ONNX Runtime, onnxruntime-genai).

The adapter follows lm-eval's ``hf`` backend: the same tokenization (the tokenizer's own
special tokens; none added when the text already starts with BOS), the same left
truncation of context + continuation to ``max_length + 1`` tokens, and the log-likelihood of a
continuation as the sum of the log-softmax of the logits at its positions. Scorers run one
sequence at a time (padding never enters an ONNX model's attention); ``batch_size`` groups
requests. Generation is greedy. Imports lm-eval, numpy and the runtime at module level:
import this module lazily.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lm_eval.api.model import TemplateLM

from olivine import HfModel, OnnxModel, UsageError

DEFAULT_MAX_LENGTH = 2048


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


def _config_max_length(folder: Path) -> int | None:
    """The model's context length from genai_config.json or config.json beside it."""
    try:
        if (folder / "genai_config.json").is_file():
            return int(json.loads((folder / "genai_config.json").read_text())["search"]["max_length"])
        if (folder / "config.json").is_file():
            cfg = json.loads((folder / "config.json").read_text())
            cfg = cfg.get("text_config") or cfg
            for key in ("n_positions", "max_position_embeddings", "n_ctx"):
                if cfg.get(key):
                    return int(cfg[key])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


class TorchScorer:
    """A transformers causal LM run with torch (Olive's ``hf`` model class)."""

    def __init__(self, model: HfModel, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self._torch = torch
        self.device = device
        try:
            self.model = AutoModelForCausalLM.from_pretrained(model.path, **model.load_options())
        except OSError as exc:
            raise UsageError(f"LMEvaluator cannot load {model.path!r}: {exc}") from exc
        try:
            self.model = self.model.eval().to(device)
        except (RuntimeError, AssertionError) as exc:  # e.g. a CPU-only torch asked for cuda
            raise UsageError(f"LMEvaluator device {device!r} is not available to torch here: "
                             f"{exc}") from None
        self.folder = model.path
        self.max_length = _config_max_length(Path(model.path)) if Path(model.path).is_dir() else \
            getattr(self.model.config, "max_position_embeddings", None)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of ``ids``: ``[len, vocab]``."""
        torch = self._torch
        with torch.no_grad():
            out = self.model(torch.tensor([list(ids)], device=self.device)).logits
        return out[0].float().cpu().numpy()

    def generate(self, ids: Sequence[int], max_new: int, eos: set[int],
                 stop: Callable[[list[int]], bool]) -> list[int]:
        """Greedy continuation of ``ids`` (at most ``max_new`` tokens)."""
        torch = self._torch
        out: list[int] = []
        past = None
        feed = torch.tensor([list(ids)], device=self.device)
        with torch.no_grad():
            for _ in range(max_new):
                res = self.model(feed, past_key_values=past, use_cache=True)
                past = res.past_key_values
                token = int(res.logits[0, -1].argmax())
                out.append(token)
                if token in eos or stop(out):
                    break
                feed = torch.tensor([[token]], device=self.device)
        return out


class OrtScorer:
    """A plain ONNX causal LM (an exporter's or the model builder's) on ONNX Runtime, fed the
    whole sequence with empty past inputs (Olive's ``ort`` model class)."""

    def __init__(self, model: OnnxModel, provider: str | None, provider_options: dict[str, Any],
                 default_provider: str | None = None) -> None:
        from olivine_evaluators.runtime import OnnxRunner

        self.runner = OnnxRunner(model, provider=provider, provider_options=provider_options,
                                 default_provider=default_provider)
        if "input_ids" not in self.runner.input_names:
            raise UsageError(f"LMEvaluator: {self.runner.path} takes no input_ids; it is not a "
                             "causal language model")
        self.folder = self.runner.path.parent
        self.max_length = _config_max_length(self.folder)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of ``ids``: ``[len, vocab]``."""
        from olivine_evaluators._quality import lm_feeds

        arr = np.asarray([list(ids)], dtype=np.int64)
        outputs = self.runner.run(lm_feeds(self.runner, {"input_ids": arr,
                                                         "attention_mask": np.ones_like(arr)}))
        logits = outputs.get("logits", next(iter(outputs.values())))
        if logits.shape[1] != len(ids):
            raise UsageError(f"LMEvaluator: {self.runner.path} returns logits for "
                             f"{logits.shape[1]} of {len(ids)} positions; use model_class "
                             "'ortgenai' for this model")
        return np.asarray(logits[0], dtype=np.float32)

    def generate(self, ids: Sequence[int], max_new: int, eos: set[int],
                 stop: Callable[[list[int]], bool]) -> list[int]:
        """Greedy continuation (the whole sequence is run again for each new token)."""
        seq, out = list(ids), []
        for _ in range(max_new):
            token = int(self.logits(seq)[-1].argmax())
            out.append(token)
            seq.append(token)
            if token in eos or stop(out):
                break
        return out


class GenaiScorer:
    """An onnxruntime-genai model folder (the model builder's output; Olive's ``ortgenai``)."""

    NAMES = {"cpu": "cpu", "cuda": "cuda", "dml": "DML", "openvino": "OpenVINO", "qnn": "QNN",
             "vitisai": "VitisAI", "webgpu": "WebGPU", "nvtensorrtrtx": "NvTensorRtRtx"}

    def __init__(self, folder: Path, provider: str | None, provider_options: dict[str, Any]) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise UsageError("LMEvaluator model_class 'ortgenai' needs onnxruntime-genai: "
                             "pip install onnxruntime-genai") from None
        self.og = og
        config = og.Config(str(folder))
        if provider:  # otherwise the providers of genai_config.json
            short = provider.lower().replace("executionprovider", "")
            name = self.NAMES.get(short, short)
            config.clear_providers()
            if short != "cpu":
                config.append_provider(name)
            for key, value in provider_options.items():
                config.set_provider_option(name, str(key), str(value))
        self.model = og.Model(config)
        self.folder = folder
        genai = json.loads((folder / "genai_config.json").read_text())
        self.max_length = int(genai["search"]["max_length"])
        self.share_buffer = bool(genai["search"].get("past_present_share_buffer", False))

    def _generator(self, length: int, greedy: bool = False) -> Any:
        params = self.og.GeneratorParams(self.model)
        options: dict[str, Any] = {"max_length": length, "batch_size": 1}
        if greedy:
            options["do_sample"] = False
        params.set_search_options(**options)
        return self.og.Generator(self.model, params)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position: one prefill when the model returns them all, else one
        token at a time."""
        length = max(len(ids) + 1, self.max_length if self.share_buffer else len(ids) + 1)
        gen = self._generator(length)
        gen.append_tokens(np.asarray([list(ids)], dtype=np.int32))
        full = np.asarray(gen.get_output("logits"))
        if full.ndim == 3 and full.shape[1] == len(ids):
            return full[0].astype(np.float32)
        gen = self._generator(length)
        rows = []
        for token in ids:
            gen.append_tokens(np.asarray([[token]], dtype=np.int32))
            rows.append(np.asarray(gen.get_logits()).reshape(-1))
        return np.stack(rows).astype(np.float32)

    def generate(self, ids: Sequence[int], max_new: int, eos: set[int],
                 stop: Callable[[list[int]], bool]) -> list[int]:
        """Greedy continuation with the generator's own cache."""
        gen = self._generator(len(ids) + max_new, greedy=True)
        gen.append_tokens(np.asarray([list(ids)], dtype=np.int32))
        out: list[int] = []
        while not gen.is_done() and len(out) < max_new:
            gen.generate_next_token()
            token = int(gen.get_next_tokens()[0])
            out.append(token)
            if token in eos or stop(out):
                break
        return out


class OlivineLM(TemplateLM):
    """An lm-eval model over a scorer (loglikelihood, loglikelihood_rolling, generate_until)."""

    def __init__(self, scorer: Any, batch_size: int = 1, max_length: int | None = None,
                 tokenizer_dir: str | Path | None = None) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        self.scorer = scorer
        folder = Path(tokenizer_dir or scorer.folder)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise UsageError(f"LMEvaluator needs the model's tokenizer beside it in {folder}: "
                             f"{exc}") from None
        self.batch_size = int(batch_size)
        self._max_length = max_length
        self._folder = str(folder)

    # -- lm-eval's model interface -------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        """End-of-text token (the tokenizer's EOS)."""
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context stands for: BOS, else EOS."""
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        """The context window: the option, else the model's, else 2048."""
        return int(self._max_length or self.scorer.max_length or DEFAULT_MAX_LENGTH)

    @property
    def tokenizer_name(self) -> str:
        """A name for lm-eval's request cache."""
        return self._folder.replace("\\", "__").replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        """Token ids, with the tokenizer's own special tokens unless told (as lm-eval's hf)."""
        options = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos and string.startswith(bos):
            options["add_special_tokens"] = False
        return list(self.tokenizer.encode(string, **options))

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        """The tokenizer's chat template applied to ``chat_history``."""
        return str(self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt))

    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool]] = []
        for key, context, continuation in requests:
            whole = (list(context) + list(continuation))[-(self.max_length + 1):]
            inp = whole[:-1]
            n = len(continuation)
            logp = _log_softmax(self.scorer.logits(inp)[len(inp) - n:])
            cont = np.asarray(continuation[-n:])
            answer = (float(logp[np.arange(n), cont].sum()), bool((logp.argmax(-1) == cont).all()))
            out.append(answer)
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts, scored in disjoint windows of ``max_length``."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        out = []
        for request in requests:
            (text,) = request.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            total = sum(ll for ll, _ in self._loglikelihood_tokens(
                [(None, ctx, cont) for ctx, cont in windows]))
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return out

    def _stop_check(self, until: list[str]) -> Callable[[list[int]], bool]:
        def stopped(tokens: list[int]) -> bool:
            text = str(self.tokenizer.decode(tokens, skip_special_tokens=True))
            return any(s in text for s in until if s)
        return stopped

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy generation until a stop string, EOS or ``max_gen_toks`` (256) tokens."""
        out = []
        for request in requests:
            context, gen_kwargs = request.args
            gen_kwargs = dict(gen_kwargs or {})
            if gen_kwargs.get("do_sample") and float(gen_kwargs.get("temperature", 1.0)) > 0:
                raise UsageError("LMEvaluator generates greedily; the task asks for sampling "
                                 "(generation_kwargs do_sample true): set do_sample false")
            stops = gen_kwargs.get("until") or [self.tokenizer.decode([self.eot_token_id])]
            until: list[str] = [stops] if isinstance(stops, str) else [str(x) for x in stops]
            max_new = int(gen_kwargs.get("max_gen_toks", 256))
            ids = self.tok_encode(context)[-max(1, self.max_length - max_new):]

            tokens = self.scorer.generate(ids, max_new, {self.eot_token_id},
                                          self._stop_check(until))
            text = str(self.tokenizer.decode(tokens, skip_special_tokens=True))
            for s in until:
                if s:
                    text = text.split(s)[0]
            out.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return out
